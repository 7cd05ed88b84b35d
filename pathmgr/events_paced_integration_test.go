//go:build linux

package pathmgr

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"testing"
	"time"
)

// TestIntegrationReceivePaced: a paced listener returns at most once per
// interval however fast real events come (a listener opened and closed
// about every millisecond in a fresh namespace), with every event, in the
// kernel's order; a polled one returns for nearly each.
func TestIntegrationReceivePaced(t *testing.T) {
	const every, n = 40 * time.Millisecond, 300
	ns, l := listenWith(t, "paced", pacedEvery(every))
	var genErr error
	gen := make(chan struct{})
	defer func() { <-gen }() // on a failure too: the namespace goes after
	go func() {
		defer close(gen)
		genErr = ns.Do(func() error {
			for i := range n {
				var lc net.ListenConfig
				lc.SetMultipathTCP(true)
				ln, err := lc.Listen(context.Background(), "tcp4", net.JoinHostPort("127.0.0.1", itoa(23000+i)))
				if err != nil {
					return err
				}
				ln.Close()
				time.Sleep(time.Millisecond)
			}
			return nil
		})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []Event
	returns := 0
	start := time.Now()
	for len(got) < 2*n {
		evs, err := l.Receive(ctx)
		if err != nil {
			t.Fatalf("Receive after %d events: %v", len(got), err)
		}
		got = append(got, evs...)
		returns++
	}
	elapsed := time.Since(start)
	<-gen
	if genErr != nil {
		t.Fatal(genErr)
	}
	// The first return may come at once; each later one at least every
	// after the one before.
	if most := int(elapsed/every) + 1; returns > most {
		t.Fatalf("%d returns in %v: paced every %v, at most %d", returns, elapsed, every, most)
	}
	if returns < 3 {
		t.Fatalf("%d returns in %v: the events did not outlast the pause; the test needs them to", returns, elapsed)
	}
	if len(got) != 2*n {
		t.Fatalf("%d events, want %d", len(got), 2*n)
	}
	checkListenerEvents(t, got, 23000)
	t.Logf("%d events in %d returns over %v, paced every %v", len(got), returns, elapsed.Round(time.Millisecond), every)
}

// TestIntegrationPacedClose: Close ends a paced Receive that waits for
// events and one that waits out its pause; Receive after Close fails at
// once. A non-positive interval is refused.
func TestIntegrationPacedClose(t *testing.T) {
	if _, err := ListenEventsPaced(nil, 0); err == nil {
		t.Fatal("ListenEventsPaced with interval 0: no error")
	}
	closes := func(t *testing.T, l *EventListener) {
		t.Helper()
		closeL := func() {
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
		if err := receiveEndedBy(t, l, context.Background(), closeL, "Close"); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Receive ended by Close: %v; want os.ErrClosed", err)
		}
		if _, err := l.Receive(context.Background()); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Receive after Close: %v; want os.ErrClosed", err)
		}
	}
	t.Run("waiting for events", func(t *testing.T) {
		_, l := listenWith(t, "pclose", pacedEvery(time.Millisecond))
		closes(t, l)
	})
	t.Run("in the pause", func(t *testing.T) {
		ns, l := listenWith(t, "ppause", pacedEvery(time.Hour))
		openCloseListeners(t, ns, 23500, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if evs, err := l.Receive(ctx); err != nil || len(evs) == 0 {
			t.Fatalf("first Receive: %v, %v", evs, err)
		}
		openCloseListeners(t, ns, 23501, 1) // queued, to be read after the hour
		closes(t, l)
	})
}

// TestIntegrationPacedBacklog: after a full batch (256 events) a paced
// Receive does not wait out its interval (an hour here): a backlog of
// 600 queued events is read in three calls at once, 256, 256 and 88. A
// context that ends during the pause ends the Receive; Only on a closed
// listener fails.
func TestIntegrationPacedBacklog(t *testing.T) {
	ns, l := listenWith(t, "pbacklog", pacedEvery(time.Hour))
	openCloseListeners(t, ns, 24000, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sizes []int
	for got := 0; got < 600; {
		evs, err := l.Receive(ctx)
		if err != nil {
			t.Fatalf("Receive after %d events (returns %v): %v", got, sizes, err)
		}
		sizes = append(sizes, len(evs))
		got += len(evs)
	}
	if !slices.Equal(sizes, []int{256, 256, 88}) {
		t.Fatalf("a backlog of 600 events read in returns of %v; want [256 256 88]", sizes)
	}
	// The last return was not full: the next call waits out the hour,
	// until its context ends.
	short, cancelShort := context.WithCancel(ctx)
	if err := receiveEndedBy(t, l, short, cancelShort, "its context ended in the pause"); err != context.Canceled {
		t.Fatalf("Receive whose context ended in the pause: %v; want context.Canceled", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Only(EventListenerClosed); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Only on a closed listener: %v; want os.ErrClosed", err)
	}
}

// TestIntegrationPacedAfterLoss: after a receive-buffer overrun the kernel
// queues nothing more on the socket until it is read empty, so a paced
// listener reads on at once after a loss, as after a full batch, rather
// than wait out its interval (here an hour) dropping events meanwhile.
func TestIntegrationPacedAfterLoss(t *testing.T) {
	ns, l := listenWith(t, "ploss", pacedEvery(time.Hour))
	setReadBuffer(t, l, 1) // a few KiB: a few dozen events fill it
	openCloseListeners(t, ns, 25000, 200)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := l.Receive(ctx)
	for err == nil {
		_, err = l.Receive(ctx)
	}
	if !errors.Is(err, ErrEventsLost) {
		t.Fatalf("Receive after 400 events into a tiny buffer: %v; want ErrEventsLost", err)
	}
	evs, err := l.Receive(ctx)
	if err != nil || len(evs) == 0 {
		t.Fatalf("Receive after the loss: %d events, %v; want what was queued, at once", len(evs), err)
	}
}
