package controller

import (
	"net/netip"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkConnectionEvents is the event loop's own cost of serving one
// new client connection, the path-manager commands excluded (a kernel that
// accepts everything at once): its created, established (which asks for
// the lte subflow), the lte sub_established and closed events, as one
// batch, in the fake namespace with the aggregate policy.
//
//	go test -run '^$' -bench ConnectionEvents -benchmem ./internal/controller
func BenchmarkConnectionEvents(b *testing.B) {
	c, k, _ := fakeController(b, reloadClient, &testbed.LockedBuffer{})
	c.pm = nopPM{}
	_ = k
	now := time.Now()
	evs := make([]pathmgr.Event, 4)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tok := uint32(i + 100)
		port := uint16(10000 + i%50000)
		local := netip.AddrPortFrom(fakeWiFi.Addr(), port)
		lte := netip.AddrPortFrom(fakeLTE.Addr(), port)
		evs[0] = pathmgr.Event{Type: pathmgr.EventCreated, Token: tok, Local: local, Remote: fakeRemote, IfIndex: 2}
		evs[1] = evs[0]
		evs[1].Type = pathmgr.EventEstablished
		evs[2] = pathmgr.Event{Type: pathmgr.EventSubEstablished, Token: tok, Local: lte, Remote: fakeRemote, IfIndex: 3, LocalID: 1}
		evs[3] = pathmgr.Event{Type: pathmgr.EventClosed, Token: tok}
		for _, ev := range evs {
			c.handlePM(ev, now)
		}
	}
	if len(c.conns) != 1 {
		b.Fatalf("%d connections left; want the fake one", len(c.conns))
	}
}
