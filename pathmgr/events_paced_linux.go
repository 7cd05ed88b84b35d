//go:build linux

package pathmgr

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ListenEventsPaced is ListenEvents for a reader that need not see each
// event as it comes: one that keeps an account of connections while the
// in-kernel path manager opens their subflows, say. Its Receive returns
// at most once per every, with everything queued meanwhile (up to a
// batch, as Receive does), and between calls no event wakes anything.
//
// A listener's socket is otherwise waited on by the Go runtime's poller,
// whose thread the kernel wakes for every datagram that arrives while it
// waits, whether or not a Receive is pending: in a burst of connections
// that is a wake-up per event, CPU the kernel's own path manager and the
// applications then lack. A paced listener takes its socket out of the
// poller and waits on the thread of the Receive that finds nothing
// queued, with ppoll, which an event wakes only while that wait lasts.
//
// every is the least time from one Receive's return to the next one's;
// the socket's receive buffer holds what arrives meanwhile (at 8 MiB,
// some hundred thousand events), and a loss is reported as Receive
// reports it (ErrEventsLost). Only, Receive's contexts and Close work as
// for ListenEvents.
func ListenEventsPaced(cfg *Config, every time.Duration) (*EventListener, error) {
	if every <= 0 {
		return nil, fmt.Errorf("pathmgr: events paced every %v: want a positive interval", every)
	}
	l, err := ListenEvents(cfg)
	if err != nil {
		return nil, err
	}
	// A descriptor of our own for the socket, then the original (the one
	// the poller has) closed: closing it takes it out of the poller.
	fd, derr := -1, error(nil)
	if err := l.rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		l.Close()
		return nil, fmt.Errorf("pathmgr: events socket: %w", errors.Join(err, derr))
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		l.Close()
		return nil, fmt.Errorf("pathmgr: events socket: eventfd: %w", err)
	}
	l.c.Close()
	l.c, l.rc = nil, nil
	pause := time.NewTimer(time.Hour)
	pause.Stop()
	l.paced = &pacedSocket{every: every, fd: fd, efd: efd, pause: pause, closing: make(chan struct{})}
	l.paced.fds = [2]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}
	return l, nil
}

// pacedSocket is a paced listener's socket and what its Receive waits
// with.
type pacedSocket struct {
	every   time.Duration
	fd      int // the socket, outside the runtime's poller
	efd     int // an eventfd, written to end a wait (a context's end, Close)
	fds     [2]unix.PollFd
	last    time.Time // when Receive last returned
	pause   *time.Timer
	closing chan struct{} // closed by Close

	mu       sync.Mutex // guards the fields below and the use of efd by wake
	busy     bool       // a Receive is running: Close leaves the descriptors to it
	closed   bool
	released bool // fd and efd are closed
}

// receivePaced is Receive on a paced listener: the rest of the pause,
// then what is queued, or a wait for it on this thread.
func (l *EventListener) receivePaced(ctx context.Context) ([]Event, error) {
	p := l.paced
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, receiveError(os.ErrClosed)
	}
	p.busy = true
	p.mu.Unlock()
	defer p.done()
	l.watch(ctx)
	if d := time.Until(p.last.Add(p.every)); d > 0 {
		p.pause.Reset(d)
		select {
		case <-p.pause.C:
		case <-ctx.Done():
			p.pause.Stop()
			return nil, ctx.Err()
		case <-p.closing:
			p.pause.Stop()
			return nil, receiveError(os.ErrClosed)
		}
	}
	for {
		l.evs, l.rerr = l.evs[:0], nil
		if l.readBatch(uintptr(p.fd)) { // events, or an error
			p.last = time.Now()
			var events []Event
			if len(l.evs) > 0 {
				events = slices.Clone(l.evs)
			}
			return events, l.rerr
		}
		p.fds[0].Revents, p.fds[1].Revents = 0, 0
		if _, err := unix.Ppoll(p.fds[:], nil, nil); err != nil && !errors.Is(err, unix.EINTR) {
			return nil, receiveError(err)
		}
		if p.fds[1].Revents == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return nil, receiveError(os.ErrClosed)
		}
		p.clearWake() // left by an earlier context's end
	}
}

// wake ends a wait in receivePaced (and makes the next one end at once
// until clearWake).
func (p *pacedSocket) wake() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wakeLocked()
}

func (p *pacedSocket) wakeLocked() {
	if !p.released {
		var one [8]byte // what is added to the eventfd's counter: a native uint64
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(p.efd, one[:])
	}
}

// clearWake reads the eventfd back to zero.
func (p *pacedSocket) clearWake() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.released {
		var buf [8]byte
		_, _ = unix.Read(p.efd, buf[:]) // EAGAIN: nothing to clear
	}
}

// done ends a receivePaced: the descriptors are closed now if Close came
// meanwhile.
func (p *pacedSocket) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy = false
	if p.closed {
		p.release()
	}
}

// close is Close on a paced listener: a running Receive ends and closes
// the descriptors, or close does.
func (p *pacedSocket) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	close(p.closing)
	p.wakeLocked()
	if p.busy {
		return nil
	}
	return p.release()
}

func (p *pacedSocket) release() error {
	if p.released {
		return nil
	}
	p.released = true
	err := unix.Close(p.fd)
	unix.Close(p.efd)
	if err != nil {
		return fmt.Errorf("pathmgr: close events socket: %w", err)
	}
	return nil
}
