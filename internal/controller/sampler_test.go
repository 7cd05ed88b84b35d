package controller

import (
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
	b := s.fromDiag()
	if !b.shared || inv.calls != 0 || len(b.subs) != 1 || b.subs[0].rtt != 7*time.Millisecond || !b.at.Equal(at) {
		t.Fatalf("sample with a fresh resync dump: shared=%v, %d own dumps, subs %+v at %v; want the resync's (rtt 7ms, at %v)",
			b.shared, inv.calls, b.subs, b.at, at)
	}
	// Taken once: the next sample dumps.
	if b = s.fromDiag(); b.shared || inv.calls != 1 || b.subs[0].rtt != time.Millisecond {
		t.Fatalf("second sample: shared=%v, %d own dumps, subs %+v; want its own dump", b.shared, inv.calls, b.subs)
	}

	s.share(listWithRTT(7*time.Millisecond), at, time.Now().Add(-2*time.Second))
	if b = s.fromDiag(); b.shared || inv.calls != 2 {
		t.Fatalf("sample with a resync dump older than the interval: shared=%v, %d own dumps; want its own", b.shared, inv.calls)
	}

	// A dump read before the previous sample is not taken either.
	old := time.Now()
	s.fromDiag()
	s.share(listWithRTT(7*time.Millisecond), at, old)
	if b = s.fromDiag(); b.shared || inv.calls != 4 {
		t.Fatalf("sample with a resync dump read before the previous sample: shared=%v, %d own dumps; want its own", b.shared, inv.calls)
	}

	s.share(listWithRTT(7*time.Millisecond), at, time.Now())
	s.setEvery(0)
	if s.shared.Load() != nil {
		t.Fatal("a dump is kept after sampling stopped")
	}
}
