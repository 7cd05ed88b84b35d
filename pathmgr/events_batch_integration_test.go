//go:build linux

package pathmgr

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// TestIntegrationReceiveBatch queues 200 real events (MPTCP listeners
// opened and closed in a fresh namespace) before reading, and checks that
// one Receive returns every one of them, in the order the kernel sent
// them: a burst costs the reader one wake-up, not one per event.
func TestIntegrationReceiveBatch(t *testing.T) {
	ns := testbed.NetNST(t, "batch")
	l, err := ListenEvents(&Config{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const n = 100
	openCloseListeners(t, ns, 21000, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := l.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2*n {
		t.Fatalf("one Receive returned %d events; want all %d queued", len(evs), 2*n)
	}
	for i, e := range evs {
		want, port := EventListenerCreated, 21000+i/2
		if i%2 == 1 {
			want = EventListenerClosed
		}
		if e.Type != want || int(e.Local.Port()) != port {
			t.Fatalf("event %d = %v; want %v on port %d (kernel order)", i, e, want, port)
		}
	}
}

// Only drops the other event types in the kernel: with listener_closed
// only, 20 listeners opened and closed queue 20 events, not 40; without
// a type every event comes again.
func TestIntegrationEventsOnly(t *testing.T) {
	ns := testbed.NetNST(t, "only")
	l, err := ListenEvents(&Config{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	listeners := func(first int) { openCloseListeners(t, ns, first, 20) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Only(EventListenerClosed); err != nil {
		t.Fatal(err)
	}
	listeners(22000)
	evs, err := l.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 20 {
		t.Fatalf("%d events with listener_closed only, want 20", len(evs))
	}
	for _, e := range evs {
		if e.Type != EventListenerClosed {
			t.Fatalf("event %v got through a filter for listener_closed", e)
		}
	}
	if err := l.Only(); err != nil {
		t.Fatal(err)
	}
	listeners(22100)
	if evs, err = l.Receive(ctx); err != nil || len(evs) != 40 {
		t.Fatalf("without a filter: %d events, %v; want 40", len(evs), err)
	}
}

// openCloseListeners opens and closes n MPTCP listeners on 127.0.0.1,
// ports first..first+n-1, in ns: two events each (listener created and
// closed).
func openCloseListeners(t *testing.T, ns *testbed.NetNS, first, n int) {
	t.Helper()
	if err := ns.Do(func() error {
		for i := range n {
			var lc net.ListenConfig
			lc.SetMultipathTCP(true)
			ln, err := lc.Listen(context.Background(), "tcp4", net.JoinHostPort("127.0.0.1", itoa(first+i)))
			if err != nil {
				return err
			}
			ln.Close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
