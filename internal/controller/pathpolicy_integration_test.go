//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
)

// ccOf is the congestion control name in an `ss -tni` info line.
func ccOf(info string) string {
	for _, w := range strings.Fields(info) {
		switch w {
		case "reno", "cubic", "bbr", "bbr2", "dctcp", "vegas", "westwood", "htcp", "bic":
			return w
		}
	}
	return ""
}

// `congestion: cubic` on lte0 with the client namespace's default at reno:
// the daemon loads the sockops program on the policy's path_cgroup and keys
// the lte address, so a client born in that cgroup gets cubic on its lte
// subflow and reno on its wifi one, as `ss -tni` shows.
func TestIntegrationInterfaceCongestion(t *testing.T) {
	if err, _ := pathpolicy.Supported(); err != nil {
		t.Skipf("sockops program cannot load here: %v", err)
	}
	const size = 40 << 20
	e := setup(t, size)
	b := e.bed
	if err := b.Client.Sysctl("net.ipv4.tcp_congestion_control", "reno"); err != nil {
		t.Fatal(err)
	}
	cg := testCgroup(t)

	sock := filepath.Join(t.TempDir(), "status.sock")
	pol := strings.Replace(fmt.Sprintf(basePolicy, "aggregate", sock), "    role: lte\n", "    role: lte\n    congestion: cubic\n", 1) +
		"path_cgroup: " + cg + "\n"
	p, err := policy.Parse([]byte(pol))
	if err != nil {
		t.Fatal(err)
	}
	_, stop := runController(t, controller.Config{Policy: p, NetNS: b.Client.Name})

	fd, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	cmd := b.Client.Command(context.Background(), "python3", filepath.Join(e.dir, "client.py"), b.ProxyAddr.String(), fmt.Sprint(e.port))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	var wifiInfo, lteInfo string
	waitFor(t, b, "established wifi and lte subflows", 15*time.Second, func() bool {
		s := subflows(t, b)
		var w, l bool
		wifiInfo, w = hasFrom(s, b.WiFiAddr)
		lteInfo, l = hasFrom(s, b.LTEAddr)
		return w && l
	})
	if cc := ccOf(lteInfo); cc != "cubic" {
		t.Errorf("lte subflow uses %q, want cubic (ss: %s)", cc, lteInfo)
	}
	if cc := ccOf(wifiInfo); cc != "reno" {
		t.Errorf("wifi subflow uses %q, want the namespace default reno (ss: %s)", cc, wifiInfo)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client: %v", err)
	}

	// On exit the daemon detaches the program from the cgroup (bpftool
	// shows it attached while the daemon runs).
	_, lookErr := exec.LookPath("bpftool")
	if lookErr == nil {
		if out, err := exec.Command("bpftool", "cgroup", "show", cg).CombinedOutput(); err != nil || !strings.Contains(string(out), "sock_ops") {
			t.Errorf("bpftool cgroup show %s while the daemon runs: %v: no sock_ops in %s", cg, err, out)
		}
	}
	stop()
	if lookErr != nil {
		t.Log("bpftool not installed: detaching on exit not checked")
	} else if out, err := exec.Command("bpftool", "cgroup", "show", cg).CombinedOutput(); err != nil {
		t.Errorf("bpftool cgroup show %s: %v: %s", cg, err, out)
	} else if strings.Contains(string(out), "sock_ops") {
		t.Errorf("sockops program still attached to %s after the daemon stopped:\n%s", cg, out)
	}
}
