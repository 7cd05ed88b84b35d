//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/demo"
	"github.com/gigapath/gigapath/internal/testbed"
)

// TestIntegrationCLITestbed: up records a bed that ip(8) sees with the
// right rates, status reports it, a second up is refused, down removes it.
func TestIntegrationCLITestbed(t *testing.T) {
	testbed.NeedRoot(t)
	state := filepath.Join(t.TempDir(), "testbed.json")
	t.Setenv("GIGAPATH_TESTBED_STATE", state)
	t.Setenv("GIGAPATH_DEMO_STATE", filepath.Join(t.TempDir(), "demo.json"))
	gpOK(t, "testbed", "up", "--wifi-rate", "30mbit", "--lte-rate", "20mbit", "--kernel-pm")
	b, err := testbed.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	// Safety net if down fails.
	t.Cleanup(func() { b.Close() })
	out, err := exec.Command("ip", "-n", b.Client.Name, "mptcp", "endpoint", "show").CombinedOutput()
	if err != nil || !strings.Contains(string(out), b.LTEAddr.String()) || !strings.Contains(string(out), "subflow") {
		t.Errorf("--kernel-pm: endpoints %s %v", out, err)
	}
	out, err = exec.Command("tc", "-n", b.Proxy.Name, "qdisc", "show", "dev", testbed.ProxyLTEIf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rate 20Mbit") {
		t.Errorf("proxy lte qdisc: %s %v", out, err)
	}

	var st struct {
		Status testbed.Status `json:"status"`
	}
	if err := json.Unmarshal([]byte(gpOK(t, "testbed", "status", "-j")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Status.Links) != 2 || st.Status.Links[0].Rate != "30mbit" || st.Status.Links[1].Rate != "20mbit" || st.Status.Links[0].State != "UP" {
		t.Errorf("status links: %+v", st.Status.Links)
	}
	for _, n := range st.Status.Namespaces {
		if !n.Present {
			t.Errorf("status: %s missing", n.Name)
		}
	}
	if text := gpOK(t, "testbed", "status"); !strings.Contains(text, b.Origin.Name) || !strings.Contains(text, "10.201.0.1") {
		t.Errorf("status text:\n%s", text)
	}
	if code, _, errs := gp(t, "testbed", "up"); code != 1 || !strings.Contains(errs, "already up") {
		t.Errorf("second up: exit %d: %s", code, errs)
	}
	if code, _, errs := gp(t, "testbed", "up", "--lte-rate", "quick"); code != 2 || !strings.Contains(errs, "--lte-rate") {
		t.Errorf("bad rate: exit %d: %s", code, errs)
	}
	gpOK(t, "testbed", "down")
	for _, n := range b.Namespaces() {
		if n.Exists() {
			t.Errorf("%s left after down", n.Name)
		}
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file left: %v", err)
	}
	if code, _, errs := gp(t, "testbed", "status"); code != 1 || !strings.Contains(errs, "no testbed recorded") {
		t.Errorf("status after down: exit %d: %s", code, errs)
	}
}

// TestIntegrationCLITestbedFleet: up --proxies 3 records a fleet whose
// balancer nft(8) sees with a chain per node, status -j describes the
// service address and every node (namespace, addresses, in the balancer),
// bad fleet flags exit 2, and down leaves no namespace of it, no link and
// no nftables rule in the root namespace.
func TestIntegrationCLITestbedFleet(t *testing.T) {
	testbed.NeedRoot(t)
	state := filepath.Join(t.TempDir(), "testbed.json")
	t.Setenv("GIGAPATH_TESTBED_STATE", state)
	t.Setenv("GIGAPATH_DEMO_STATE", filepath.Join(t.TempDir(), "demo.json"))
	for _, bad := range [][]string{{"--proxies", "0"}, {"--proxies", "17"}, {"--balance", "numgen"}, {"--dnat-to-node-addr", "--balance", "jhash"}, {"--proxies", "3", "--balance", "maglev"}} {
		if code, _, errs := gp(t, append([]string{"testbed", "up"}, bad...)...); code != 2 || !strings.Contains(errs, bad[len(bad)-2]) {
			t.Errorf("testbed up %v: exit %d: %s", bad, code, errs)
		}
	}
	root0 := testbed.RootStateT(t)
	gpOK(t, "testbed", "up", "--proxies", "3", "--balance", "numgen", "--kernel-pm")
	b, err := testbed.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	out, err := exec.Command("ip", "netns", "exec", b.Proxy.Name, "nft", "list", "table", "inet", testbed.LBTable).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "numgen inc mod 3 vmap { 0 : goto node1, 1 : goto node2, 2 : goto node3 }") {
		t.Errorf("balancer ruleset: %v\n%s", err, out)
	}
	// --kernel-pm on a fleet: the C flag and a signal endpoint per node.
	for _, n := range b.Nodes {
		ep, _ := exec.Command("ip", "-n", n.Name(), "mptcp", "endpoint", "show").CombinedOutput()
		c, _ := exec.Command("ip", "netns", "exec", n.Name(), "sysctl", "-n", "net.mptcp.allow_join_initial_addr_port").CombinedOutput()
		if !strings.Contains(string(ep), n.Addr.String()+" id 1 signal") || strings.TrimSpace(string(c)) != "0" {
			t.Errorf("node%d kernel PM: endpoints %q, allow_join_initial_addr_port %q", n.Index, ep, c)
		}
	}

	var st struct {
		ServiceAddr string `json:"service_addr"`
		Spec        struct {
			Proxies int    `json:"proxies"`
			Balance string `json:"balance"`
		} `json:"spec"`
		Nodes []struct {
			Index int `json:"index"`
			NetNS struct {
				Name string `json:"name"`
			} `json:"netns"`
			Addr    string `json:"addr"`
			Backend string `json:"backend"`
		} `json:"nodes"`
		Status testbed.Status `json:"status"`
	}
	if err := json.Unmarshal([]byte(gpOK(t, "testbed", "status", "-j")), &st); err != nil {
		t.Fatal(err)
	}
	if st.ServiceAddr != "10.201.0.1" || st.Spec.Proxies != 3 || st.Spec.Balance != "numgen" || len(st.Nodes) != 3 || len(st.Status.Nodes) != 3 {
		t.Errorf("status -j: service %q, spec %+v, %d nodes, %d node states", st.ServiceAddr, st.Spec, len(st.Nodes), len(st.Status.Nodes))
	}
	for i, n := range st.Nodes {
		if n.Index != i+1 || n.NetNS.Name != b.Nodes[i].Name() || n.Addr != fmt.Sprintf("10.201.100.%d", i+1) || n.Backend != fmt.Sprintf("10.201.%d.2", 11+i) {
			t.Errorf("status -j node %d: %+v", i+1, n)
		}
	}
	for _, n := range st.Status.Nodes {
		if !n.Present || !n.InBalancer {
			t.Errorf("status -j: node %+v", n)
		}
	}
	if text := gpOK(t, "testbed", "status"); !strings.Contains(text, "balancer") || !strings.Contains(text, "node3") || !strings.Contains(text, "10.201.100.3") {
		t.Errorf("status text:\n%s", text)
	}

	gpOK(t, "testbed", "down")
	for _, n := range b.Namespaces() {
		if n.Exists() {
			t.Errorf("%s left after down", n.Name)
		}
	}
	if root1 := testbed.RootStateT(t); root1 != root0 {
		t.Errorf("root namespace changed by up+down:\nbefore:\n%s\nafter:\n%s", root0, root1)
	}
}

