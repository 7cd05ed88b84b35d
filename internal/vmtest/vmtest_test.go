package vmtest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gigapath/gigapath/internal/kcheck"
)

// A log as .ci/vmtest-guest writes it inside a guest, with boot noise, a
// parallel test, a subtest, a skip and a failure.
const guestLog = `[    0.000000] Linux version 6.12.117+deb13-amd64
@@vmtest kernel 6.12.117+deb13-amd64
@@vmtest check-begin
[
  {"name": "mptcp", "ok": true, "value": "enabled (net.mptcp.enabled=1)", "consequence": "c1"},
  {"name": "bpf_tracing", "ok": false, "value": "refused (operation not permitted, lockdown=integrity)", "consequence": "c2"}
]
@@vmtest check-end exit=0
@@vmtest test-begin ebpf/mptcpify
=== RUN   TestA
=== PAUSE TestA
=== RUN   TestSkipped
    x_test.go:12: first note
    x_test.go:15: needs the kernel function update_socket_protocol
--- SKIP: TestSkipped (0.00s)
=== CONT  TestA
=== RUN   TestA/sub
    --- PASS: TestA/sub (0.01s)
--- PASS: TestA (0.02s)
PASS
@@vmtest test-end ebpf/mptcpify exit=0 seconds=3
@@vmtest test-begin pathmgr
=== RUN   TestBroken
    y_test.go:40: endpoint flags = subflow, want subflow backup
    y_test.go:41: second error
--- FAIL: TestBroken (1.50s)
FAIL
@@vmtest test-end pathmgr exit=1 seconds=7
@@vmtest done exit=1
`

func TestParse(t *testing.T) {
	got, err := Parse(strings.NewReader(guestLog))
	if err != nil {
		t.Fatal(err)
	}
	want := Result{
		Kernel:   "6.12.117+deb13-amd64",
		Complete: true,
		Check: []kcheck.Item{
			{Name: "mptcp", OK: true, Value: "enabled (net.mptcp.enabled=1)", Consequence: "c1"},
			{Name: "bpf_tracing", Value: "refused (operation not permitted, lockdown=integrity)", Consequence: "c2"},
		},
		Packages: []Package{
			{Path: "ebpf/mptcpify", Exit: 0, Seconds: 3, Tests: []Test{
				{Name: "TestSkipped", Status: "SKIP", Reason: "needs the kernel function update_socket_protocol"},
				{Name: "TestA", Status: "PASS"},
			}},
			{Path: "pathmgr", Exit: 1, Seconds: 7, Tests: []Test{
				{Name: "TestBroken", Status: "FAIL", Reason: "endpoint flags = subflow, want subflow backup"},
			}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
	if p, f, s := got.Counts(); p != 1 || f != 1 || s != 1 {
		t.Errorf("Counts = %d/%d/%d, want 1/1/1", p, f, s)
	}
}

func TestParseCrashedGuest(t *testing.T) {
	// The guest died in the middle of a package: no end markers.
	log := "@@vmtest kernel 7.3.4\n@@vmtest check-begin\n[]\n@@vmtest check-end exit=0\n@@vmtest test-begin ebpf/sched\n=== RUN   TestX\n"
	got, err := Parse(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if got.Complete || len(got.Packages) != 1 || got.Packages[0].Exit != -1 {
		t.Errorf("crashed guest parsed as %+v; want incomplete with exit -1", got)
	}
	if _, err := Parse(strings.NewReader("@@vmtest check-begin\n{not json\n@@vmtest check-end\n")); err == nil {
		t.Error("broken check JSON: no error")
	}
}

func TestRender(t *testing.T) {
	vm, err := Parse(strings.NewReader(guestLog))
	if err != nil {
		t.Fatal(err)
	}
	vm.Series, vm.Seconds, vm.Exit = "6.12", 95, 1
	host := Result{Series: "host", Kernel: "6.18.44", Seconds: 30, Complete: true,
		Check: []kcheck.Item{{Name: "mptcp", OK: true, Value: "enabled"}}}
	old := Result{Series: "6.1", Kernel: "6.1.0-56-amd64", Complete: true}
	var b bytes.Buffer
	Render(&b, []Result{vm, old, host})
	out := b.String()
	for _, want := range []string{
		"| feature | host 6.18.44 | 6.1.0-56-amd64 | 6.12.117+deb13-amd64 |", // host first, then by version
		"| `mptcp` | ✓ enabled | not run | ✓ enabled (net.mptcp.enabled=1) |",
		"| `bpf_tracing` | not run | not run | ✗ refused (operation not permitted, lockdown=integrity) |",
		"| passed / failed / skipped | 0 / 0 / 0 | 0 / 0 / 0 | 1 / 1 / 1 |",
		"| wall time (boot + tests) | 30 s (no VM) | 0 s | 95 s |",
		"| `pathmgr` | not run | not run | 0✓ 1✗ 0 skip, 7 s (exit 1) |",
		"| completed | yes | yes | no (exit 1) |",
		"- 6.12.117+deb13-amd64, `ebpf/mptcpify` TestSkipped skip: needs the kernel function update_socket_protocol",
		"- 6.12.117+deb13-amd64, `pathmgr` TestBroken fail: endpoint flags = subflow, want subflow backup",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("render lacks %q:\n%s", want, out)
		}
	}
}

func TestSplice(t *testing.T) {
	doc := "# Kernels\n\nintro\n<!-- vmmatrix:begin -->\nold table\n<!-- vmmatrix:end -->\n\n## After\n"
	got := Splice(doc, "new table\n")
	want := "# Kernels\n\nintro\n<!-- vmmatrix:begin -->\nnew table\n<!-- vmmatrix:end -->\n\n## After\n"
	if got != want {
		t.Errorf("Splice =\n%s\nwant\n%s", got, want)
	}
	if got := Splice("# K", "t\n"); got != "# K\n\n<!-- vmmatrix:begin -->\nt\n<!-- vmmatrix:end -->\n" {
		t.Errorf("Splice without markers = %q", got)
	}
	if got := short("a very long value; with a tail", 60); got != "a very long value" {
		t.Errorf("short = %q", got)
	}
	if got := short("BTF type bpf_struct_ops_mptcp_sched_ops not found: this kernel has none", 60); got != "BTF type bpf_struct_ops_mptcp_sched_ops not found" {
		t.Errorf("short = %q", got)
	}
	if got := short("kernel userspace (active: kernel)", 60); got != "kernel userspace (active: kernel)" {
		t.Errorf("short = %q", got)
	}
	if got := short("absent: ENOENT", 60); got != "absent: ENOENT" {
		t.Errorf("short = %q", got)
	}
	if got := short(strings.Repeat("x", 70), 10); got != "xxxxxxxxx…" {
		t.Errorf("short = %q", got)
	}
}
