//go:build linux

package controller_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// observer is the independent event listener of the client namespace: per
// connection, when it read the ESTABLISHED and the lte SUB_ESTABLISHED.
//
// Its timestamps are when it read each event, so its own wait for a CPU
// is in every latency it reports. By default (BURST_OBSERVER unset or
// poller) it reads as it always has, through pathmgr.EventListener (Go's
// poller) at nice 0: the method, and every table before
// 2026-12-05 11:00 UTC. With the daemon's real-time create thread most of
// the tail it measured that way was its own: the thread had sent the
// create, and the kernel established the subflow inside that call, a few
// tens of µs after the ESTABLISHED, and the observer read the
// SUB_ESTABLISHED up to 1.5 ms later (the median over a round's slowest
// 1 %; docs/benchmarks.md, "the observer's own delay").
//
// BURST_OBSERVER=fifo reads the way the create thread does: one event at
// a time, in blocking reads on a thread of its own at SCHED_FIFO
// (BURST_OBSERVER_PRIO, default 50: above the thread's 10, so that the
// thread never delays a timestamp in the daemon's favour), with no poller
// in between. It reads within microseconds, at a price: it preempts the
// openers at each event, which costs the rounds with the thread a tenth
// to a fifth of their rate ratio to the in-kernel PM's. An ESTABLISHED
// then wakes two real-time threads, the observer and the create thread:
// one preempts the opener that emitted it, the other is sent to the
// other CPU (an IPI; on this paravirtualised host each wake-up costs
// the opener several µs), whereas the kernel PM's worker is woken on the
// opener's own CPU; and the SUB_ESTABLISHED the create thread emits wakes
// the observer again (docs/benchmarks.md, "the observer's price").
// BURST_OBSERVER=alternate takes each figure from the observer that
// disturbs it least.
type observer struct {
	lte  netip.Addr
	kind string // observePoller or observeFIFO
	how  string // how it reads, for the round's report
	// mute(true) stops the kernel queueing events on the observer's
	// socket, mute(false) lets them come again; BURST_OBSERVER=alternate
	// mutes the observer whose turn it is not. The real-time one leaves
	// the events group; the poller's socket (pathmgr's, which cannot
	// leave it) drops them in its socket filter, so the kernel still
	// copies each event for it and runs the filter, but no wake-up.
	mute     func(on bool) error
	realtime bool // the fifo observer got SCHED_FIFO
	mu       sync.Mutex
	est      map[uint32]time.Time
	sub      map[uint32]time.Time
	nclose   int
	lost     int
}

// Observers, each named once here: how an observer reads.
const (
	observePoller = "poller"
	observeFIFO   = "fifo"
)

// newObservers makes the observers BURST_OBSERVER asks for: poller (the
// default) or fifo, one; alternate, both, the poller's muted (observer.mute).
func newObservers(b *testing.B, bed *testbed.Bed) []*observer {
	switch how := os.Getenv("BURST_OBSERVER"); how {
	case "", observePoller:
		return []*observer{newObserver(b, bed, observePoller)}
	case observeFIFO:
		return []*observer{newObserver(b, bed, observeFIFO)}
	case "alternate":
		obs := []*observer{newObserver(b, bed, observeFIFO), newObserver(b, bed, observePoller)}
		if !obs[0].realtime {
			b.Fatalf("BURST_OBSERVER=alternate: the real-time observer reads %s", obs[0].how)
		}
		if err := obs[1].mute(true); err != nil {
			b.Fatal(err)
		}
		return obs
	default:
		b.Fatalf("BURST_OBSERVER=%q: want poller (the default), fifo or alternate", how)
		return nil
	}
}

func newObserver(b *testing.B, bed *testbed.Bed, kind string) *observer {
	o := &observer{lte: bed.LTEAddr, kind: kind}
	o.reset()
	switch kind {
	case observePoller:
		o.how = "through Go's poller at nice 0"
		o.viaPoller(b, bed)
	case observeFIFO:
		prio := 50
		if s := os.Getenv("BURST_OBSERVER_PRIO"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 99 {
				b.Fatalf("BURST_OBSERVER_PRIO=%q: want a priority from 1 to 99", s)
			}
			prio = n
		}
		o.blocking(b, bed, prio)
	}
	return o
}

// record notes one event read at now.
func (o *observer) record(typ pathmgr.EventType, token uint32, local netip.Addr, now time.Time) {
	switch {
	case typ == pathmgr.EventEstablished:
		o.est[token] = now
	case typ == pathmgr.EventSubEstablished && local == o.lte:
		if _, ok := o.sub[token]; !ok {
			o.sub[token] = now
		}
	case typ == pathmgr.EventClosed:
		o.nclose++
	}
}

func (o *observer) viaPoller(b *testing.B, bed *testbed.Bed) {
	el, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { el.Close() })
	o.mute = func(on bool) error {
		if on {
			return el.Only(0) // MPTCP_EVENT_UNSPEC, which the kernel never sends
		}
		return el.Only() // every event, as before
	}
	testbed.Collect(b, el.Receive, func(evs []pathmgr.Event, err error) bool {
		now := time.Now()
		o.mu.Lock()
		defer o.mu.Unlock()
		if err != nil {
			o.lost++
		}
		for _, e := range evs {
			o.record(e.Type, e.Token, e.Local.Addr(), now)
		}
		return true
	})
}

