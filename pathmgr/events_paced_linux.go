//go:build linux

package pathmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ListenEventsPaced is ListenEvents for a reader that need not see each
// event as it comes: one that keeps an account of connections while the
// in-kernel path manager opens their subflows, say. Its Receive returns
// events (or a receive error) at most once per every, with everything
// queued meanwhile up to a batch (256), and between calls no event wakes
// anything. After a full batch, or a loss (ErrEventsLost: the kernel
// then queues nothing more until the socket is read empty), the next call
// does not wait: a backlog is read at once.
//
// A listener's socket is otherwise in the Go runtime's poller, which
// waits edge-triggered: every datagram that arrives while the poller's
// thread waits wakes that thread, whether or not a Receive is pending. In
// a burst of connections that is a wake-up per event, CPU the kernel's
// own path manager and the applications then lack. A paced listener
// keeps its socket out of the poller. Only a Receive that finds nothing
// queued puts it there, as a descriptor of its own for that one wait,
// removed after it; that costs a dup, the poller's registration (and its
// first wake-up) and removal, and a close per such wait, at most one per
// interval.
//
// The socket's receive buffer holds what arrives meanwhile (at the 8 MiB
// asked for, doubled by the kernel, about twenty thousand events of
// ~830 bytes each); a loss is reported as Receive reports it
// (ErrEventsLost). Only, Receive's contexts and Close work as for
// ListenEvents.
func ListenEventsPaced(cfg *Config, every time.Duration) (*EventListener, error) {
	if every <= 0 {
		return nil, fmt.Errorf("pathmgr: events paced every %v: want a positive interval", every)
	}
	l, err := ListenEvents(cfg)
	if err != nil {
		return nil, err
	}
	// A descriptor of our own for the socket, then the original (the one
	// in the poller) closed: closing it takes it out of the poller.
	fd, derr := -1, error(nil)
	if err := l.rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		l.Close()
		return nil, fmt.Errorf("pathmgr: events socket: %w", errors.Join(err, derr))
	}
	l.c.Close()
	l.c, l.rc = nil, nil
	pause := time.NewTimer(time.Hour)
	pause.Stop()
	l.paced = &pacedSocket{every: every, fd: fd, pause: pause, closing: make(chan struct{})}
	return l, nil
}

// pacedSocket is a paced listener's socket and what its Receive waits
// with.
type pacedSocket struct {
	every time.Duration
	fd    int // the socket, outside the poller
	// For Receive (not concurrent): when it last returned events or an
	// error, whether that was a full batch, and its pause.
	last    time.Time
	full    bool
	pause   *time.Timer
	closing chan struct{} // closed by Close

	mu       sync.Mutex // guards the fields below
	waiting  *os.File   // the socket in the poller for the wait going on
	busy     bool       // a Receive is running: Close leaves fd to it
	closed   bool
	released bool // fd is closed
}

// receivePaced is Receive on a paced listener: the rest of the pause,
// then what is queued, or a wait for it in the poller.
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
	if d := time.Until(p.last.Add(p.every)); d > 0 && !p.full {
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
	l.evs, l.rerr = l.evs[:0], nil
	if !l.readBatch(uintptr(p.fd)) { // nothing queued
		if err := p.wait(ctx, l.readFn); err != nil {
			if ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
				p.last, p.full = time.Now(), false // a receive error is paced too
			}
			return nil, err
		}
	}
	p.last, p.full = time.Now(), MoreQueued(len(l.evs), l.rerr)
	return l.taken(), l.rerr
}

// wait reads with read (readBatch) until it has events or an error, the
// context ends or the listener is closed, waiting in the poller.
func (p *pacedSocket) wait(ctx context.Context, read func(uintptr) bool) error {
	for {
		err := p.waitOnce(ctx, read)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Close (the next waitOnce says so), or an earlier context's
			// end that was on its way when the watch moved on.
			continue
		default:
			return receiveError(err)
		}
	}
}

// waitOnce puts a descriptor of the socket of its own in the poller for
// one RawConn.Read, and closes it after.
func (p *pacedSocket) waitOnce(ctx context.Context, read func(uintptr) bool) error {
	dfd, err := unix.FcntlInt(uintptr(p.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	// Non-blocking (a flag of the socket, shared with fd): in the poller.
	f := os.NewFile(uintptr(dfd), "mptcp_pm events")
	defer f.Close()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return os.ErrClosed
	}
	p.waiting = f
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.waiting = nil
		p.mu.Unlock()
	}()
	if err := ctx.Err(); err != nil { // ended before interrupt could see f
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(read)
}

// interrupt ends the wait going on, if any (a read deadline in the past).
func (p *pacedSocket) interrupt() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.interruptLocked()
}

func (p *pacedSocket) interruptLocked() {
	if p.waiting != nil {
		_ = p.waiting.SetReadDeadline(time.Unix(1, 0))
	}
}

// control runs fn on the socket, unless the listener is closed.
func (p *pacedSocket) control(fn func(fd uintptr)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return os.ErrClosed
	}
	fn(uintptr(p.fd))
	return nil
}

// done ends a receivePaced: the socket is closed now if Close came
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
// the socket, or close does.
func (p *pacedSocket) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	close(p.closing)
	p.interruptLocked()
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
	if err := unix.Close(p.fd); err != nil {
		return fmt.Errorf("pathmgr: close events socket: %w", err)
	}
	return nil
}
