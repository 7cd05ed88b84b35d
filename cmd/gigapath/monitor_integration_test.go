//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// TestIntegrationCLIMonitorConnList runs the built binary against a real
// two-path connection: `monitor -j` prints one JSON object per event with
// the documented keys and exits 0 on SIGTERM; `conn list -j` shows the
// connection under the same token with its two subflows, checked against
// ss -Mtni.
func TestIntegrationCLIMonitorConnList(t *testing.T) {
	cli := testbed.NetNST(t, "climon")
	srv := testbed.NetNST(t, "srvmon")
	testbed.ConnectT(t, cli, srv,
		testbed.VethLink{A: "wifi0", B: "wifi1", AAddr: "10.8.11.1/24", BAddr: "10.8.11.2/24"},
		testbed.VethLink{A: "lte0", B: "lte1", AAddr: "10.8.12.1/24", BAddr: "10.8.12.2/24"})
	for _, ns := range []*testbed.NetNS{cli, srv} {
		ns.RunT(t, "ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	}
	cli.RunT(t, "ip", "mptcp", "endpoint", "add", "10.8.12.1", "dev", "lte0", "id", "3", "subflow", "backup")

	// monitor -j in the client namespace.
	bin := filepath.Join(t.TempDir(), "gigapath")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	gigapath := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			t.Fatalf("gigapath %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	mon := exec.Command(bin, "--netns", cli.Name, "monitor", "-j")
	stdout, err := mon.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Process.Kill(); mon.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// The monitor has joined the events group once it reports a listener
	// this test opens in the client namespace (a fixed sleep missed the
	// created event when the binary started slowly on a loaded machine).
	ready := time.After(10 * time.Second)
	for joined := false; !joined; {
		var probe net.Listener
		if err := cli.Do(func() error {
			var lc net.ListenConfig
			lc.SetMultipathTCP(true)
			var err error
			probe, err = lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		probe.Close()
		for waiting := true; waiting; {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("monitor exited early")
				}
				joined = joined || strings.Contains(l, `"listener_created"`)
			case <-time.After(200 * time.Millisecond):
				waiting = false
			case <-ready:
				t.Fatal("monitor -j printed no listener_created for a new MPTCP listener within 10s")
			}
		}
	}

	const port = 10700
	testbed.ServeT(t, srv, "tcp4", "0.0.0.0:"+strconv.Itoa(port), true, testbed.Sink)
	conn := testbed.DialMPTCPT(t, cli, "tcp4", "10.8.11.1", "10.8.11.2:"+strconv.Itoa(port))
	testbed.KeepSending(t, conn)

	// Events: created ... sub_established, as JSON lines.
	var token float64
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("monitor exited early")
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("monitor line %q is not a JSON object: %v", l, err)
			}
			switch m["type"] {
			case "created":
				token = m["token"].(float64)
				for _, k := range []string{"saddr", "daddr", "sport", "dport", "family", "loc_id", "rem_id"} {
					if _, ok := m[k]; !ok {
						t.Errorf("created %s lacks %q", l, k)
					}
				}
				if m["saddr"] != "10.8.11.1" || m["daddr"] != "10.8.11.2" || m["dport"] != float64(port) {
					t.Errorf("created = %s, want 10.8.11.1 -> 10.8.11.2:%d", l, port)
				}
			case "sub_established":
				if m["token"] != token || m["saddr"] != "10.8.12.1" || m["loc_id"] != 3.0 {
					t.Errorf("sub_established = %s, want token %v from 10.8.12.1 id 3", l, token)
				}
				done = true
			}
		case <-deadline:
			t.Fatal("no sub_established line from monitor within 10s")
		}
	}

	// conn list -j: same token, two subflows, the lte one backup on lte0.
	var conns []struct {
		Token    float64 `json:"token"`
		Local    string  `json:"local"`
		Subflows []struct {
			Local  string `json:"local"`
			Dev    string `json:"dev"`
			LocID  int    `json:"loc_id"`
			Backup bool   `json:"backup"`
			RTTus  *int   `json:"rtt_us"`
		} `json:"subflows"`
	}
	out := gigapath("--netns", cli.Name, "conn", "list", "-j")
	if err := json.Unmarshal([]byte(out), &conns); err != nil {
		t.Fatalf("conn list -j: %v\n%s", err, out)
	}
	if len(conns) != 1 || conns[0].Token != token || len(conns[0].Subflows) != 2 {
		t.Fatalf("conn list -j = %s; want one connection, token %v, two subflows", out, token)
	}
	lte := conns[0].Subflows[1]
	if !strings.HasPrefix(lte.Local, "10.8.12.1:") || lte.Dev != "lte0" || lte.LocID != 3 || !lte.Backup || lte.RTTus == nil {
		t.Errorf("lte subflow = %+v, want 10.8.12.1 dev lte0 id 3 backup with rtt_us", lte)
	}
	ss := cli.RunT(t, "ss", "-Mtni")
	ssLocal := strings.Replace(lte.Local, "10.8.12.1:", "10.8.12.1%lte0:", 1) // ss marks the bound device
	if !strings.Contains(ss, ssLocal) || !strings.Contains(ss, "token:"+strconv.FormatUint(uint64(token), 16)) {
		t.Errorf("ss -Mtni does not show subflow %s and token %x:\n%s", ssLocal, uint32(token), ss)
	}
	if plain := gigapath("--netns", cli.Name, "conn", "list"); !strings.Contains(plain, "dev lte0 locid 3") {
		t.Errorf("conn list = %q, want the lte subflow line", plain)
	}

	// SIGTERM: exit status 0.
	mon.Process.Signal(syscall.SIGTERM)
	for range lines {
	}
	if err := mon.Wait(); err != nil {
		t.Errorf("monitor after SIGTERM: %v, want exit status 0", err)
	}
}
