package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/internal/kcheck"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// checkJSON runs `gigapath [--netns NS] -j check` and decodes it by name,
// failing unless it exits 0 with exactly kcheck.Names in order and every
// item carrying a value and a consequence.
func checkJSON(t *testing.T, netns string) map[string]kcheck.Item {
	t.Helper()
	args := []string{"-j", "check"}
	if netns != "" {
		args = append([]string{"--netns", netns}, args...)
	}
	out := gpOK(t, args...)
	var items []kcheck.Item
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		t.Fatalf("check -j: %v\n%s", err, out)
	}
	// Stable keys: decode generically too and compare the key sets.
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]kcheck.Item{}
	for i, it := range items {
		names = append(names, it.Name)
		byName[it.Name] = it
		var keys []string
		for k := range raw[i] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if want := []string{"consequence", "name", "ok", "value"}; !slices.Equal(keys, want) {
			t.Errorf("item %s has keys %v, want %v", it.Name, keys, want)
		}
		if it.Value == "" || it.Consequence == "" {
			t.Errorf("item %s: empty value or consequence: %+v", it.Name, it)
		}
	}
	if !slices.Equal(names, kcheck.Names) {
		t.Fatalf("check -j names %v, want %v", names, kcheck.Names)
	}
	return byName
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF)")
	}
}

