package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

func u32p(v uint32) *uint32 { return &v }

// wantUsage checks that err is a usage error (exit 2) whose message
// contains every one of wants.
func wantUsage(t *testing.T, name string, err error, wants ...string) {
	t.Helper()
	var ue *usageError
	if !errors.As(err, &ue) {
		t.Errorf("%s: err = %v, want a usage error", name, err)
		return
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: err = %q, want it to mention %q", name, err, w)
		}
	}
}

func TestParseEndpointAdd(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want endpointAddArgs
	}{
		{strings.Fields("10.0.2.2 dev lte0 id 7 subflow backup"),
			endpointAddArgs{ep: pathmgr.Endpoint{ID: 7, Addr: netip.MustParseAddr("10.0.2.2"), Flags: pathmgr.FlagSubflow | pathmgr.FlagBackup}, dev: "lte0"}},
		{strings.Fields("signal port 10100 fd00::1"),
			endpointAddArgs{ep: pathmgr.Endpoint{Addr: netip.MustParseAddr("fd00::1"), Port: 10100, Flags: pathmgr.FlagSignal}}},
		{strings.Fields("10.0.2.2 id 0 subflow"), // id 0: the kernel picks, as with ip mptcp
			endpointAddArgs{ep: pathmgr.Endpoint{Addr: netip.MustParseAddr("10.0.2.2"), Flags: pathmgr.FlagSubflow}}},
		{strings.Fields("::ffff:10.0.0.1 subflow fullmesh laminar"),
			endpointAddArgs{ep: pathmgr.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Flags: pathmgr.FlagSubflow | pathmgr.FlagFullmesh | pathmgr.FlagLaminar}}},
	} {
		got, err := parseEndpointAdd(tt.args)
		if err != nil || got != tt.want {
			t.Errorf("parseEndpointAdd(%q) = %+v, %v; want %+v", tt.args, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		args  string
		wants []string
	}{
		{"10.0.2.2 foo", []string{`"foo"`, "signal, subflow, backup, fullmesh, laminar"}},
		{"10.0.2.x subflow", []string{`bad address "10.0.2.x"`}},
		{"subflow", []string{"missing the address"}},
		{"10.0.2.2 id 256", []string{`bad id "256"`, "0..255"}},
		{"10.0.2.2 port 70000 signal", []string{`bad port "70000"`, "1..65535"}},
		{"10.0.2.2 dev", []string{`"dev" needs a value`}},
		{"10.0.2.2 implicit", []string{`"implicit"`}},
		{"10.0.2.2 10.0.2.3", []string{`"10.0.2.3"`}},
		{"fe80::1%eth0", []string{"bad address"}},
	} {
		_, err := parseEndpointAdd(strings.Fields(tt.args))
		wantUsage(t, tt.args, err, tt.wants...)
	}
}

func TestParseEndpointDelChange(t *testing.T) {
	d, err := parseEndpointDel(strings.Fields("id 0 10.0.1.1"))
	if err != nil || d.id != 0 || d.addr != netip.MustParseAddr("10.0.1.1") {
		t.Errorf("del id 0 ADDR = %+v, %v", d, err)
	}
	wantUsage(t, "del", func() error { _, err := parseEndpointDel(nil); return err }(), "missing the id")
	wantUsage(t, "del id 0", func() error { _, err := parseEndpointDel([]string{"id", "0"}); return err }(), "id 0", "needs the address")
	wantUsage(t, "del id x", func() error { _, err := parseEndpointDel([]string{"id", "x"}); return err }(), `bad id "x"`, "0..255")

	// The flags named are the flags the endpoint gets (ip mptcp's rule).
	for args, want := range map[string]endpointChangeArgs{
		"id 7 backup nofullmesh":       {id: 7, flags: pathmgr.FlagBackup},
		"id 7 fullmesh":                {id: 7, flags: pathmgr.FlagFullmesh},
		"id 7":                         {id: 7},
		"id 7 nobackup":                {id: 7},
		"id 7 backup backup fullmesh":  {id: 7, flags: pathmgr.FlagBackup | pathmgr.FlagFullmesh},
		"10.0.2.2 fullmesh":            {addr: netip.MustParseAddr("10.0.2.2"), flags: pathmgr.FlagFullmesh},
		"10.0.1.1 port 10100 nobackup": {addr: netip.MustParseAddr("10.0.1.1"), port: 10100},
		"backup port 9 fd00::1 -j":     {addr: netip.MustParseAddr("fd00::1"), port: 9, flags: pathmgr.FlagBackup},
	} {
		c, err := parseEndpointChange(strings.Fields(args))
		if err != nil || c != want {
			t.Errorf("change %s = %+v, %v; want %+v", args, c, err, want)
		}
	}
	for args, wants := range map[string][]string{
		"backup":                   {"say which endpoint"},
		"id 3 signal":              {`"signal"`, "nobackup"},
		"id 3 backup nobackup":     {`"backup" and "nobackup" contradict`},
		"id 3 nofullmesh fullmesh": {`"nofullmesh" and "fullmesh" contradict`},
		"id 0 backup":              {`bad id "0"`, "1..255"},
		"id 3 port 80 backup":      {"port 80 needs the address"},
		"10.0.2.2 port 0":          {`bad port "0"`},
	} {
		_, err := parseEndpointChange(strings.Fields(args))
		wantUsage(t, "change "+args, err, wants...)
	}
}

func TestParseEndpointShow(t *testing.T) {
	r, err := parseEndpointShow(strings.Fields("token 0x81ec9513 -j"))
	if err != nil || !r.hasToken || r.token != 0x81ec9513 || !r.json {
		t.Errorf("show token = %+v, %v", r, err)
	}
	r, err = parseEndpointShow([]string{"id", "7"})
	if err != nil || r.id != 7 || r.hasToken {
		t.Errorf("show id = %+v, %v", r, err)
	}
	wantUsage(t, "show both", func() error { _, err := parseEndpointShow(strings.Fields("id 7 token 5")); return err }(), "not both")
	wantUsage(t, "show dev", func() error { _, err := parseEndpointShow(strings.Fields("dev lte0")); return err }(), `"dev"`, "id N, token T")
}

func TestParseLimitsSet(t *testing.T) {
	u, err := parseLimitsSet(strings.Fields("subflow 5 add_addr_accepted 3"))
	if err != nil || !reflect.DeepEqual(u, pathmgr.LimitsUpdate{Subflows: u32p(5), AddAddrAccepted: u32p(3)}) {
		t.Errorf("both = %+v, %v", u, err)
	}
	u, err = parseLimitsSet(strings.Fields("subflow 0"))
	if err != nil || u.AddAddrAccepted != nil || u.Subflows == nil || *u.Subflows != 0 {
		t.Errorf("subflow 0 = %+v, %v", u, err)
	}
	for args, wants := range map[string][]string{
		"":                     {"nothing to set"},
		"subflow 9":            {"subflow", `"9"`, "0..8"},
		"add_addr_accepted -1": {"add_addr_accepted", "0..8"},
		"subflows":             {`"subflows" needs a value`},
		"signal 3":             {`"signal"`, "subflow N, add_addr_accepted N"},
	} {
		_, err := parseLimitsSet(strings.Fields(args))
		wantUsage(t, "limits set "+args, err, wants...)
	}
}

func TestParseUserspace(t *testing.T) {
	a, err := parseAnnounce(strings.Fields("10.0.2.2 id 2 token 0xcf96a37f dev lte0 port 10100"))
	if err != nil || a.token != 0xcf96a37f || a.local.ID != 2 || a.local.Addr != netip.MustParseAddr("10.0.2.2") || a.local.Port != 10100 || a.dev != "lte0" {
		t.Errorf("announce = %+v, %v", a, err)
	}
	r, err := parseRemove(strings.Fields("token 3482749567 id 0"))
	if err != nil || r.token != 3482749567 || r.local.ID != 0 {
		t.Errorf("remove = %+v, %v", r, err)
	}
	sc, err := parseSubflowCreate(strings.Fields("token 42 local 10.0.2.1 id 2 dev lte0 remote 10.0.1.2 port 443"))
	if err != nil || sc.token != 42 || sc.local.ID != 2 || sc.dev != "lte0" || sc.remote != netip.MustParseAddrPort("10.0.1.2:443") {
		t.Errorf("subflow create = %+v, %v", sc, err)
	}
	sd, err := parseSubflowDestroy(strings.Fields("token 42 local 10.0.2.1 port 40212 remote 10.0.1.2 port 443"))
	if err != nil || sd.local.Port != 40212 || sd.remote != netip.MustParseAddrPort("10.0.1.2:443") {
		t.Errorf("subflow destroy = %+v, %v", sd, err)
	}
	ss, err := parseSubflowSet(strings.Fields("token 42 remote fd00::2 port 443 local fd00::1 nobackup"))
	if err != nil || ss.backup == nil || *ss.backup || ss.local.Addr != netip.MustParseAddr("fd00::1") || ss.remote != netip.MustParseAddrPort("[fd00::2]:443") {
		t.Errorf("subflow set = %+v, %v", ss, err)
	}

	for _, tt := range []struct {
		parse func([]string) (userspaceArgs, error)
		args  string
		wants []string
	}{
		{parseAnnounce, "10.0.2.2 id 2", []string{"missing the connection token"}},
		{parseAnnounce, "10.0.2.2 token 5", []string{"missing the local id"}},
		{parseAnnounce, "id 2 token 5", []string{"missing the address"}},
		{parseAnnounce, "10.0.2.2 id 2 token 81ec9513", []string{`bad token "81ec9513"`, "need 0x", "0x81ec9513"}},
		{parseAnnounce, "10.0.2.2 id 2 token 0x1ffffffff", []string{`bad token "0x1ffffffff"`, "32-bit"}},
		{parseAnnounce, "10.0.2.2 id 2 token 5 backup", []string{`"backup"`, "token T", "dev IF"}},
		{parseRemove, "id 2", []string{"missing the connection token"}},
		{parseRemove, "token 5", []string{"missing the local id"}},
		{parseSubflowCreate, "token 5 local 10.0.2.1 remote 10.0.1.2", []string{"missing the remote port"}},
		{parseSubflowCreate, "token 5 remote 10.0.1.2 port 80", []string{"missing the local address"}},
		{parseSubflowCreate, "token 5 local 10.0.2.1 port 80 remote 10.0.1.2", []string{"local port cannot be chosen"}},
		{parseSubflowCreate, "token 5 local 10.0.2.1 remote fd00::2 port 80", []string{"different address families"}},
		{parseSubflowCreate, "token 5 local 10.0.2.1 remote 10.0.1.2 port 80 via x", []string{`"via"`, "remote ADDR"}},
		{parseSubflowDestroy, "token 5 local 10.0.2.1 remote 10.0.1.2 port 80", []string{"missing the local port"}},
		{parseSubflowSet, "token 5 local 10.0.2.1 remote 10.0.1.2 port 80", []string{"backup or nobackup"}},
		{parseSubflowSet, "local 10.0.2.1 remote 10.0.1.2 port 80 backup", []string{"missing the connection token"}},
	} {
		_, err := tt.parse(strings.Fields(tt.args))
		wantUsage(t, tt.args, err, tt.wants...)
	}
}

func TestFormatEndpoint(t *testing.T) {
	names := map[int]string{3: "lte0"}
	for _, tt := range []struct {
		e    pathmgr.Endpoint
		want string
	}{
		{pathmgr.Endpoint{ID: 7, Addr: netip.MustParseAddr("10.0.2.2"), Flags: pathmgr.FlagSubflow | pathmgr.FlagBackup, IfIndex: 3}, "10.0.2.2 id 7 subflow backup dev lte0"},
		{pathmgr.Endpoint{ID: 9, Addr: netip.MustParseAddr("fd00::1"), Port: 10009, Flags: pathmgr.FlagSignal}, "fd00::1 port 10009 id 9 signal"},
		{pathmgr.Endpoint{ID: 1, Addr: netip.MustParseAddr("10.0.0.1"), IfIndex: 12}, "10.0.0.1 id 1 dev if12"},
	} {
		if got := formatEndpoint(tt.e, names); got != tt.want {
			t.Errorf("formatEndpoint(%+v) = %q, want %q", tt.e, got, tt.want)
		}
	}
}

// pmBinaries holds the binary built for each test (in its t.TempDir()).
var pmBinaries sync.Map

// pmBinary builds the command into the test's temporary directory,
// once per test. GIGAPATH_TEST_BIN names a prebuilt binary instead (for
// running the compiled tests where there is no Go toolchain, e.g. in a
// virtme-ng guest with another kernel).
func pmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GIGAPATH_TEST_BIN"); p != "" {
		return p
	}
	if p, ok := pmBinaries.Load(t); ok {
		return p.(string)
	}
	p := filepath.Join(t.TempDir(), "gigapath")
	if out, err := exec.Command("go", "build", "-o", p, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	pmBinaries.Store(t, p)
	t.Cleanup(func() { pmBinaries.Delete(t) })
	return p
}

