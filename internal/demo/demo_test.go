//go:build linux

package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// TestIntegrationDemo: the demo with the built-in forwarder (no binary).
func TestIntegrationDemo(t *testing.T) {
	testbed.NeedRoot(t)
	s := runDemo(t, "")
	if !strings.HasPrefix(s.Mode, "forwarder") || !strings.HasPrefix(s.PathManager, "kernel PM") {
		t.Errorf("mode %q, path manager %q; want forwarder and kernel PM", s.Mode, s.PathManager)
	}
}

// TestIntegrationDemoRelay: the demo through the real chain, two `gigapath
// relay` processes (local entry in the client, server in the proxy).
func TestIntegrationDemoRelay(t *testing.T) {
	testbed.NeedRoot(t)
	s := runDemo(t, testBinary(t))
	if !strings.HasPrefix(s.Mode, "relay:") || !strings.HasPrefix(s.PathManager, "daemon") {
		t.Errorf("mode %q, path manager %q; want the relay chain and the daemon", s.Mode, s.PathManager)
	}
}

// testBinary is the gigapath executable for the relays and the daemon:
// $GIGAPATH_TEST_BIN, or one built for the test.
func testBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("GIGAPATH_TEST_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "gigapath")
		if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/gigapath").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v: %s", err, out)
		}
	}
	return bin
}

// TestIntegrationDemoFleet: the fleet demo with 3 nodes, through the
// in-process forwarders with the in-kernel PM (no binary), and through the
// relay processes with the daemons (gigapath run on every node and on the
// client). Every connection has both paths, each on its own node; no node
// refused a join; the nodes' own counts (ss -M) match the balancer's
// (nft); nothing is left.
func TestIntegrationDemoFleet(t *testing.T) {
	testbed.NeedRoot(t)
	for _, c := range []struct {
		name, bin, mode, pm string
	}{{"forwarder", "", "forwarder", fleetPMKernel + " (no gigapath binary)"}, {"relay", testBinary(t), "relay:", fleetPMDaemons}} {
		t.Run(c.name, func(t *testing.T) {
			var progress bytes.Buffer
			s, err := RunFleet(context.Background(), FleetOptions{
				Proxies: 3, Conns: 9, Size: 9e6, Binary: c.bin,
				Progress: &progress, StateFile: filepath.Join(t.TempDir(), "demo.json"),
			})
			t.Logf("progress:\n%s", progress.String())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("summary:\n%s", s)
			if !strings.HasPrefix(s.Mode, c.mode) || s.PathManager != c.pm {
				t.Errorf("mode %q, path manager %q", s.Mode, s.PathManager)
			}
			if !s.Verified || s.Bytes != 9e6 || s.BothPaths != 9 || len(s.Connections) != 9 {
				t.Errorf("verified %v, %d bytes, %d of %d connections with both paths", s.Verified, s.Bytes, s.BothPaths, len(s.Connections))
			}
			held := 0
			for _, n := range s.Nodes {
				if uint64(n.Conns) != n.Flows || n.Joins != n.Flows || n.NoToken != 0 {
					t.Errorf("node%d: %d connections, %d balanced flows, %d joins, %d no-token", n.Index, n.Conns, n.Flows, n.Joins, n.NoToken)
				}
				held += n.Conns
			}
			if held != 9 {
				t.Errorf("the nodes hold %d connections, want 9", held)
			}
			for _, conn := range s.Connections {
				if conn.Node == 0 || len(conn.Subflows) != 2 {
					t.Errorf("connection %+v: want a subflow to the service address and one to its node", conn)
				}
			}
			if s.LTEBytes < 1e6 {
				t.Errorf("lte carried %d bytes of 9 MB", s.LTEBytes)
			}
			noneLeft(t, s.Namespaces, 6)
		})
	}
}

