package metrics

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// The endpoint serves every metric under its exported name.
func TestServe(t *testing.T) {
	m := New()
	m.Events.WithLabelValues("established").Inc()
	m.Commands.WithLabelValues("subflow_create").Inc()
	m.CommandErrors.WithLabelValues("subflow_create").Inc()
	m.Subflows.WithLabelValues("lte0", "lte").Set(1)
	m.Resyncs.WithLabelValues("start").Inc()
	m.NetEvents.WithLabelValues("link_up").Inc()
	m.ReactionLatency.Observe(0.001)
	m.ReconcileSeconds.Observe(0.001)
	m.InterfaceUp.WithLabelValues("lte0", "lte").Set(1)
	m.InterfaceHealthy.WithLabelValues("lte0", "lte").Set(0)
	m.SubflowFailures.WithLabelValues("lte0").Inc()
	m.HealthSampleSeconds.WithLabelValues("telemetry").Observe(0.001)
	m.CreateSeconds.WithLabelValues("request").Observe(0.0001)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := m.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, name := range []string{Connections, Subflows, Events, Commands, CommandErrors, ReactionLatency, SteeringSwitches, Resyncs, NetEvents, ReconcileSeconds, InterfaceUp, InterfaceHealthy, SubflowFailures, HealthSample, JoinListeners, JoinPortRefused, LoopWait, LoopBusy, LoopCPU, LoopPreempted, CreateSeconds} {
		if !strings.Contains(string(b), "\n"+name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if !strings.Contains(string(b), `gigapath_subflows{interface="lte0",role="lte"} 1`) {
		t.Errorf("/metrics lacks the lte subflow gauge")
	}
	if _, err := m.Listen("not-an-address"); err == nil || !strings.Contains(err.Error(), "not-an-address") {
		t.Errorf("bad listen address: %v", err)
	}
}
