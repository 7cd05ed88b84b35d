// Package rtcreate sends a new MPTCP connection's SUBFLOW_CREATEs from a
// thread outside Go's runtime, at real-time priority: the daemon's answer
// to bursts of new connections (`creates.thread: auto`, the policy's
// default, where it runs at SCHED_FIFO, or `realtime`; docs/benchmarks.md,
// "burst", says what it buys and costs).
//
// Why a thread of its own, in C: every SUBFLOW_CREATE is served under the
// generic netlink mutex, one at a time, and the kernel connects the
// subflow inside the request. Under a burst, a create sent a little late
// waits behind every other, and one that meets a connection whose opener
// was preempted holding its lock sleeps with the mutex held. A thread that
// reads each ESTABLISHED and sends its creates at once, and takes the CPU
// from nothing else, is the least a userspace path manager can do; in Go
// the poller, the scheduler and the runtime's own threads sit between the
// event and the create, and a goroutine cannot run at a priority of its
// own. Measured on the burst bed, only such a thread at SCHED_FIFO, with
// the rest of the daemon kept from preempting the applications, brings
// the second path's p99 within 1.5x of the in-kernel path manager's, and
// then in about half the runs: the creates that sleep on a connection's
// lock, the mutex held, are the kernel's to remove.
//
// The thread does what the loop has published (Publish): for each new
// connection, a create from each planned interface other than the initial
// subflow's. For each connection it reports (Read) the creates the kernel
// refused, then the interfaces it sent a create from, or that no plan was
// in force; and events lost. It holds its reports while a burst lasts
// (Options.Pause, Hold) and says whether one does (Busy), so that the
// daemon can leave its own work on the burst's connections until after
// it. Everything else stays the loop's, which reads the same events on
// its own socket.
package rtcreate

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/gigapath/gigapath/pathmgr"
)

// ErrUnsupported is returned by Start in a build without cgo (or not for
// Linux): the thread is C.
var ErrUnsupported = errors.New("rtcreate: this build has no real-time create thread (built without cgo)")

// Options for Start.
type Options struct {
	// NetNS is the network namespace the thread's sockets are opened in
	// (as pathmgr.Config's); empty: the caller's.
	NetNS string
	// Priority is the thread's SCHED_FIFO priority, 1-99; 0 leaves it at
	// the scheduling of the thread that starts it.
	Priority int
	// Pause is how long the thread waits for another connection before
	// it hands over the reports it holds: while connections keep coming
	// it holds them (Read, Busy). Whole milliseconds up to an hour; 0:
	// DefaultPause.
	Pause time.Duration
	// Hold is how long at most it holds a report while connections keep
	// coming (it looks as each comes); 0: DefaultHold.
	Hold time.Duration
}

// The thread's defaults. A burst's connections come a fraction of a
// millisecond apart: DefaultPause is a pause between bursts. DefaultHold
// bounds how far the daemon's account may lag behind a burst that does
// not pause, well within the seconds its loop waits for an account
// (internal/controller/rtcreates.go).
const (
	DefaultPause = 2 * time.Millisecond
	DefaultHold  = time.Second
)

// pauseHold checks and defaults o's Pause and Hold, in milliseconds.
func (o Options) pauseHold() (pause, hold int, err error) {
	p, h := o.Pause, o.Hold
	if p == 0 {
		p = DefaultPause
	}
	if h == 0 {
		h = DefaultHold
	}
	for _, d := range []time.Duration{p, h} {
		if d < time.Millisecond || d > time.Hour || d%time.Millisecond != 0 {
			return 0, 0, fmt.Errorf("rtcreate: pause %v, hold %v: want whole milliseconds from 1ms to 1h", o.Pause, o.Hold)
		}
	}
	return int(p / time.Millisecond), int(h / time.Millisecond), nil
}

// Iface is an interface a new connection gets a subflow on, with the
// endpoint of each family its create uses (a zero Addr: none).
type Iface struct {
	Index  int
	V4, V6 pathmgr.Endpoint
}

// Plan is what a new connection gets, for Valid from its publication.
type Plan struct {
	Valid  time.Duration
	Ifaces []Iface
	// Addrs maps each local address to its interface: a connection's
	// initial subflow's interface gets no create.
	Addrs map[netip.Addr]int
}

// Limits of a plan, the C side's.
const (
	MaxIfaces = 8
	MaxAddrs  = 32
)

// Kind is what a Report says.
type Kind uint8

const (
	// Refused: the kernel refused the create from Local to Remote of
	// connection Token; Err is its *pathmgr.Error.
	Refused Kind = iota + 1
	// NotSent: no plan was in force for connection Token (to Remote):
	// it got no create.
	NotSent
	// EventsLost: the thread's receive buffer overran; connections
	// among them got no create.
	EventsLost
	// Failed: the thread stopped (Err says why); nothing more is sent.
	Failed
	// Sent: connection Token (to Remote) got a create accepted from each
	// interface in Sent (none: every one was refused, and said so).
	Sent
)

func (k Kind) String() string {
	switch k {
	case Refused:
		return "refused"
	case NotSent:
		return "not sent"
	case EventsLost:
		return "events lost"
	case Failed:
		return "failed"
	case Sent:
		return "sent"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// Report is one thing that did not go as planned.
type Report struct {
	Kind   Kind
	Token  uint32
	Local  pathmgr.Endpoint // Refused: the create's local endpoint (ID, Addr, IfIndex)
	Remote netip.AddrPort
	Sent   []int // Sent: the interfaces
	Err    error
}