func runDemo(t *testing.T, bin string) *Summary {
	t.Helper()
	var progress bytes.Buffer
	s, err := Run(context.Background(), Options{
		WiFiRate: "100mbit", LTERate: "50mbit",
		Size: 30e6, FlapFor: time.Second,
		Progress: &progress, Binary: bin,
		StateFile: filepath.Join(t.TempDir(), "demo.json"),
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("summary:\n%s", s)
	if !s.Verified || s.Bytes != 30e6 {
		t.Errorf("not verified: %+v", s)
	}
	// Both paths carried a real share of the file (interface counters are
	// an oracle independent of MPTCP's own view).
	if s.WiFiBytes < 3e6 || s.LTEBytes < 3e6 {
		t.Errorf("per-path bytes wifi %d lte %d: a path carried almost nothing", s.WiFiBytes, s.LTEBytes)
	}
	if !s.MPTCP {
		t.Error("the download did not use MPTCP")
	}
	if s.MaxSubflows < 2 {
		t.Errorf("max subflows %d, want 2", s.MaxSubflows)
	}
	// Wifi carried data again after it came back (a new subflow joined the
	// running connection); 15 MB were left when it went down.
	if s.WiFiBytesAfterUp < 500e3 {
		t.Errorf("wifi carried %d bytes after it came back: no new wifi subflow", s.WiFiBytesAfterUp)
	}
	if !(s.WiFiDownAt > 0 && s.WiFiUpAt > s.WiFiDownAt) {
		t.Errorf("wifi flap not recorded: down %v up %v", s.WiFiDownAt, s.WiFiUpAt)
	}
	// Shaped to 150 Mbit/s in total: faster means the shaping is broken.
	if s.AggregateMbps > 1.5*s.LinkSumMbps {
		t.Errorf("aggregate %.1f Mbit/s above the link sum %.0f", s.AggregateMbps, s.LinkSumMbps)
	}
	noneLeft(t, s.Namespaces, 3)
	return s
}

// noneLeft checks that a finished demo used want namespaces and that none
// of them is left.
func noneLeft(t *testing.T, names []string, want int) {
	t.Helper()
	if len(names) != want {
		t.Errorf("namespaces %v, want %d", names, want)
	}
	after, _ := exec.Command("ip", "netns", "list").Output()
	for _, n := range names {
		if bytes.Contains(after, []byte(n)) {
			t.Errorf("namespace %s left behind", n)
		}
	}
}

func TestIntegrationDemoCancelLeavesNothing(t *testing.T) {
	testbed.NeedRoot(t)
	// Cancel as soon as the download has started (what Ctrl-C does).
	ctx, cancel := context.WithCancel(context.Background())
	state := filepath.Join(t.TempDir(), "demo.json")
	pr := &cancelOn{substr: "mode:", cancel: cancel, state: state}
	_, err := Run(ctx, Options{Size: 200e6, WiFiRate: "20mbit", LTERate: "10mbit", Progress: pr, StateFile: state})
	if err == nil {
		t.Fatal("cancelled demo returned no error")
	}
	if !pr.seen {
		t.Fatalf("the demo failed before the download started: %v", err)
	}
	if len(pr.names) != 3 {
		t.Fatalf("the demo did not record its bed in %s: %v", state, pr.names)
	}
	after, _ := exec.Command("ip", "netns", "list").Output()
	for _, n := range pr.names {
		if bytes.Contains(after, []byte(n)) {
			t.Errorf("namespace %s left behind after cancel", n)
		}
	}
}

// cancelOn cancels when a progress line contains substr.
type cancelOn struct {
	substr string
	cancel func()
	seen   bool
	names  []string
	state  string
}

func (c *cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.substr) && !c.seen {
		c.seen = true
		// The demo records its bed before it starts serving.
		if b, err := testbed.Load(c.state); err == nil {
			for _, n := range b.Namespaces() {
				c.names = append(c.names, n.Name)
			}
		}
		c.cancel()
	}
	return len(p), nil
}

func TestLines(t *testing.T) {
	for in, want := range map[string]int{"": 0, "\n": 0, "a\n": 1, "a\nb\n": 2, "a\n\nb": 2, "  \n x": 1} {
		if got := lines(in); got != want {
			t.Errorf("lines(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestOptionsRejected(t *testing.T) {
	for _, o := range []Options{
		{WiFiRate: "fast"},
		{LTERate: "1"},
		{Size: -1},
		{FlapAt: 1.5},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v) gave no error", o)
		}
	}
}