// gp runs the built binary and returns its exit code, stdout and stderr.
func gp(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(pmBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("gigapath %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return code, stdout.String(), stderr.String()
}

// gpOK runs the binary and fails the test unless it exits 0.
func gpOK(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := gp(t, args...)
	if code != 0 {
		t.Fatalf("gigapath %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// TestCLIUsageExitCodes: bad input exits 2 before anything reaches the
// kernel, naming the input (no root needed: nothing is dialled).
func TestCLIUsageExitCodes(t *testing.T) {
	for _, tt := range []struct {
		args string
		want string
	}{
		{"endpoint add 10.0.2.2 bogus", `unknown argument "bogus"`},
		{"endpoint add 300.1.1.1 subflow", `bad address "300.1.1.1"`},
		{"endpoint del", "missing the id"},
		{"endpoint show id x", `bad id "x"`},
		{"endpoint flush now", `unexpected argument "now"`},
		{"limits set subflow 100", `subflow "100": want 0..8`},
		{"limits show extra", `unknown argument "extra"`},
		{"announce 10.0.2.2 id 2", "missing the connection token"},
		{"remove id 2 token nope", `bad token "nope"`},
		{"subflow create token 1 local 10.0.0.1 remote 10.0.0.2", "missing the remote port"},
		{"subflow destroy token 1 local 10.0.0.1 port 5 remote 10.0.0.2", "missing the remote port"},
		{"subflow set token 1 local 10.0.0.1 remote 10.0.0.2 port 5 sideways", `unknown argument "sideways"`},
		{"endpoint bogus", `endpoint: unknown subcommand "bogus" (valid: add, del, change, show, flush)`},
		{"subflow", "subflow: want a subcommand: create, destroy, set"},
		{"endpoint show --netns x", "--netns goes before the command"},
		{"announce --bogus", "announce: flag provided but not defined: -bogus"},
		{"demo --proxies 0", "--proxies 0: valid is 1 to 16"},
		{"demo --conns 5", "--conns needs a fleet"},
		{"demo --proxies 3 --down-for 1s", "--down-for is for the single-proxy demo"},
		{"demo --proxies 3 --balance maglev", `--balance "maglev"`},
		{"demo --proxies 3 --conns 500", "--conns 500: valid is 1 to 200"},
	} {
		code, _, errs := gp(t, strings.Fields(tt.args)...)
		if code != 2 || !strings.Contains(errs, tt.want) {
			t.Errorf("gigapath %s: exit %d, stderr %q; want 2 and %q", tt.args, code, errs, tt.want)
		}
	}
	code, out, _ := gp(t, "endpoint", "add", "--help")
	if code != 0 || !strings.Contains(out, "gigapath endpoint add 10.0.2.2 dev lte0 id 7 subflow backup") {
		t.Errorf("endpoint add --help: exit %d, no example in %q", code, out)
	}
}

// endpoint change ADDR finds an endpoint that has a port (the request must
// not be a bare address lookup, which the kernel matches with port 0).
func TestIntegrationCLIEndpointChangeWithPort(t *testing.T) {
	ns := testbed.NetNST(t, "cliepp")
	ns.RunT(t, "ip", "link", "add", "pa0", "type", "veth", "peer", "name", "pa1")
	ns.RunT(t, "ip", "link", "set", "pa0", "up")
	if err := ns.AddAddr("pa0", "10.77.0.1/24"); err != nil {
		t.Fatal(err)
	}
	n := []string{"--netns", ns.Name}
	gpOK(t, append(n, strings.Fields("endpoint add 10.77.0.1 port 8080 id 5 signal")...)...)
	gpOK(t, append(n, strings.Fields("endpoint change 10.77.0.1 backup")...)...)
	show := ns.RunT(t, "ip", "mptcp", "endpoint", "show")
	if want := "10.77.0.1 port 8080 id 5 signal backup"; !strings.Contains(show, want) {
		t.Fatalf("ip mptcp endpoint show = %q, want %q", show, want)
	}
}

// TestIntegrationCLIEndpointMatchesIP runs the same endpoint commands
// through ip mptcp in one fresh namespace and through gigapath in another,
// and after every step wants the same outcome (accepted or refused) and the
// same `ip mptcp endpoint show` in both: id 0 on add lets the kernel pick,
// change sets exactly the backup and fullmesh flags it names.
func TestIntegrationCLIEndpointMatchesIP(t *testing.T) {
	ipNS, gpNS := testbed.NetNST(t, "epip"), testbed.NetNST(t, "epgp")
	for _, step := range []string{
		"add 10.9.0.1 id 0 subflow",
		"add 10.9.0.2 id 5 subflow backup",
		"add 10.9.0.3 id 0",
		"change id 5 fullmesh", // backup goes
		"change id 5 backup",   // fullmesh goes
		"change id 5 backup fullmesh",
		"change id 5 nobackup", // both go
		"change id 5 nofullmesh backup",
		"change id 5",
		"add 10.9.0.4 signal",
		"change id 8 fullmesh", // refused: fullmesh on a signal endpoint
		"change 10.9.0.4 backup",
		"change 10.9.0.2 fullmesh",
		"change id 99 backup",       // refused: no such endpoint
		"add 10.9.0.5 id 5 subflow", // refused: id taken
		"add 10.9.0.5 id 0 subflow fullmesh backup",
	} {
		args := strings.Fields(step)
		_, ipErr := ipNS.Run(append([]string{"ip", "mptcp", "endpoint"}, args...)...)
		code, _, gpErr := gp(t, append([]string{"--netns", gpNS.Name, "endpoint"}, args...)...)
		if (ipErr == nil) != (code == 0) {
			t.Errorf("endpoint %s: ip mptcp: %v; gigapath: exit %d %s", step, ipErr, code, gpErr)
		}
		if code == 2 {
			t.Errorf("endpoint %s: gigapath exit 2 (usage) for input ip mptcp takes: %s", step, gpErr)
		}
		want, got := ipNS.RunT(t, "ip", "mptcp", "endpoint", "show"), gpNS.RunT(t, "ip", "mptcp", "endpoint", "show")
		if got != want {
			t.Fatalf("after endpoint %s:\ngigapath made:\n%s\nip mptcp made:\n%s", step, got, want)
		}
	}
}

// TestIntegrationCLIEndpoints drives endpoint and limits commands through
// the built binary, with ip mptcp as the oracle in both directions.
func TestIntegrationCLIEndpoints(t *testing.T) {
	ns := testbed.NetNST(t, "cliep")
	ns.RunT(t, "ip", "link", "add", "lte0", "type", "veth", "peer", "name", "lte1")
	ns.RunT(t, "ip", "link", "set", "lte0", "up")
	// A signal endpoint with a port makes the kernel listen there: the
	// address must exist.
	if err := ns.AddAddr("lte0", "fd00:1::1/64"); err != nil {
		t.Fatal(err)
	}
	n := []string{"--netns", ns.Name}

	gpOK(t, append(n, strings.Fields("endpoint add 10.0.2.2 dev lte0 id 7 subflow backup")...)...)
	gpOK(t, append(n, strings.Fields("endpoint add fd00:1::1 port 10100 signal")...)...)
	show := ns.RunT(t, "ip", "mptcp", "endpoint", "show")
	for _, want := range []string{"10.0.2.2 id 7 subflow backup dev lte0", "fd00:1::1 port 10100 id 8 signal"} {
		if !strings.Contains(show, want) {
			t.Errorf("ip mptcp endpoint show = %q, want %q", show, want)
		}
	}
	// Plain output matches ip mptcp's line for line.
	if got := gpOK(t, append(n, "endpoint", "show")...); trimLines(got) != trimLines(show) {
		t.Errorf("gigapath endpoint show:\n%s\nip mptcp endpoint show:\n%s", got, show)
	}

	// Added by ip mptcp, read back as JSON.
	ns.RunT(t, "ip", "mptcp", "endpoint", "add", "10.0.2.3", "id", "12", "subflow", "fullmesh")
	var eps []map[string]any
	out := gpOK(t, append(n, "-j", "endpoint", "show")...)
	if err := json.Unmarshal([]byte(out), &eps); err != nil {
		t.Fatalf("endpoint show -j: %v: %s", err, out)
	}
	want := []map[string]any{
		{"id": 7.0, "address": "10.0.2.2", "port": 0.0, "dev": "lte0", "flags": []any{"subflow", "backup"}},
		{"id": 8.0, "address": "fd00:1::1", "port": 10100.0, "dev": "", "flags": []any{"signal"}},
		{"id": 12.0, "address": "10.0.2.3", "port": 0.0, "dev": "", "flags": []any{"subflow", "fullmesh"}},
	}
	if len(eps) != len(want) {
		t.Fatalf("endpoint show -j = %s, want %d endpoints", out, len(want))
	}
	for i, w := range want {
		for k, v := range w {
			if !reflect.DeepEqual(eps[i][k], v) {
				t.Errorf("endpoint %d: %s = %v, want %v (%s)", i, k, eps[i][k], v, out)
			}
		}
	}
	// -j after the keywords, one endpoint.
	out = gpOK(t, append(n, "endpoint", "show", "id", "12", "-j")...)
	if err := json.Unmarshal([]byte(out), &eps); err != nil || len(eps) != 1 || eps[0]["address"] != "10.0.2.3" {
		t.Errorf("endpoint show id 12 -j = %s (%v)", out, err)
	}

	// change sets exactly the flags named, as ip mptcp does (fullmesh goes
	// when only backup is named); TestIntegrationCLIEndpointMatchesIP
	// compares the two step by step.
	gpOK(t, append(n, strings.Fields("endpoint change id 12 backup")...)...)
	gpOK(t, append(n, strings.Fields("endpoint change 10.0.2.2 nobackup")...)...)
	show = ns.RunT(t, "ip", "mptcp", "endpoint", "show")
	lines := strings.Split(trimLines(show), "\n")
	for _, want := range []string{"10.0.2.3 id 12 subflow backup", "10.0.2.2 id 7 subflow dev lte0"} {
		if !slices.Contains(lines, want) {
			t.Errorf("after change: ip mptcp endpoint show = %q, want the line %q", show, want)
		}
	}

	// Kernel refusals exit 1 with the kernel's message; usage errors 2.
	code, _, errs := gp(t, append(n, strings.Fields("endpoint add 10.0.2.9 port 10200 subflow")...)...)
	if code != 1 || !strings.Contains(errs, "when using port") {
		t.Errorf("port without signal: exit %d, %q; want 1 and the kernel's message", code, errs)
	}
	code, _, errs = gp(t, append(n, strings.Fields("endpoint add 10.0.2.9 dev nosuch0 subflow")...)...)
	if code != 2 || !strings.Contains(errs, `dev "nosuch0"`) || !strings.Contains(errs, "lte0") {
		t.Errorf("unknown dev: exit %d, %q; want 2 naming it and the interfaces", code, errs)
	}
	code, _, errs = gp(t, append(n, strings.Fields("endpoint del id 99")...)...)
	if code != 1 || errs == "" {
		t.Errorf("del missing id: exit %d, %q; want 1", code, errs)
	}

	gpOK(t, append(n, strings.Fields("endpoint del id 7")...)...)
	if show := ns.RunT(t, "ip", "mptcp", "endpoint", "show"); strings.Contains(show, "id 7 ") {
		t.Errorf("endpoint 7 still there: %q", show)
	}
	gpOK(t, append(n, "endpoint", "flush")...)
	if show := strings.TrimSpace(ns.RunT(t, "ip", "mptcp", "endpoint", "show")); show != "" {
		t.Errorf("after flush: %q", show)
	}
	if out := gpOK(t, append(n, "-j", "endpoint", "show")...); strings.TrimSpace(out) != "[]" {
		t.Errorf("empty endpoint show -j = %q, want []", out)
	}

	// Limits, both directions, partial set.
	ns.RunT(t, "ip", "mptcp", "limits", "set", "subflow", "3", "add_addr_accepted", "2")
	var l map[string]any
	out = gpOK(t, append(n, "limits", "show", "-j")...)
	if err := json.Unmarshal([]byte(out), &l); err != nil || l["subflows"] != 3.0 || l["add_addr_accepted"] != 2.0 {
		t.Errorf("limits show -j = %s (%v)", out, err)
	}
	gpOK(t, append(n, strings.Fields("limits set subflow 5")...)...)
	if got := ns.RunT(t, "ip", "mptcp", "limits", "show"); !strings.Contains(got, "add_addr_accepted 2 subflows 5") {
		t.Errorf("ip mptcp limits show = %q after limits set subflow 5", got)
	}
	if got, ip := gpOK(t, append(n, "limits", "show")...), ns.RunT(t, "ip", "mptcp", "limits", "show"); trimLines(got) != trimLines(ip) {
		t.Errorf("limits show = %q, ip mptcp = %q", got, ip)
	}
}

func trimLines(s string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		out = append(out, strings.TrimSpace(l))
	}
	return strings.Join(out, "\n")
}

// mptcpExt reads one MPTcpExt counter of a namespace from /proc/net/netstat.
func mptcpExt(t *testing.T, ns *testbed.NetNS, name string) int {
	t.Helper()
	lines := strings.Split(ns.RunT(t, "cat", "/proc/net/netstat"), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "MPTcpExt:") {
			continue
		}
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j, k := range keys {
			if k == name && j < len(vals) {
				n, _ := strconv.Atoi(vals[j])
				return n
			}
		}
	}
	t.Fatalf("no MPTcpExt counter %s in /proc/net/netstat", name)
	return 0
}

// TestIntegrationCLIUserspace: a real MPTCP connection from a namespace
// under the userspace PM to one under the in-kernel PM, over a "wifi" and
// an "lte" veth pair; each userspace command runs through the built binary
// and is checked with ss and the peer's MIB counters.
func TestIntegrationCLIUserspace(t *testing.T) {
	cli := testbed.NetNST(t, "clius")
	srv := testbed.NetNST(t, "srvus")
	testbed.ConnectT(t, cli, srv,
		testbed.VethLink{A: "wifi0", B: "wifi1", AAddr: "10.8.1.1/24", BAddr: "10.8.1.2/24"},
		testbed.VethLink{A: "lte0", B: "lte1", AAddr: "10.8.2.1/24", BAddr: "10.8.2.2/24"})
	srv.RunT(t, "ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "0")
	if _, err := cli.Run("sysctl", "-qw", "net.mptcp.path_manager=userspace"); err != nil {
		if _, err2 := cli.Run("sysctl", "-qw", "net.mptcp.pm_type=1"); err2 != nil {
			t.Skipf("kernel has no userspace path manager (net.mptcp.path_manager / pm_type): %v; %v", err, err2)
		}
	}

	const port = 10500
	testbed.ServeT(t, srv, "tcp4", "0.0.0.0:"+strconv.Itoa(port), true, testbed.Sink)
	conn := testbed.DialMPTCPT(t, cli, "tcp4", "10.8.1.1", "10.8.1.2:"+strconv.Itoa(port))
	testbed.KeepSending(t, conn) // an idle connection never gets fully established

	// The token, as ss prints it (hex), from the MPTCP socket.
	var token string
	testbed.Eventually(t, "an MPTCP connection with a token in ss -Mni", func() (bool, string) {
		out := cli.RunT(t, "ss", "-MniH", "state", "established")
		if i := strings.Index(out, "token:"); i >= 0 {
			token = "0x" + strings.Fields(out[i+len("token:"):])[0]
			return true, out
		}
		return false, out
	})
	n := []string{"--netns", cli.Name}

	// subflow create over lte: ss shows a second TCP subflow from the lte address.
	remote := "10.8.2.2:" + strconv.Itoa(port)
	ssLTE := func() string {
		return cli.RunT(t, "ss", "-tniH", "state", "established", "src", "10.8.2.1", "dst", "10.8.2.2")
	}
	var createErr string
	testbed.Eventually(t, "subflow create accepted once the connection is established", func() (bool, string) {
		code, _, errs := gp(t, append(n, strings.Fields("subflow create token "+token+" local 10.8.2.1 id 2 dev lte0 remote 10.8.2.2 port "+strconv.Itoa(port))...)...)
		createErr = errs
		return code == 0, errs
	})
	_ = createErr
	var localPort string
	testbed.Eventually(t, "the lte subflow in ss", func() (bool, string) {
		out := ssLTE()
		for _, f := range strings.Fields(out) {
			// "10.8.2.1:50545", or "10.8.2.1%lte0:50545" when bound to the device
			if strings.HasPrefix(f, "10.8.2.1:") || strings.HasPrefix(f, "10.8.2.1%") {
				localPort = f[strings.LastIndex(f, ":")+1:]
			}
		}
		return strings.Contains(out, remote) && localPort != "", out
	})

	// subflow set backup: the local subflow's MPTCP flags gain 'b' (ss).
	gpOK(t, append(n, strings.Fields("subflow set token "+token+" local 10.8.2.1 remote 10.8.2.2 port "+strconv.Itoa(port)+" backup")...)...)
	testbed.Eventually(t, "backup flag on the lte subflow (ss -tni flags:...b...)", func() (bool, string) {
		out := ssLTE()
		return ssFlags(out) != "" && strings.Contains(ssFlags(out), "b"), out
	})
	if out := srv.RunT(t, "ss", "-tniH", "state", "established", "src", "10.8.2.2"); !strings.Contains(ssFlags(out), "B") {
		// The peer learns it from MP_PRIO: its subflow shows the remote backup bit.
		testbed.Eventually(t, "remote backup flag on the server's lte subflow", func() (bool, string) {
			out := srv.RunT(t, "ss", "-tniH", "state", "established", "src", "10.8.2.2")
			return strings.Contains(ssFlags(out), "B"), out
		})
	}
	gpOK(t, append(n, strings.Fields("subflow set token "+token+" local 10.8.2.1 remote 10.8.2.2 port "+strconv.Itoa(port)+" nobackup")...)...)
	testbed.Eventually(t, "backup flag cleared", func() (bool, string) {
		out := ssLTE()
		f := ssFlags(out)
		return f != "" && !strings.Contains(f, "b"), out
	})

	// announce / remove: the peer counts ADD_ADDR and RM_ADDR.
	if err := cli.AddAddr("lte0", "10.8.2.3/24"); err != nil {
		t.Fatal(err)
	}
	addBefore, rmBefore := mptcpExt(t, srv, "AddAddr"), mptcpExt(t, srv, "RmAddr")
	gpOK(t, append(n, strings.Fields("announce 10.8.2.3 id 5 token "+token+" dev lte0")...)...)
	testbed.Eventually(t, "ADD_ADDR at the peer (MPTcpExtAddAddr)", func() (bool, string) {
		v := mptcpExt(t, srv, "AddAddr")
		return v > addBefore, "AddAddr=" + strconv.Itoa(v)
	})
	// The connection's own addresses (Linux >= 6.7): the announced one.
	var addrs []map[string]any
	code, out, errs := gp(t, append(n, "-j", "endpoint", "show", "token", token)...)
	switch {
	case code == 1 && strings.Contains(errs, "needs Linux 6.7"):
		t.Logf("endpoint show token: %s", errs)
	case code != 0:
		t.Errorf("endpoint show token: exit %d: %s", code, errs)
	default:
		if err := json.Unmarshal([]byte(out), &addrs); err != nil {
			t.Fatalf("endpoint show token -j: %v: %s", err, out)
		}
		found := false
		for _, a := range addrs {
			if a["id"] == 5.0 && a["address"] == "10.8.2.3" && a["dev"] == "lte0" {
				found = true
			}
		}
		if !found {
			t.Errorf("endpoint show token -j = %s, want id 5 10.8.2.3 dev lte0 (announced)", out)
		}
	}
	gpOK(t, append(n, strings.Fields("remove id 5 token "+token)...)...)
	testbed.Eventually(t, "RM_ADDR at the peer (MPTcpExtRmAddr)", func() (bool, string) {
		v := mptcpExt(t, srv, "RmAddr")
		return v > rmBefore, "RmAddr=" + strconv.Itoa(v)
	})

	// subflow destroy: the lte subflow leaves ss.
	gpOK(t, append(n, strings.Fields("subflow destroy token "+token+" local 10.8.2.1 port "+localPort+" remote 10.8.2.2 port "+strconv.Itoa(port))...)...)
	testbed.Eventually(t, "the lte subflow gone from ss", func() (bool, string) {
		out := ssLTE()
		return !strings.Contains(out, remote), out
	})

	// A wrong token is the kernel's refusal: exit 1, its words.
	code, _, errs = gp(t, append(n, strings.Fields("subflow create token 1 local 10.8.2.1 remote 10.8.2.2 port "+strconv.Itoa(port))...)...)
	if code != 1 || !strings.Contains(errs, "token") {
		t.Errorf("bad token: exit %d, %q; want 1 and the kernel's invalid token message", code, errs)
	}
}

// ssFlags returns the MPTCP subflow flags ("Mmec", "Jjecvb") from ss -tni
// output ("tcp-ulp-mptcp flags:Jjecv ...").
func ssFlags(out string) string {
	i := strings.Index(out, "tcp-ulp-mptcp flags:")
	if i < 0 {
		return ""
	}
	return strings.Fields(out[i+len("tcp-ulp-mptcp flags:"):])[0]
}