// lockdownOracle reads the lockdown level through its own securityfs
// mount when /sys/kernel/security is not mounted.
func lockdownOracle(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/sys/kernel/security/lockdown")
	if os.IsNotExist(err) {
		dir := t.TempDir()
		if out, err := exec.Command("mount", "-t", "securityfs", "none", dir).CombinedOutput(); err != nil {
			if strings.Contains(string(out), "unknown filesystem type") {
				return "none" // no securityfs: no LSM, so no lockdown
			}
			t.Fatalf("mount securityfs: %v: %s", err, out)
		}
		defer exec.Command("umount", dir).Run()
		b, err = os.ReadFile(filepath.Join(dir, "lockdown"))
		if os.IsNotExist(err) {
			return "none" // no lockdown LSM
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\[(\w+)\]`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("lockdown: unexpected %q", b)
	}
	return m[1]
}

// TestIntegrationCheck compares every item of `gigapath -j check` with an
// independent tool: sysctl files and python3 MPTCP sockets, the lockdown
// file, bpftool's own program loads and BTF dump, genl's view of the
// family, ip mptcp for endpoint flags, findmnt for cgroup2.
func TestIntegrationCheck(t *testing.T) {
	needRoot(t)
	items := checkJSON(t, "")

	// MPTCP: python3 opens an MPTCP socket here, or says why not.
	py := exec.Command("python3", "-c", `import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262).close(); print("ok")
except OSError as e:
    print(e.errno)`)
	out, err := py.Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	if got, want := items["mptcp"].OK, strings.TrimSpace(string(out)) == "ok"; got != want {
		t.Errorf("mptcp ok=%v, python3 MPTCP socket says %q", got, out)
	}
	if b, err := os.ReadFile("/proc/sys/net/mptcp/enabled"); err == nil {
		if want := "net.mptcp.enabled=" + strings.TrimSpace(string(b)); !strings.Contains(items["mptcp"].Value, want) {
			t.Errorf("mptcp value %q does not say %s", items["mptcp"].Value, want)
		}
	}

	// Path managers: the sysctls say whether userspace exists.
	userspace := false
	if b, err := os.ReadFile("/proc/sys/net/mptcp/available_path_managers"); err == nil {
		userspace = slices.Contains(strings.Fields(string(b)), "userspace")
	} else if _, err := os.Stat("/proc/sys/net/mptcp/pm_type"); err == nil {
		userspace = true
	}
	if items["path_managers"].OK != userspace {
		t.Errorf("path_managers %+v, sysctls say userspace=%v", items["path_managers"], userspace)
	}
	// Schedulers: the sysctl's list verbatim.
	if b, err := os.ReadFile("/proc/sys/net/mptcp/available_schedulers"); err == nil {
		if !strings.HasPrefix(items["schedulers"].Value, strings.TrimSpace(string(b))+" (active: ") {
			t.Errorf("schedulers %q, sysctl says %q", items["schedulers"].Value, b)
		}
	} else if items["schedulers"].OK {
		t.Errorf("schedulers ok without net.mptcp.available_schedulers: %+v", items["schedulers"])
	}

	// The family's commands as genl (iproute2) lists them.
	if _, err := exec.LookPath("genl"); err != nil {
		t.Log("genl not installed: family commands not cross-checked")
	} else {
		out, err := exec.Command("genl", "ctrl", "get", "name", pathmgr.GenlFamily).CombinedOutput()
		if err != nil {
			if items["mptcp_pm_family"].OK {
				t.Errorf("mptcp_pm_family ok but genl says: %v: %s", err, out)
			}
		} else {
			cmds := regexp.MustCompile(`#\d+:\s+ID-0x([0-9a-f]+)`).FindAllStringSubmatch(strings.Split(string(out), "multicast")[0], -1)
			var names []string
			for _, m := range cmds {
				n, _ := strconv.ParseUint(m[1], 16, 8)
				names = append(names, pathmgr.CommandName(uint8(n)))
			}
			// genl lists them in the kernel's registration order (6.1 has
			// flush-addrs before get-addr); compare as sets.
			got := strings.Fields(items["pm_commands"].Value)
			slices.Sort(got)
			slices.Sort(names)
			if !slices.Equal(got, names) {
				t.Errorf("pm_commands %v, genl lists %v", got, names)
			}
			if v := regexp.MustCompile(`Version: 0x(\d+)`).FindStringSubmatch(string(out)); v == nil || !strings.Contains(items["mptcp_pm_family"].Value, "version "+v[1]) {
				t.Errorf("mptcp_pm_family %q, genl says %q", items["mptcp_pm_family"].Value, out)
			}
		}
	}

	// Lockdown and program types: the lockdown file and bpftool's probes.
	level := lockdownOracle(t)
	if items["lockdown"].Value != level || items["lockdown"].OK != (level == "none") {
		t.Errorf("lockdown %+v, securityfs says %s", items["lockdown"], level)
	}
	if level != "none" {
		if it := items["bpf_tracing"]; it.OK || !strings.Contains(it.Value, "lockdown="+level) {
			t.Errorf("bpf_tracing %+v under lockdown=%s: want refused naming the lockdown", it, level)
		}
		if it := items["mptcpify"]; it.OK || !strings.Contains(it.Value, "lockdown="+level) {
			t.Errorf("mptcpify %+v under lockdown=%s: want unsupported naming the lockdown", it, level)
		}
	}
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Log("bpftool not installed: program types and BTF not cross-checked")
	} else {
		out, err := exec.Command("bpftool", "feature", "probe", "kernel").Output()
		if err != nil {
			t.Fatalf("bpftool feature probe: %v", err)
		}
		for name, bt := range map[string]string{
			"bpf_tracing": "tracing", "bpf_lsm": "lsm", "bpf_sockops": "sock_ops",
			"bpf_sched_cls": "sched_cls", "bpf_cgroup_sock_addr": "cgroup_sock_addr",
			"bpf_struct_ops": "struct_ops", "bpf_raw_tracepoint": "raw_tracepoint",
		} {
			avail := strings.Contains(string(out), "eBPF program_type "+bt+" is available")
			if items[name].OK != avail {
				t.Errorf("%s %+v, bpftool says available=%v", name, items[name], avail)
			}
		}
		btf, err := exec.Command("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux").Output()
		if err != nil {
			t.Fatalf("bpftool btf dump: %v", err)
		}
		has := bytes.Contains(btf, []byte("STRUCT 'bpf_struct_ops_mptcp_sched_ops'"))
		if items["bpf_mptcp_sched"].OK != has {
			t.Errorf("bpf_mptcp_sched %+v, kernel BTF has the type: %v", items["bpf_mptcp_sched"], has)
		}
	}

	// cgroup v2 mount point, as findmnt sees it.
	if out, err := exec.Command("findmnt", "-n", "-t", "cgroup2", "-o", "TARGET").Output(); err == nil && len(out) > 0 {
		if want := strings.Fields(string(out))[0]; items["cgroup2"].Value != want || !items["cgroup2"].OK {
			t.Errorf("cgroup2 %+v, findmnt says %s", items["cgroup2"], want)
		}
	} else if items["cgroup2"].OK {
		t.Errorf("cgroup2 %+v, findmnt finds none", items["cgroup2"])
	}

	// Endpoint flags: ip mptcp in a fresh namespace shows which flags the
	// kernel keeps (iproute2 knows signal, subflow, backup, fullmesh).
	ns := testbed.NetNST(t, "chk")
	for i, f := range []string{"signal", "subflow", "backup", "fullmesh"} {
		args := []string{"ip", "mptcp", "endpoint", "add", "192.0.2." + strconv.Itoa(i+1), "id", strconv.Itoa(i + 1), f}
		if f == "backup" || f == "fullmesh" {
			args = append(args, "subflow")
		}
		ns.RunT(t, args...)
		show := ns.RunT(t, "ip", "mptcp", "endpoint", "show", "id", strconv.Itoa(i+1))
		kept := slices.Contains(strings.Fields(show), f)
		if got := slices.Contains(strings.Fields(items["endpoint_flags"].Value), f); got != kept {
			t.Errorf("endpoint_flags %q lists %s=%v; ip mptcp shows %q", items["endpoint_flags"].Value, f, got, show)
		}
	}

	// MPTCP_FULL_INFO: python3 asks a loopback MPTCP connection for it.
	// (libc getsockopt with a zeroed buffer: Python's own getsockopt
	// passes uninitialised memory, and the kernel reads the request
	// fields of struct mptcp_full_info from it.)
	py = exec.Command("ip", "netns", "exec", ns.Name, "python3", "-c", `import socket, errno, ctypes
libc = ctypes.CDLL(None, use_errno=True)
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262); l.bind(("127.0.0.1", 0)); l.listen()
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262); c.connect(l.getsockname())
buf = ctypes.create_string_buffer(256); n = ctypes.c_uint32(256)
if libc.getsockopt(c.fileno(), 284, 4, buf, ctypes.byref(n)) == 0:
    print("ok")
else:
    print(errno.errorcode[ctypes.get_errno()])`)
	out, err = py.Output()
	if err != nil {
		t.Fatalf("python3 MPTCP_FULL_INFO: %v", err)
	}
	if got, want := items["mptcp_full_info"].OK, strings.TrimSpace(string(out)) == "ok"; got != want {
		t.Errorf("mptcp_full_info %+v, python3 getsockopt says %s", items["mptcp_full_info"], out)
	}

	// text output: one line per item, the consequence below it.
	text := gpOK(t, "check")
	for _, n := range kcheck.Names {
		if !regexp.MustCompile(`(?m)^` + n + `\s+(yes|no)\s+\S`).MatchString(text) {
			t.Errorf("text output has no line for %s:\n%s", n, text)
		}
	}
}

