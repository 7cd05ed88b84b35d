//go:build linux

package demo

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

func TestIntegrationDemo(t *testing.T) {
	testbed.NeedRoot(t)
	var progress bytes.Buffer
	s, err := Run(context.Background(), Options{
		WiFiRate: "100mbit", LTERate: "50mbit",
		Size: 30e6, FlapFor: time.Second,
		Progress: &progress,
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
	if !(s.WiFiDownAt > 0 && s.WiFiUpAt > s.WiFiDownAt) {
		t.Errorf("wifi flap not recorded: down %v up %v", s.WiFiDownAt, s.WiFiUpAt)
	}
	// Shaped to 150 Mbit/s in total: faster means the shaping is broken.
	if s.AggregateMbps > 1.5*s.LinkSumMbps {
		t.Errorf("aggregate %.1f Mbit/s above the link sum %.0f", s.AggregateMbps, s.LinkSumMbps)
	}
	// Nothing left behind.
	after, _ := exec.Command("ip", "netns", "list").Output()
	if len(s.Namespaces) != 3 {
		t.Errorf("namespaces %v", s.Namespaces)
	}
	for _, n := range s.Namespaces {
		if bytes.Contains(after, []byte(n)) {
			t.Errorf("namespace %s left behind", n)
		}
	}
}

func TestIntegrationDemoCancelLeavesNothing(t *testing.T) {
	testbed.NeedRoot(t)
	// Cancel as soon as the download has started (what Ctrl-C does).
	ctx, cancel := context.WithCancel(context.Background())
	pr := &cancelOn{substr: "mode:", cancel: cancel}
	_, err := Run(ctx, Options{Size: 200e6, WiFiRate: "20mbit", LTERate: "10mbit", Progress: pr})
	if err == nil {
		t.Fatal("cancelled demo returned no error")
	}
	if !pr.seen {
		t.Fatalf("the demo failed before the download started: %v", err)
	}
	if len(pr.names) != 3 {
		t.Fatalf("the demo did not record its bed in %s: %v", StateFile, pr.names)
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
}

func (c *cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.substr) && !c.seen {
		c.seen = true
		// The demo records its bed before it starts serving.
		if b, err := testbed.Load(StateFile); err == nil {
			for _, n := range b.Namespaces() {
				c.names = append(c.names, n.Name)
			}
		}
		c.cancel()
	}
	return len(p), nil
}