// TestIntegrationCLIDemoKilled: a demo killed with SIGKILL (no chance to
// clean up) leaves its bed; testbed down finds and removes it.
func TestIntegrationCLIDemoKilled(t *testing.T) {
	testbed.NeedRoot(t)
	dir := t.TempDir()
	demoState := filepath.Join(dir, "demo.json")
	t.Setenv("GIGAPATH_TESTBED_STATE", filepath.Join(dir, "testbed.json"))
	t.Setenv("GIGAPATH_DEMO_STATE", demoState)
	cmd := exec.Command(pmBinary(t), "demo", "--size-mb", "500", "--wifi-rate", "10mbit", "--lte-rate", "10mbit")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Killed once its daemon runs: the daemon's policy and socket are in
	// the demo's work directory.
	work := demo.WorkDir(demoState)
	var b *testbed.Bed
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		b, err = testbed.Load(demoState)
		if err == nil {
			socks, _ := filepath.Glob(filepath.Join(work, "*", "status.sock"))
			if len(socks) > 0 {
				break
			}
			err = fmt.Errorf("no status socket in %s yet", work)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not record its bed in %s and start its daemon: %v", demoState, err)
		}
	}
	t.Cleanup(func() { b.Close() })
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	for _, n := range b.Namespaces() {
		if !n.Exists() {
			t.Fatalf("%s gone before down: the test would prove nothing", n.Name)
		}
	}
	if out := gpOK(t, "testbed", "down"); out != "" {
		t.Logf("%s", out)
	}
	for _, n := range b.Namespaces() {
		if n.Exists() {
			t.Errorf("%s left after down", n.Name)
		}
	}
	if _, err := os.Stat(demoState); !os.IsNotExist(err) {
		t.Errorf("demo state file left: %v", err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("the demo's work directory left: %v", err)
	}
}

// TestIntegrationCLIDemoInterrupted: Ctrl-C (SIGINT) mid-download ends the
// demo with every namespace and every process it started (relays, daemon)
// gone.
func TestIntegrationCLIDemoInterrupted(t *testing.T) {
	testbed.NeedRoot(t)
	dir := t.TempDir()
	demoState := filepath.Join(dir, "demo.json")
	t.Setenv("GIGAPATH_DEMO_STATE", demoState)
	cmd := exec.Command(pmBinary(t), "demo", "--size-mb", "500", "--wifi-rate", "10mbit", "--lte-rate", "10mbit")
	stderr := &testbed.LockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	// Wait for the download (progress lines follow the mode line).
	var b *testbed.Bed
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if b == nil {
			b, _ = testbed.Load(demoState)
		}
		if b != nil && strings.Contains(stderr.String(), "MB") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not start downloading: %s", stderr.String())
		}
	}
	t.Cleanup(func() { b.Close() })
	var pids []int
	for _, n := range b.Namespaces() {
		out, _ := exec.Command("ip", "netns", "pids", n.Name).Output()
		for _, f := range strings.Fields(string(out)) {
			var pid int
			fmt.Sscan(f, &pid)
			pids = append(pids, pid)
		}
	}
	if len(pids) < 2 {
		t.Errorf("want the relays (and daemon) running in the namespaces, found pids %v; stderr:\n%s", pids, stderr.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("interrupted demo exited 0")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the demo did not end within 20s of SIGINT")
	}
	for _, n := range b.Namespaces() {
		if n.Exists() {
			t.Errorf("%s left after SIGINT", n.Name)
		}
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d left after SIGINT", pid)
		}
	}
	if _, err := os.Stat(demoState); !os.IsNotExist(err) {
		t.Errorf("demo state file left: %v", err)
	}
}
