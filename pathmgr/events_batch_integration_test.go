//go:build linux

package pathmgr

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"golang.org/x/sys/unix"
)

// TestIntegrationReceiveBatch queues 200 real events (MPTCP listeners
// opened and closed in a fresh namespace) before reading, and checks that
// one Receive returns every one of them, in the order the kernel sent
// them: a burst costs the reader one wake-up, not one per event.
func TestIntegrationReceiveBatch(t *testing.T) { eachListener(t, testReceiveBatch) }

func testReceiveBatch(t *testing.T, listen listenFunc) {
	ns, l := listenWith(t, "batch", listen)
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
	checkListenerEvents(t, evs, 21000)
}

// checkListenerEvents checks that evs are the events of openCloseListeners
// from port first, in the kernel's order: created, closed, port by port.
func checkListenerEvents(t *testing.T, evs []Event, first int) {
	t.Helper()
	for i, e := range evs {
		want, port := EventListenerCreated, first+i/2
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
func TestIntegrationEventsOnly(t *testing.T) { eachListener(t, testEventsOnly) }

func testEventsOnly(t *testing.T, listen listenFunc) {
	ns, l := listenWith(t, "only", listen)
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

// dialIn is a Client in a fresh namespace of its own, closed at the
// test's end.
func dialIn(tb testing.TB, role string) (*testbed.NetNS, *Client) {
	tb.Helper()
	ns := testbed.NetNST(tb, role)
	c, err := Dial(&Config{NetNS: ns.Name})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return ns, c
}

// listenFunc makes an event listener: ListenEvents, or ListenEventsPaced
// with an interval.
type listenFunc func(*Config) (*EventListener, error)

// eachListener runs test as a subtest for each kind of listener: polled
// (ListenEvents) and paced (ListenEventsPaced, every millisecond).
func eachListener(t *testing.T, test func(*testing.T, listenFunc)) {
	t.Run("polled", func(t *testing.T) { test(t, ListenEvents) })
	t.Run("paced", func(t *testing.T) { test(t, pacedEvery(time.Millisecond)) })
}

// pacedEvery is ListenEventsPaced with the interval every.
func pacedEvery(every time.Duration) listenFunc {
	return func(c *Config) (*EventListener, error) { return ListenEventsPaced(c, every) }
}

// listenIn is a polled event listener in a fresh namespace of its own,
// closed at the test's end.
func listenIn(tb testing.TB, role string) (*testbed.NetNS, *EventListener) {
	tb.Helper()
	return listenWith(tb, role, ListenEvents)
}

// listenWith is listenIn for the listener listen makes.
func listenWith(tb testing.TB, role string, listen listenFunc) (*testbed.NetNS, *EventListener) {
	tb.Helper()
	ns := testbed.NetNST(tb, role)
	l, err := listen(&Config{NetNS: ns.Name})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return ns, l
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

// TestIntegrationReceiveContexts: the end of the context a Receive waits
// with unblocks it; a later call with that context returns at once; and a
// call with another context reads again (the deadline the first context's
// end set is gone), however the contexts alternate.
func TestIntegrationReceiveContexts(t *testing.T) { eachListener(t, testReceiveContexts) }

func testReceiveContexts(t *testing.T, listen listenFunc) {
	ns, l := listenWith(t, "rcvctx", listen)
	ctx1, cancel1 := context.WithCancel(context.Background())
	if err := receiveEndedBy(t, l, ctx1, cancel1, "its context ended"); err != context.Canceled {
		t.Fatalf("Receive after its context ended: %v; want context.Canceled", err)
	}
	if _, err := l.Receive(ctx1); err != context.Canceled {
		t.Fatalf("Receive with an ended context: %v; want context.Canceled", err)
	}
	for round, port := range []int{21500, 21510} {
		ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
		openCloseListeners(t, ns, port, 1)
		evs, err := l.Receive(ctx2)
		if err != nil || len(evs) == 0 || int(evs[0].Local.Port()) != port {
			t.Fatalf("round %d: Receive with a new context: %v, %v; want the listener events of port %d", round, evs, err, port)
		}
		cancel2()
	}
	// A context of a type that cannot be compared, twice (comparing
	// contexts would panic).
	ctx4, cancel4 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel4()
	uc := uncomparableCtx{Context: ctx4, f: func() {}}
	for _, port := range []int{21530, 21540} {
		openCloseListeners(t, ns, port, 1)
		if evs, err := l.Receive(uc); err != nil || len(evs) == 0 {
			t.Fatalf("Receive with a context that cannot be compared: %v, %v", evs, err)
		}
	}
	// A context that ends while nothing is read, then one that lives.
	ctx3, cancel3 := context.WithCancel(context.Background())
	cancel3()
	if _, err := l.Receive(ctx3); err != context.Canceled {
		t.Fatalf("Receive with an ended context: %v", err)
	}
	openCloseListeners(t, ns, 21520, 1)
	if evs, err := l.Receive(context.Background()); err != nil || len(evs) == 0 {
		t.Fatalf("Receive after: %v, %v", evs, err)
	}
}

// receiveEndedBy starts a Receive on l with ctx, calls end once the
// Receive has had 50 ms to block, and returns the Receive's error; it
// fails t if the Receive is still blocked 5 s after end (what end does).
func receiveEndedBy(t *testing.T, l *EventListener, ctx context.Context, end func(), what string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := l.Receive(ctx); done <- err }()
	time.Sleep(50 * time.Millisecond)
	end()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("Receive still blocked 5s after %s", what)
		return nil
	}
}

// uncomparableCtx is a context whose type cannot be compared (a func
// field), as a caller's own context type may be.
type uncomparableCtx struct {
	context.Context
	f func()
}

// BenchmarkReceive is one Receive of the two events of a listener opened
// and closed (queued before the clock runs), with the same context each
// time as the daemon's reader calls it.
//
//	go test -run '^$' -bench '^BenchmarkReceive$' -benchmem ./pathmgr
func BenchmarkReceive(b *testing.B) {
	ns, l := listenIn(b, "brcv")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := ns.Do(func() error {
			var lc net.ListenConfig
			lc.SetMultipathTCP(true)
			ln, err := lc.Listen(ctx, "tcp4", "127.0.0.1:0")
			if err != nil {
				return err
			}
			return ln.Close()
		}); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Millisecond) // both events queued
		b.StartTimer()
		for n := 0; n < 2; {
			evs, err := l.Receive(ctx)
			if err != nil {
				b.Fatal(err)
			}
			n += len(evs)
		}
	}
}

