package pathpolicy

import (
	"math"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// shareDelta is b − a per local address.
func shareDelta(a, b []PathShare) []PathShare {
	prev := map[netip.Addr]PathShare{}
	for _, s := range a {
		prev[s.Local] = s
	}
	var out []PathShare
	for _, s := range b {
		p := prev[s.Local]
		out = append(out, PathShare{Local: s.Local, Considered: s.Considered - p.Considered, Free: s.Free - p.Free, Chosen: s.Chosen - p.Chosen, Bytes: s.Bytes - p.Bytes})
	}
	return out
}

// TestIntegrationSendShare: the send-share counters follow the kernel
// scheduler. With two equal links both paths get a real share; once the lte
// link is shaped down to a trickle its share must fall.
func TestIntegrationSendShare(t *testing.T) {
	tp := newTopo(t)
	for _, dev := range []string{"wifi0", "lte0"} {
		tp.cli.MustRun("tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "20mbit", "burst", "16kb", "latency", "30ms")
	}
	p, err := Load(Options{Cgroup: tp.cgroup})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	tp.startServer(t)
	done := tp.startClient(t, 9*time.Second)
	time.Sleep(time.Second)
	s0, err := p.SendShares()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	s1, _ := p.SendShares()
	tp.cli.MustRun("tc", "qdisc", "change", "dev", "lte0", "root", "tbf", "rate", "3mbit", "burst", "16kb", "latency", "30ms")
	time.Sleep(1500 * time.Millisecond)
	s2, _ := p.SendShares()
	time.Sleep(3000 * time.Millisecond)
	s3, _ := p.SendShares()
	<-done
	before, after := shareDelta(s0, s1), shareDelta(s2, s3)
	t.Logf("equal links: %+v", before)
	t.Logf("lte shaped:  %+v", after)
	shB, shA := Shares(before), Shares(after)
	lte := netip.MustParseAddr(lteAddr)
	t.Logf("lte share %.3f → %.3f", shB[lte], shA[lte])
	var nB, nA uint64
	for i := range before {
		nB += before[i].Bytes
	}
	for i := range after {
		nA += after[i].Bytes
	}
	// 20 and then at least 3 Mbit/s for 2.5-3 s.
	if nB < 1e6 || nA < 5e5 {
		t.Fatalf("too few bytes counted (%d, then %d): is the tracepoint attached?", nB, nA)
	}
	if shB[lte] < 0.2 {
		t.Fatalf("with equal links the lte path got %.3f of the sends, want both paths used", shB[lte])
	}
	if shA[lte] > shB[lte]-0.15 {
		t.Fatalf("lte share %.3f → %.3f after shaping lte from 20 to 3 Mbit/s: want it to fall", shB[lte], shA[lte])
	}

	// The Prometheus collector exports the same numbers. The kernel keeps
	// sending what the client left queued after it exited: wait until the
	// counters stop moving.
	var final []PathShare
	for i := 0; ; i++ {
		a, err := p.SendShares()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		b, _ := p.SendShares()
		if reflect.DeepEqual(Shares(a), Shares(b)) {
			final = b
			break
		}
		if i == 30 {
			t.Fatalf("send-share counters still moving 10 s after the client exited")
		}
	}
	want := Shares(final)
	reg := prometheus.NewRegistry()
	if err := reg.Register(p.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "gigapath_path_send_share_ratio" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	for a, w := range want {
		if g, ok := got[a.String()]; !ok || math.Abs(g-w) > 1e-9 {
			t.Errorf("metric gigapath_path_send_share_ratio{local=%q} = %v (present %v), want %v", a, g, ok, w)
		}
	}
}