// blocking reads the events on a socket of its own, in blocking reads on
// a locked thread at SCHED_FIFO prio. The thread is never unlocked, so it
// ends with its goroutine and no other goroutine runs at that priority.
func (o *observer) blocking(b *testing.B, bed *testbed.Bed, prio int) {
	var fd int
	var family uint16
	err := bed.Client.Do(func() error {
		c, err := genetlink.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		f, err := c.GetFamily("mptcp_pm")
		if err != nil {
			return fmt.Errorf("the mptcp_pm family: %w", err)
		}
		family = f.ID
		var group uint32
		for _, g := range f.Groups {
			if g.Name == "mptcp_pm_events" {
				group = g.ID
			}
		}
		if group == 0 {
			return errors.New("the mptcp_pm family has no mptcp_pm_events group")
		}
		if fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			unix.Close(fd)
			return err
		}
		// A receive timeout to see the stop; a large buffer, so that a
		// round's events are not lost while the thread waits.
		// Only the three events it counts wake it (the generic netlink
		// command is the byte after the 16-byte netlink header).
		accept := func(t pathmgr.EventType, skip uint8) unix.SockFilter {
			return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: skip, K: uint32(t)}
		}
		filter := []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: unix.NLMSG_HDRLEN},
			accept(pathmgr.EventEstablished, 3),
			accept(pathmgr.EventSubEstablished, 2),
			accept(pathmgr.EventClosed, 1),
			{Code: unix.BPF_RET | unix.BPF_K, K: 0},
			{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
		}
		// Muted, it leaves the events group: the kernel copies it nothing.
		o.mute = func(on bool) error {
			opt := unix.NETLINK_ADD_MEMBERSHIP
			if on {
				opt = unix.NETLINK_DROP_MEMBERSHIP
			}
			return unix.SetsockoptInt(fd, unix.SOL_NETLINK, opt, int(group))
		}
		if err := errors.Join(
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}),
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20),
			unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
				&unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}),
			o.mute(false),
		); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		b.Fatalf("the observer's socket in %s: %v", bed.Client.Name, err)
	}
	var stop atomic.Bool
	started, done := make(chan string), make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // for good: the thread goes when the goroutine ends
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			started <- fmt.Sprintf("in blocking reads on a thread of its own, at nice 0: SCHED_FIFO %d refused (%v)", prio, err)
		} else {
			o.realtime = true
			started <- fmt.Sprintf("in blocking reads on a thread of its own at SCHED_FIFO %d", prio)
		}
		buf := make([]byte, 8192)
		for !stop.Load() {
			n, err := unix.Read(fd, buf)
			now := time.Now()
			if err != nil {
				switch {
				case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
				case errors.Is(err, unix.ENOBUFS):
					o.mu.Lock()
					o.lost++
					o.mu.Unlock()
				default:
					b.Errorf("the observer's read: %v", err)
					return
				}
				continue
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				b.Errorf("the observer read a malformed datagram: %v", err)
				return
			}
			o.mu.Lock()
			for _, m := range msgs {
				if m.Header.Type != family || len(m.Data) < 4 {
					continue
				}
				token, local := eventToken(m.Data[4:])
				o.record(pathmgr.EventType(m.Data[0]), token, local, now)
			}
			o.mu.Unlock()
		}
	}()
	o.how = <-started
	b.Cleanup(func() {
		stop.Store(true)
		<-done
		unix.Close(fd)
	})
}

// eventToken reads an event's token and local address.
func eventToken(attrs []byte) (token uint32, local netip.Addr) {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return 0, local
	}
	for ad.Next() {
		switch pathmgr.EventAttr(ad.Type()) {
		case pathmgr.AttrToken:
			token = ad.Uint32()
		case pathmgr.AttrSourceAddr4, pathmgr.AttrSourceAddr6:
			if a, ok := netip.AddrFromSlice(ad.Bytes()); ok {
				local = a // not unmapped, as pathmgr's events: the same count as the poller's
			}
		}
	}
	return token, local
}

func (o *observer) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.est, o.sub, o.nclose, o.lost = map[uint32]time.Time{}, map[uint32]time.Time{}, 0, 0
}

// counted is how many events it counted since its reset.
func (o *observer) counted() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.est) + len(o.sub) + o.nclose
}

// served reports whether n connections have their lte subflow.
func (o *observer) served(n int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.sub) >= n
}

func (o *observer) closed() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nclose
}

// result is the latency of every connection whose ESTABLISHED and lte
// SUB_ESTABLISHED were both seen, the overruns, and the time from start
// until the last lte subflow.
func (o *observer) result(start time.Time) (lat []time.Duration, lost int, all time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var last time.Time
	for tok, s := range o.sub {
		if s.After(last) {
			last = s
		}
		if e, ok := o.est[tok]; ok {
			lat = append(lat, s.Sub(e))
		}
	}
	return lat, o.lost, last.Sub(start)
}

// timeline is the round's connections by when they were established, in
// bins of bin from start: how many, and the longest latency among them; a
// growing queue and a stall of the daemon look different in it.
func (o *observer) timeline(start time.Time, bin time.Duration) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	type cell struct {
		n   int
		max time.Duration
	}
	var cells []cell
	for tok, e := range o.est {
		s, ok := o.sub[tok]
		if !ok {
			continue
		}
		i := max(0, int(e.Sub(start)/bin))
		for len(cells) <= i {
			cells = append(cells, cell{})
		}
		cells[i].n++
		cells[i].max = max(cells[i].max, s.Sub(e))
	}
	var sb strings.Builder
	for i, c := range cells {
		fmt.Fprintf(&sb, " %d:%d/%.2f", i, c.n, float64(c.max)/float64(time.Millisecond))
	}
	return sb.String()
}
