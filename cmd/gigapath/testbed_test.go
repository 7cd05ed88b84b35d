package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/internal/testbed"
)

// TestIntegrationCLITestbed: up records a bed that ip(8) sees with the
// right rates, status reports it, a second up is refused, down removes it.
func TestIntegrationCLITestbed(t *testing.T) {
	testbed.NeedRoot(t)
	state := filepath.Join(t.TempDir(), "testbed.json")
	t.Setenv("GIGAPATH_TESTBED_STATE", state)
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
