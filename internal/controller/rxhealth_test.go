package controller

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// healthCtl is a controller with the wifi0 (2) and lte0 (3) interfaces of
// ifaces and no kernel behind it, for applyHealth.
func healthCtl(t *testing.T, p *policy.Policy) (*Controller, *iface, *iface) {
	t.Helper()
	c, err := New(Config{Policy: p, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w, l := ifaces(p)
	c.ifs = map[int]*iface{w.index: w, l.index: l}
	return c, w, l
}

// conns is the health sample of the subflows, as the sock_diag source
// reads them, each of a connection of its own.
func conns(sfs ...pathmgr.SubflowInfo) []subflowSample {
	out := make([]subflowSample, len(sfs))
	for i, sf := range sfs {
		out[i] = sampleOf(i+1, sf)
	}
	return out
}

// rxSub is a downloading subflow: it sends nothing but ACKs (no bytes),
// and has received segs data segments, ooo of them out of order.
func rxSub(local string, ifindex int, segs, ooo uint32, rcvRTT time.Duration) pathmgr.SubflowInfo {
	return pathmgr.SubflowInfo{Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort("10.0.0.9:443"),
		IfIndex: ifindex, RTT: time.Millisecond, DataSegsIn: segs, RcvOOOPack: ooo, RcvRTT: rcvRTT}
}

// priorityCtl is healthCtl under priority steering, both interfaces up
// with an address, wifi the primary as of now.
func priorityCtl(t *testing.T, p *policy.Policy) (c *Controller, w, l *iface, pr *priority, now time.Time) {
	t.Helper()
	c, w, l = healthCtl(t, p)
	w.up, l.up = true, true
	w.addrs, l.addrs = []netip.Addr{netip.MustParseAddr("10.0.2.1")}, []netip.Addr{netip.MustParseAddr("10.0.3.1")}
	now = time.Unix(1000, 0)
	pr = c.strat.(*priority)
	pr.observe(c.available(), now)
	return c, w, l, pr, now
}

// A download-only path: nothing is sent, so the send side gives no
// evidence, and the receive side alone decides. The reorder share is
// delta(rcv_ooopack)/delta(data_segs_in) over the window.
func TestHealthReceiveSideReorder(t *testing.T) {
	p := testPolicy(t, "priority")
	p.Priority.RTT, p.Priority.LossPercent, p.Priority.ReorderPercent, p.Priority.HysteresisPercent, p.Priority.Hold = 200*time.Millisecond, 5, 10, 20, 2*time.Second
	c, w, l := healthCtl(t, p)
	now := time.Unix(1000, 0)
	var segs, ooo uint32 = 5000, 0
	step := func(dSegs, dOOO uint32) {
		segs, ooo = segs+dSegs, ooo+dOOO
		c.applyHealth(conns(rxSub("10.0.2.1:40000", w.index, segs, ooo, 30*time.Millisecond),
			rxSub("10.0.3.1:40001", l.index, 100, 0, 0)), now)
		now = now.Add(time.Second)
	}
	step(0, 0) // the baseline: no evidence
	if w.health.rx || w.health.tx || w.health.unhealthy {
		t.Fatalf("first sample is a baseline only: %+v", w.health)
	}
	step(3000, 30) // 1 %
	if !w.health.rx || w.health.tx || w.health.reorder != 1 || w.health.rxRTT != 30*time.Millisecond || w.health.unhealthy {
		t.Fatalf("1 %% reorder: %+v, want receive-side evidence, reorder 1, rcv_rtt 30ms, healthy", w.health)
	}
	step(2000, 400) // 20 %
	if !w.health.unhealthy || w.health.reorder != 20 {
		t.Fatalf("20 %% reorder above reorder_percent 10: %+v, want unhealthy", w.health)
	}
	step(1000, 90) // 9 %: above 10*(1-20%) = 8: hysteresis holds it
	if !w.health.unhealthy {
		t.Fatal("9 % is above the recovery threshold 8 %: still unhealthy")
	}
	// Now a backup: only a trickle of data, all in order, for Hold.
	step(10, 0)
	step(10, 0)
	if !w.health.unhealthy {
		t.Fatal("healthy again before Hold (2 s) below the recovery threshold passed")
	}
	step(10, 0)
	if w.health.unhealthy {
		t.Fatalf("still unhealthy after Hold in order: %+v", w.health)
	}
	if l.health.rx || l.health.unhealthy {
		t.Errorf("lte received nothing new: %+v, want no evidence", l.health)
	}
}

// rtt_ms applies to the receive-side RTT as well: a download whose
// rcv_rtt exceeds it makes the path unhealthy though the send-side RTT
// (of the ACKs) is small.
func TestHealthReceiveSideRTT(t *testing.T) {
	p := testPolicy(t, "priority")
	p.Priority.RTT, p.Priority.ReorderPercent, p.Priority.Hold = 200*time.Millisecond, 0, time.Second
	c, w, _ := healthCtl(t, p)
	now := time.Unix(1000, 0)
	c.applyHealth(conns(rxSub("10.0.2.1:40000", w.index, 100, 0, 300*time.Millisecond)), now)
	c.applyHealth(conns(rxSub("10.0.2.1:40000", w.index, 100, 0, 300*time.Millisecond)), now.Add(time.Second))
	if w.health.unhealthy || w.health.rx {
		t.Fatalf("no data received in the window: a stale rcv_rtt is no evidence: %+v", w.health)
	}
	c.applyHealth(conns(rxSub("10.0.2.1:40000", w.index, 900, 0, 300*time.Millisecond)), now.Add(2*time.Second))
	if !w.health.unhealthy {
		t.Fatalf("rcv_rtt 300ms above rtt 200ms: %+v, want unhealthy", w.health)
	}
	// The largest rcv_rtt among the subflows that received data counts;
	// a subflow without data in the window does not.
	c2, w2, _ := healthCtl(t, p)
	a, b := "10.0.2.1:40000", "10.0.2.1:40002"
	c2.applyHealth(conns(rxSub(a, w2.index, 100, 0, 50*time.Millisecond), rxSub(b, w2.index, 100, 0, time.Second)), now)
	c2.applyHealth(conns(rxSub(a, w2.index, 500, 0, 50*time.Millisecond), rxSub(b, w2.index, 100, 0, time.Second)), now.Add(time.Second))
	if w2.health.unhealthy || w2.health.rxRTT != 50*time.Millisecond {
		t.Fatalf("rcv_rtt of the idle subflow counted: %+v, want rcv_rtt 50ms, healthy", w2.health)
	}
	// A trickle (a backup subflow's occasional segment): rcv_rtt is the
	// gap between arrivals, not an RTT, and must not count: 2 or 20
	// segments in 1 s at 430 ms is below 10 segments per rcv_rtt; 40 (17
	// per rcv_rtt) is a busy subflow with a real, bloated RTT.
	for _, tc := range []struct {
		segs uint32
		want bool
	}{{2, false}, {20, false}, {40, true}} {
		c3, w3, _ := healthCtl(t, p)
		c3.applyHealth(conns(rxSub(a, w3.index, 100, 0, 430*time.Millisecond)), now)
		c3.applyHealth(conns(rxSub(a, w3.index, 100+tc.segs, 0, 430*time.Millisecond)), now.Add(time.Second))
		if !w3.health.rx || w3.health.unhealthy != tc.want {
			t.Errorf("%d segments in 1 s at rcv_rtt 430ms: %+v, want evidence, unhealthy %v", tc.segs, w3.health, tc.want)
		}
	}
}

// Either direction bad is bad: a clean download does not hide send-side
// loss, and clean sending does not hide a lossy download. A subflow that
// goes away does not make the totals jump backwards.
func TestHealthEitherDirection(t *testing.T) {
	p := testPolicy(t, "priority")
	p.Priority.RTT, p.Priority.LossPercent, p.Priority.ReorderPercent, p.Priority.HysteresisPercent = 0, 5, 10, 0
	for _, tc := range []struct {
		name          string
		sent, retr    uint64
		segs, ooo     uint32
		wantUnhealthy bool
	}{
		{"both clean", 100000, 0, 1000, 0, false},
		{"send loss 10 %, download clean", 100000, 10000, 1000, 0, true},
		{"send clean, download reorder 30 %", 100000, 0, 1000, 300, true},
		{"nothing sent, download reorder 30 %", 0, 0, 1000, 300, true},
		{"send loss 10 %, nothing received", 100000, 10000, 0, 0, true},
		{"nothing either way", 0, 0, 0, 0, false},
	} {
		c, w, _ := healthCtl(t, p)
		base := pathmgr.SubflowInfo{Local: netip.MustParseAddrPort("10.0.2.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.9:443"),
			IfIndex: w.index, BytesAcked: 1000, DataSegsIn: 10}
		c.applyHealth(conns(base), time.Unix(1000, 0))
		next := base
		next.BytesAcked += tc.sent
		next.BytesRetrans += tc.retr
		next.DataSegsIn += tc.segs
		next.RcvOOOPack += tc.ooo
		c.applyHealth(conns(next), time.Unix(1001, 0))
		if w.health.unhealthy != tc.wantUnhealthy {
			t.Errorf("%s: unhealthy %v, want %v (%+v)", tc.name, w.health.unhealthy, tc.wantUnhealthy, w.health)
		}
	}

	// Subflow churn: a subflow with large counters closes and a fresh one
	// opens; neither counts until it has a previous sample.
	c, w, _ := healthCtl(t, p)
	old := rxSub("10.0.2.1:40000", w.index, 90000, 5000, 0)
	c.applyHealth(conns(old), time.Unix(1000, 0))
	c.applyHealth(conns(rxSub("10.0.2.1:40004", w.index, 50, 40, 0)), time.Unix(1001, 0))
	if w.health.rx || w.health.unhealthy {
		t.Errorf("a new subflow's first sample counted: %+v", w.health)
	}
	if len(c.agg.prev) != 1 {
		t.Errorf("the aggregate keeps %d subflows, want 1 (the closed one dropped)", len(c.agg.prev))
	}
}

// handover: reorder_percent counts as a failure like loss; failures
// samples in a row are needed.
func TestHealthReceiveSideHandoverFailures(t *testing.T) {
	p := testPolicy(t, "handover")
	p.Handover.ReorderPercent, p.Handover.Failures = 10, 3
	c, w, _ := healthCtl(t, p)
	var segs, ooo uint32 = 100, 0
	now := time.Unix(1000, 0)
	for i := 0; i < 4; i++ {
		c.applyHealth(conns(rxSub("10.0.2.1:40000", w.index, segs, ooo, 0)), now)
		if i < 3 && w.health.unhealthy {
			t.Fatalf("unhealthy after %d bad samples, want %d", i, p.Handover.Failures)
		}
		segs, ooo, now = segs+1000, ooo+500, now.Add(time.Second)
	}
	if !w.health.unhealthy {
		t.Fatalf("3 samples at 50 %% reorder: %+v, want unhealthy", w.health)
	}
}

// A path that has just become the primary fills its own queue for a
// moment: its reorder share does not count for takeoverGrace after the
// switch (priority.observe), and counts again after it.
func TestHealthTakeoverGrace(t *testing.T) {
	p := testPolicy(t, "priority")
	p.Priority.ReorderPercent, p.Priority.Hold = 30, time.Second
	c, w, l, pr, now := priorityCtl(t, p)
	if pr.primary != w.index || !w.health.tookOver.IsZero() {
		t.Fatalf("first primary %d (tookOver %v): want wifi, no takeover at start", pr.primary, w.health.tookOver)
	}
	// wifi turns bad: lte takes over.
	w.health.unhealthy = true
	pr.observe(c.available(), now)
	if pr.primary != l.index || !l.health.tookOver.Equal(now) {
		t.Fatalf("primary %d, lte tookOver %v: want lte taking over at %v", pr.primary, l.health.tookOver, now)
	}
	var segs, ooo uint32 = 5000, 0
	sample := func(at time.Time, dSegs, dOOO uint32) {
		segs, ooo = segs+dSegs, ooo+dOOO
		c.applyHealth(conns(rxSub("10.0.3.1:40001", l.index, segs, ooo, 0)), at)
	}
	sample(now, 0, 0)                        // baseline
	sample(now.Add(time.Second), 3000, 1050) // 35 %: the takeover spike
	if l.health.unhealthy {
		t.Fatalf("a 35 %% reorder window 1 s after taking over made lte unhealthy: %+v", l.health)
	}
	sample(now.Add(2*time.Second), 3000, 1050) // 35 % again, past the grace
	if !l.health.unhealthy {
		t.Fatalf("35 %% reorder past the takeover grace: %+v, want unhealthy", l.health)
	}
}

// Send-side loss is summed from per-subflow deltas: a subflow that closes
// and one that opens between two samples (with large lifetime counters)
// do not count; only what the surviving subflow moved does.
func TestHealthSendChurn(t *testing.T) {
	p := testPolicy(t, "priority")
	p.Priority.RTT, p.Priority.LossPercent, p.Priority.ReorderPercent, p.Priority.HysteresisPercent = 0, 5, 0, 0
	c, w, _ := healthCtl(t, p)
	sf := func(port uint16, acked, retr uint64) pathmgr.SubflowInfo {
		return pathmgr.SubflowInfo{Local: netip.AddrPortFrom(netip.MustParseAddr("10.0.2.1"), port), Remote: netip.MustParseAddrPort("10.0.0.9:443"),
			IfIndex: w.index, BytesAcked: acked, BytesRetrans: retr}
	}
	c.applyHealth(conns(sf(40000, 1_000_000, 0), sf(40001, 100_000, 10_000)), time.Unix(1000, 0))
	// 40000 closed, 40002 opened with 8 % lifetime loss, 40001 moved
	// 100 kB with none lost.
	c.applyHealth(conns(sf(40001, 200_000, 10_000), sf(40002, 5_000_000, 400_000)), time.Unix(1001, 0))
	if !w.health.tx || w.health.loss != 0 || w.health.unhealthy {
		t.Errorf("health %+v: want send evidence with 0 %% loss", w.health)
	}
	c.applyHealth(conns(sf(40001, 300_000, 20_000), sf(40002, 5_100_000, 400_000)), time.Unix(1002, 0))
	// 110 kB + 100 kB on the wire, 10 kB of it retransmitted: 4.8 %.
	if got := w.health.loss; got < 4.7 || got > 4.8 {
		t.Errorf("loss %.2f %%, want 10000/210000 = 4.76 %%", got)
	}
}

// A peer that finds the primary path stale sends on the backup instead,
// and this side then receives next to nothing on the primary to judge it
// by. That is evidence against the primary only within one connection
// (the sock_diag source says which subflows are one's): a connection with
// a backup subflow alone, downloading while the primary's connections are
// idle, is not; nor is a backup that took a tenth or less of what went
// through the primary, or less than rcvRTTMinSegs; nor one connection
// stuck on the backup while another downloads through the primary; nor
// the moment after a takeover, while the peer has not had the MP_PRIO yet.
func TestHealthPassedOver(t *testing.T) {
	p := testPolicy(t, "priority")
	p.Priority.Hold = time.Second
	c, w, l, pr, now := priorityCtl(t, p)
	// Connection 1: a wifi subflow and an lte one, the one not primary
	// flagged backup (by the peer, to start with). Connection 2: an lte
	// subflow alone, flagged backup too. Connection 3: a wifi subflow
	// alone. The sample holds connection 1 last.
	var w1, l1, l2, w3 uint32 = 5000, 100, 100, 100
	wifiPrimary := true
	sample := func(dw1, dl1, dl2, dw3 uint32) {
		t.Helper()
		w1, l1, l2, w3 = w1+dw1, l1+dl1, l2+dl2, w3+dw3
		wifi := func(port string, segs uint32) pathmgr.SubflowInfo {
			sf := rxSub("10.0.2.1:"+port, w.index, segs, 0, 0)
			sf.State, sf.Backup = tcpEstablished, !wifiPrimary
			return sf
		}
		lte := func(port string, segs uint32) pathmgr.SubflowInfo {
			sf := rxSub("10.0.3.1:"+port, l.index, segs, 0, 0)
			sf.State, sf.BackupRemote = tcpEstablished, wifiPrimary
			return sf
		}
		now = now.Add(time.Second)
		c.applyHealth([]subflowSample{
			sampleOf(2, lte("40002", l2)), sampleOf(3, wifi("40003", w3)),
			sampleOf(1, wifi("40000", w1)), sampleOf(1, lte("40001", l1)),
		}, now)
	}
	sample(0, 0, 0, 0) // the baseline
	for _, s := range []struct {
		what               string
		dw1, dl1, dl2, dw3 uint32
	}{
		{"an lte-only connection downloading, the wifi ones idle", 0, 0, 3000, 0},
		{"the backup 10 times what the primary took, no more", 300, 3000, 0, 0},
		{"the backup below rcvRTTMinSegs", 0, rcvRTTMinSegs - 1, 0, 0},
		{"a connection on the backup, another downloading through wifi", 0, 3000, 0, 3000},
		{"a download on wifi", 3000, 0, 0, 0},
	} {
		sample(s.dw1, s.dl1, s.dl2, s.dw3)
		if w.health.bypassed != 0 || w.health.unhealthy {
			t.Fatalf("%s: wifi %+v, want not bypassed, healthy", s.what, w.health)
		}
	}
	// The peer passed over wifi: a retransmission or two there, the
	// download on lte.
	sample(2, 3000, 0, 0)
	if w.health.bypassed != 1 || !w.health.unhealthy || l.health.bypassed != 0 {
		t.Fatalf("wifi passed over: wifi %+v, lte %+v; want wifi bypassed by 1 connection, unhealthy", w.health, l.health)
	}
	// lte takes over, wifi turns backup; wifi is idle for hold, then the
	// primary again. The peer still sends on lte for a moment: that does
	// not count within takeoverGrace.
	pr.observe(c.available(), now)
	if pr.primary != l.index {
		t.Fatalf("primary %d, want lte", pr.primary)
	}
	wifiPrimary = false
	sample(0, 3000, 0, 0)
	sample(0, 3000, 0, 0)
	pr.observe(c.available(), now)
	if w.health.unhealthy || pr.primary != w.index {
		t.Fatalf("wifi idle for hold: %+v, primary %d; want healthy, the primary again", w.health, pr.primary)
	}
	wifiPrimary = true
	sample(0, 3000, 0, 0) // 1 s after wifi took over
	if w.health.bypassed != 1 || w.health.unhealthy {
		t.Fatalf("1 s after the takeover: wifi %+v, want bypassed but healthy (takeoverGrace)", w.health)
	}
	sample(0, 3000, 0, 0)
	if !w.health.unhealthy {
		t.Fatalf("2 s after the takeover: wifi %+v, want unhealthy", w.health)
	}
}

// The peer's passing a path over: off with reorder_percent 0, and under
// handover (which keeps no backup subflow beside the primary's); a subflow
// not established is no part of its connection, whether it is the
// connection's only one through the path (no evidence) or sits among the
// others in the sample (the evidence stands).
func TestHealthPassedOverEdges(t *testing.T) {
	const synSent = 2
	for _, c := range []struct {
		what, steering string
		reorder        float64
		wifi           []pathmgr.TCPState // the connection's wifi subflows, in the sample's order
		want           int
	}{
		{"reorder_percent 0", "priority", 0, []pathmgr.TCPState{tcpEstablished}, 0},
		{"handover", "handover", 30, []pathmgr.TCPState{tcpEstablished}, 0},
		{"the only wifi subflow in syn-sent", "priority", 30, []pathmgr.TCPState{synSent}, 0},
		{"a wifi join in syn-sent among the subflows", "priority", 30, []pathmgr.TCPState{tcpEstablished, synSent}, 1},
	} {
		p := testPolicy(t, c.steering)
		p.Priority.ReorderPercent = c.reorder
		ctl, w, l := healthCtl(t, p)
		now := time.Unix(1000, 0)
		for _, segs := range []uint32{100, 3100} {
			var list []subflowSample
			for n, st := range c.wifi {
				wifi := rxSub(fmt.Sprintf("10.0.2.1:%d", 40000+n), w.index, 5000, 0, 0)
				wifi.State = st
				list = append(list, sampleOf(1, wifi))
			}
			lte := rxSub("10.0.3.1:40009", l.index, segs, 0, 0)
			lte.State, lte.Backup = tcpEstablished, true
			now = now.Add(time.Second)
			ctl.applyHealth(append(list, sampleOf(1, lte)), now)
		}
		if w.health.bypassed != c.want || w.health.unhealthy != (c.want > 0) {
			t.Errorf("%s: wifi %+v, want bypassed by %d", c.what, w.health, c.want)
		}
	}
}

// The loop tells the sampler the primary under priority, and none with
// the check off or in another mode.
func TestPublishPrimary(t *testing.T) {
	c, w, _, pr, _ := priorityCtl(t, testPolicy(t, "priority"))
	c.sampler = newSampler(nil, time.Now, nil)
	c.publishPrimary()
	if got := c.sampler.primary.Load(); got != int64(w.index) {
		t.Fatalf("priority: primary %d published, want wifi's %d", got, w.index)
	}
	pr.thr.bypass = false // reorder_percent 0
	c.publishPrimary()
	if got := c.sampler.primary.Load(); got != 0 {
		t.Fatalf("the check off: primary %d published, want none", got)
	}
	pr.thr.bypass = true
	c.strat = strategyFor(testPolicy(t, "aggregate"))
	c.publishPrimary()
	if got := c.sampler.primary.Load(); got != 0 {
		t.Fatalf("aggregate: primary %d published, want none", got)
	}
}

// The sampler asks for a dump (whose connections) when the telemetry's
// totals look as if the peer passed over the primary, and not otherwise.
func TestSamplerPassedOver(t *testing.T) {
	s := newSampler(nil, time.Now, nil)
	per := func(wifi, lte uint64) map[int]*ifTotals {
		return map[int]*ifTotals{2: {segs: wifi}, 3: {segs: lte}}
	}
	if s.passedOver(per(0, 3000)) {
		t.Fatal("no primary (not priority steering): want no dump")
	}
	s.primary.Store(2)
	if s.pairNext(healthBatch{err: errors.New("sock_diag: no mptcp_diag"), per: per(0, 3000)}) {
		t.Fatal("after a failed sample: want no dump (a kernel without mptcp_diag fails every one)")
	}
	if !s.pairNext(healthBatch{source: sourceSockDiag, per: per(0, 3000)}) {
		t.Fatal("a dump that confirms the bypass: want the next sample a dump too")
	}
	for i, c := range []struct {
		per  map[int]*ifTotals
		want bool
	}{
		{per(0, 3000), true},
		{per(299, 3000), true},
		{per(300, 3000), false},
		{per(3000, 0), false},
		{per(0, rcvRTTMinSegs-1), false},
		{map[int]*ifTotals{3: {segs: 3000}}, true}, // no subflow through the primary sampled
	} {
		if got := s.passedOver(c.per); got != c.want {
			t.Errorf("case %d, primary wifi: passedOver %v, want %v", i, got, c.want)
		}
	}
}

// A connection with two subflows through the interface passed over (two
// destinations) counts once against it.
func TestCountBypassedOncePerInterface(t *testing.T) {
	per := map[int]*ifTotals{2: {}, 3: {}}
	countBypassed([]connRx{{conn: 1, ifindex: 2, segs: 1}, {conn: 1, ifindex: 2}, {conn: 1, ifindex: 3, backup: true, segs: 500}}, per)
	if per[2].bypassed != 1 || per[3].bypassed != 0 {
		t.Fatalf("bypassed: wifi %d, lte %d; want 1 and 0", per[2].bypassed, per[3].bypassed)
	}
}