// TestIntegrationEventsBacklog: Backlog counts what the events not yet
// received take of the socket's buffer, and the buffer's size: nothing
// queued at first, more with each event the kernel sends, nothing again
// once every event is received; the limit SO_RCVBUF's.
func TestIntegrationEventsBacklog(t *testing.T) { eachListener(t, testEventsBacklog) }

func testEventsBacklog(t *testing.T, listen listenFunc) {
	ns, l := listenWith(t, "backlog", listen)
	queued, limit, err := l.Backlog()
	var rcvbuf int
	var serr error
	if cerr := l.control(func(fd uintptr) { rcvbuf, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	if err != nil || queued != 0 || limit != rcvbuf || limit <= 0 {
		t.Fatalf("Backlog of a new listener: %d of %d (%v); want 0 of SO_RCVBUF's %d", queued, limit, err, rcvbuf)
	}
	openCloseListeners(t, ns, 21600, 5)
	few, _, err := l.Backlog()
	if err != nil || few == 0 {
		t.Fatalf("Backlog after 10 events: %d (%v); want more than 0", few, err)
	}
	openCloseListeners(t, ns, 21605, 5)
	if more, _, err := l.Backlog(); err != nil || more <= few {
		t.Fatalf("Backlog after 10 more events: %d (%v); want more than %d", more, err, few)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for got := 0; got < 20; {
		evs, err := l.Receive(ctx)
		if err != nil {
			t.Fatalf("after %d of 20 events: %v", got, err)
		}
		got += len(evs)
	}
	if queued, _, err := l.Backlog(); err != nil || queued != 0 {
		t.Errorf("Backlog with every event received: %d (%v); want 0", queued, err)
	}
	l.Close()
	if _, _, err := l.Backlog(); err == nil {
		t.Error("Backlog of a closed listener: no error")
	}
}