// TestIntegrationCheckNetNS: --netns reads that namespace's settings, not
// the caller's: a fresh namespace with MPTCP off and the userspace PM on.
func TestIntegrationCheckNetNS(t *testing.T) {
	needRoot(t)
	ns := testbed.NetNST(t, "chk")
	if err := ns.Sysctl("net.mptcp.enabled", "0"); err != nil {
		t.Fatal(err)
	}
	pm := "userspace"
	if err := ns.Sysctl("net.mptcp.path_manager", "userspace"); err != nil {
		if err := ns.Sysctl("net.mptcp.pm_type", "1"); err != nil {
			t.Skipf("kernel without a userspace path manager (neither net.mptcp.path_manager nor net.mptcp.pm_type): %v", err)
		}
	}
	in := checkJSON(t, ns.Name)
	if it := in["mptcp"]; it.OK || it.Value != "disabled (net.mptcp.enabled=0)" {
		t.Errorf("in %s: mptcp %+v, want disabled (net.mptcp.enabled=0)", ns.Name, it)
	}
	if it := in["path_managers"]; !strings.Contains(it.Value, "(active: "+pm+")") {
		t.Errorf("in %s: path_managers %+v, want active %s", ns.Name, it, pm)
	}
	// The caller's namespace is untouched.
	out := checkJSON(t, "")
	if b, err := os.ReadFile("/proc/sys/net/mptcp/enabled"); err == nil && strings.TrimSpace(string(b)) == "1" && !out["mptcp"].OK {
		t.Errorf("own namespace: mptcp %+v though net.mptcp.enabled=1", out["mptcp"])
	}

	code, _, errs := gp(t, "--netns", "gp-no-such-ns-4711", "check")
	if code != 1 || !strings.Contains(errs, `"gp-no-such-ns-4711"`) {
		t.Errorf("check in a missing namespace: exit %d, %q; want 1 naming it", code, errs)
	}
	code, _, errs = gp(t, "check", "extra")
	if code != 2 || !strings.Contains(errs, `unexpected argument "extra"`) {
		t.Errorf("check extra: exit %d, %q; want 2", code, errs)
	}
}

// TestIntegrationCheckUnprivileged: as nobody, check still reports (exit
// 0) and says that root is what is missing, instead of calling the kernel
// features absent.
func TestIntegrationCheckUnprivileged(t *testing.T) {
	needRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed: cannot drop privileges")
	}
	// A copy nobody can execute (t.TempDir is private to root).
	dir, err := os.MkdirTemp("", "gigapath-check-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(pmBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "gigapath")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", bin, "-j", "check")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("check as nobody: %v: %s", err, stderr.String())
	}
	var items []kcheck.Item
	if err := json.Unmarshal(out, &items); err != nil {
		t.Fatal(err)
	}
	byName := map[string]kcheck.Item{}
	for _, it := range items {
		byName[it.Name] = it
	}
	if it := byName["endpoint_flags"]; it.OK || !strings.Contains(it.Value, "needs root") {
		t.Errorf("endpoint_flags as nobody: %+v, want not probed, needs root", it)
	}
	if it := byName["bpf_sockops"]; it.OK || !strings.Contains(it.Value, "operation not permitted") {
		t.Errorf("bpf_sockops as nobody: %+v, want refused", it)
	}
	// What needs no privilege is still probed.
	if it := byName["mptcp_pm_family"]; !it.OK {
		t.Errorf("mptcp_pm_family as nobody: %+v", it)
	}
}
