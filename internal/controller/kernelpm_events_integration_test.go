//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// With path_manager: kernel the daemon reads the path manager's events
// paced (controller.EventPace): 100 connections opened at once,
// each given its lte subflow by the kernel, all reach the daemon's
// account (its status), in at most one batch of events per pace over the
// time they took rather than about one per event (docs/benchmarks.md,
// "burst").
func TestIntegrationKernelPMPacedEvents(t *testing.T) {
	const n, port = 100, 7300
	b := testbed.UpT(t, testbed.Spec{})
	// The proxy address by wifi; the daemon routes the lte address.
	b.Client.MustRun("ip", "route", "add", "default", "via", b.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf)
	p, err := policy.Parse([]byte(strings.Replace(fmt.Sprintf(basePolicy, "aggregate", ""), "path_manager: userspace", "path_manager: kernel", 1)))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	ctl, _ := runController(t, controller.Config{Policy: p, NetNS: b.Client.Name, Metrics: m,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	waitFor(t, b, "the lte subflow endpoint", 5*time.Second, func() bool {
		out, _ := b.Client.Run("ip", "mptcp", "endpoint", "show")
		return strings.Contains(out, b.LTEAddr.String()+" ") && strings.Contains(out, "dev lte0")
	})

	// The server keeps what it accepts (reading it) until the client
	// closes it at the test's end.
	testbed.ServeT(t, b.Proxy, "tcp4", netip.AddrPortFrom(b.ProxyAddr, port).String(), true, testbed.Sink)

	batches := func() uint64 {
		var out dto.Metric
		if err := m.LoopBusy.WithLabelValues("pm_events").(prometheus.Histogram).Write(&out); err != nil {
			t.Fatal(err)
		}
		return out.GetHistogram().GetSampleCount()
	}
	before, start := batches(), time.Now()
	if err := b.Client.Do(func() error {
		var d net.Dialer
		d.SetMultipathTCP(true)
		for range n {
			c, err := d.Dial("tcp4", netip.AddrPortFrom(b.ProxyAddr, port).String())
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			if _, err := c.Write([]byte{1}); err != nil { // fully established
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	served := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := ctl.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for _, c := range s.Connections {
			for _, sf := range c.Subflows {
				if c.Remote.Port() == port && sf.Interface == testbed.LTEIf {
					k++
					break
				}
			}
		}
		return k
	}
	// Polled finely (not waitFor's 20 ms): the bound below grows with took.
	for end := time.Now().Add(10 * time.Second); served() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("after 10s, %d of %d connections with their lte subflow in the daemon's status", served(), n)
		}
	}
	took, read := time.Since(start), batches()-before
	// Reads in the window at least a pace apart (none is a full batch of
	// 256 events, after which the next read would not wait), and one made
	// before it that the loop counted in it.
	if most := uint64(took/controller.EventPace) + 2; read > most {
		t.Fatalf("%d batches of events in %v: paced every %v, at most %d", read, took, controller.EventPace, most)
	}
	t.Logf("%d connections' events in %d batches over %v", n, read, took.Round(time.Millisecond))
}
