package controller

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/gigapath/gigapath/pathmgr"
)

// countingInventory lists one connection with one subflow of rtt and
// counts the listings.
type countingInventory struct {
	rtt   time.Duration
	calls int
}

func (i *countingInventory) Connections(pathmgr.ListOptions) ([]pathmgr.Connection, error) {
	i.calls++
	return listWithRTT(i.rtt), nil
}

func listWithRTT(rtt time.Duration) []pathmgr.Connection {
	l, r := netip.MustParseAddrPort("10.0.0.1:1000"), netip.MustParseAddrPort("10.0.0.2:80")
	return []pathmgr.Connection{{Token: 1, Local: l, Remote: r, State: 1,
		Subflows: []pathmgr.SubflowInfo{{Local: l, Remote: r, State: 1, RTT: rtt}}}}
}

// A health sample that needs sock_diag takes the resync's dump when it is
// at most an interval old, and dumps itself otherwise; nothing is kept
// while sampling is off.
func TestSamplerTakesTheResyncDump(t *testing.T) {
	inv := &countingInventory{rtt: time.Millisecond}
	s := newSampler(inv, time.Now, func(string, time.Duration) {})
	at := time.Unix(5000, 0)

	s.share(listWithRTT(7*time.Millisecond), at, time.Now())
	if s.shared.Load() != nil {
		t.Fatal("a dump was kept while sampling is off")
	}

	s.setEvery(time.Second)
	s.share(listWithRTT(7*time.Millisecond), at, time.Now())
	b := s.fromDiag(nil)
	if !b.shared || inv.calls != 0 || len(b.subs) != 1 || b.subs[0].rtt != 7*time.Millisecond || !b.at.Equal(at) {
		t.Fatalf("sample with a fresh resync dump: shared=%v, %d own dumps, subs %+v at %v; want the resync's (rtt 7ms, at %v)",
			b.shared, inv.calls, b.subs, b.at, at)
	}
	// Taken once: the next sample dumps.
	if b = s.fromDiag(nil); b.shared || inv.calls != 1 || b.subs[0].rtt != time.Millisecond {
		t.Fatalf("second sample: shared=%v, %d own dumps, subs %+v; want its own dump", b.shared, inv.calls, b.subs)
	}

	s.share(listWithRTT(7*time.Millisecond), at, time.Now().Add(-2*time.Second))
	if b = s.fromDiag(nil); b.shared || inv.calls != 2 {
		t.Fatalf("sample with a resync dump older than the interval: shared=%v, %d own dumps; want its own", b.shared, inv.calls)
	}

	// A dump read before the previous sample is not taken either.
	old := time.Now()
	s.fromDiag(nil)
	s.share(listWithRTT(7*time.Millisecond), at, old)
	if b = s.fromDiag(nil); b.shared || inv.calls != 4 {
		t.Fatalf("sample with a resync dump read before the previous sample: shared=%v, %d own dumps; want its own", b.shared, inv.calls)
	}

	s.share(listWithRTT(7*time.Millisecond), at, time.Now())
	s.setEvery(0)
	if s.shared.Load() != nil {
		t.Fatal("a dump is kept after sampling stopped")
	}
}

// While the loop sweeps a resync the sampler's next read waits for the
// sweep to end (the loop marks it at the sweep's start and end), for at
// most the limit it is given.
func TestSamplerHoldsForASweep(t *testing.T) {
	c, _, _ := sweepController(t, reloadClient)
	c.sampler = newSampler(&countingInventory{}, c.now, func(string, time.Duration) {})
	list := manyConns(1000, 20000)
	c.startSweep(&dumpResult{dumpReq: dumpReq{reason: "test", asked: time.Now(), clock: c.clock}, list: list, listen: listenPorts(list)})
	if !c.sampler.sweeping.Load() {
		t.Fatal("a sweep started and the sampler was not told")
	}
	held := make(chan struct{})
	go func() {
		c.sampler.holdForSweep(t.Context(), time.Minute)
		close(held)
	}()
	c.sweepStep()
	if c.sw == nil {
		t.Fatal("the sweep ended in one slice; the test needs it in progress")
	}
	select {
	case <-held:
		t.Fatal("the sampler read while the sweep was in progress")
	case <-time.After(3 * sweepPoll):
	}
	runSweep(t, c)
	if c.sampler.sweeping.Load() {
		t.Fatal("the sweep ended and the sampler still holds")
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the sampler still holds 10 s after the sweep ended")
	}

	// A sweep that does not end holds a sample for the limit only.
	c.sampler.sweeping.Store(true)
	t0 := time.Now()
	c.sampler.holdForSweep(t.Context(), 20*time.Millisecond)
	if d := time.Since(t0); d < 20*time.Millisecond {
		t.Errorf("held %v; want the limit, 20ms", d)
	}
}

// A sampler held by a sweep when the daemon stops (an upgrade, SIGTERM:
// the loop left mid-sweep) returns without taking the sample it held.
func TestSamplerHeldStopsWithoutSampling(t *testing.T) {
	inv := &countingInventory{rtt: time.Millisecond}
	s := newSampler(inv, time.Now, func(string, time.Duration) {})
	s.sweeping.Store(true)
	s.setEvery(200 * time.Millisecond) // held from 200 ms to 400 ms at most
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.run(ctx) }()
	time.Sleep(300 * time.Millisecond) // the timer fired: the sample is held
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sampler did not stop")
	}
	if inv.calls != 0 {
		t.Errorf("the sampler dumped %d times while held and stopping; want none", inv.calls)
	}
}
