//go:build linux

package pathmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/genetlink"
	"golang.org/x/sys/unix"
)

// eventBufferBytes is the receive buffer asked for: bursts of thousands of
// connections produce several events each.
const eventBufferBytes = 8 << 20

// EventListener receives the path manager's events on a socket of its own
// (a socket that also sends requests would see events interleaved with
// replies). Receive must not be called concurrently.
type EventListener struct {
	c      *genetlink.Conn
	rc     syscall.RawConn
	family genetlink.Family
	// For read (Receive is not concurrent): one datagram, the batch's
	// events and its error, and the RawConn callback.
	buf    []byte
	evs    []Event
	rerr   error
	readFn func(uintptr) bool
	// A paced listener's (ListenEventsPaced; events_paced_linux.go).
	paced  *pacedSocket
	mu     sync.Mutex // guards the fields below
	closed bool
	// The Done channel of the context whose end unblocks a read (once
	// watching), and how to stop watching it (Receive's, kept from call
	// to call; Close stops it).
	watching    bool
	watchedDone <-chan struct{}
	unwatch     func() bool
}

// ListenEvents joins the mptcp_pm_events group in the namespace cfg names.
// Joining needs CAP_NET_ADMIN (in that namespace's user namespace).
func ListenEvents(cfg *Config) (*EventListener, error) {
	c, err := dialNetlink(cfg)
	if err != nil {
		return nil, err
	}
	f, err := resolveFamily(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	var group uint32
	for _, g := range f.Groups {
		if g.Name == groupEvents {
			group = g.ID
		}
	}
	if group == 0 {
		c.Close()
		return nil, fmt.Errorf("pathmgr: family %s has no multicast group %s: %w", familyName, groupEvents, ErrNotSupported)
	}
	if err := c.JoinGroup(group); err != nil {
		c.Close()
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("pathmgr: join multicast group %s of %s: listening to MPTCP events needs CAP_NET_ADMIN: %w: %w", groupEvents, familyName, os.ErrPermission, err)
		}
		return nil, fmt.Errorf("pathmgr: join %s: %w", groupEvents, err)
	}
	// Best effort: SO_RCVBUFFORCE (root) goes past net.core.rmem_max.
	if rc, err := c.SyscallConn(); err == nil {
		var serr error
		_ = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, eventBufferBytes)
		})
		if serr != nil {
			_ = c.SetReadBuffer(eventBufferBytes)
		}
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("pathmgr: events socket: %w", err)
	}
	l := &EventListener{c: c, rc: rc, family: f, buf: make([]byte, 32<<10)}
	l.readFn = l.readBatch
	return l, nil
}

// control runs fn on the listener's socket.
func (l *EventListener) control(fn func(fd uintptr)) error {
	if l.paced != nil {
		return l.paced.control(fn)
	}
	return l.rc.Control(fn)
}

// Receive blocks until events arrive or ctx is done, and returns them in
// the order the kernel sent them: every event already queued on the
// socket, up to 256, so that a burst costs one wake-up per batch rather
// than one per event. On a receive-buffer overflow it returns the events
// read before it with an error matching ErrEventsLost (and unix.ENOBUFS);
// the listener keeps working and the next call receives newer events. If a
// message cannot be decoded, the events before it are returned together
// with the error. Receive must not be called concurrently with itself.
// Called again and again with the same context, as a reader does, it
// allocates only the returned slice.
func (l *EventListener) Receive(ctx context.Context) ([]Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if l.paced != nil {
		return l.receivePaced(ctx)
	}
	l.watch(ctx)
	for {
		events, err := l.read()
		if err != nil && len(events) == 0 {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Set for another context that ended meanwhile. This
				// one may have ended since the look above, its deadline
				// just cleared: look again before reading.
				_ = l.c.SetReadDeadline(time.Time{})
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				continue
			}
		}
		if err != nil || len(events) > 0 {
			return events, err
		}
	}
}

// watch makes the end of ctx unblock a read (a read deadline in the past).
// A reader calls Receive with the same context again and again: the
// watch is kept from call to call and replaced only when the context's
// Done channel changes, so that a call costs no allocation
// (context.AfterFunc takes several). Channels are compared, not contexts:
// a context of a type that cannot be compared would make == panic.
func (l *EventListener) watch(ctx context.Context) {
	done := ctx.Done()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || (l.watching && done == l.watchedDone) {
		return
	}
	if l.unwatch != nil {
		l.unwatch()
		l.unwatch = nil
	}
	// Clear a deadline the previous context's end may have set (a paced
	// listener's wait has a descriptor of its own each time).
	if l.paced == nil {
		_ = l.c.SetReadDeadline(time.Time{})
	}
	l.watching, l.watchedDone = true, done
	if done == nil { // a context that never ends
		return
	}
	if p := l.paced; p != nil {
		l.unwatch = context.AfterFunc(ctx, p.interrupt)
		return
	}
	l.unwatch = context.AfterFunc(ctx, func() {
		_ = l.c.SetReadDeadline(time.Unix(1, 0)) // unblock the read
	})
}

// read waits until the socket is readable, then reads datagrams until none
// is left or the batch is full. Reading the file descriptor directly (the
// runtime's poller still does the waiting) takes no allocation per
// datagram, where the netlink package peeks at each one and allocates its
// buffer. The events are decoded into a buffer kept from call to call and
// returned in a slice of their own: one allocation per batch.
func (l *EventListener) read() ([]Event, error) {
	l.evs, l.rerr = l.evs[:0], nil
	err := l.rc.Read(l.readFn)
	if err != nil {
		return l.taken(), receiveError(err)
	}
	return l.taken(), l.rerr
}

// taken is the batch read into evs, in a slice of its own (nil if none).
func (l *EventListener) taken() []Event {
	if len(l.evs) == 0 {
		return nil
	}
	return slices.Clone(l.evs)
}

// readBatch is read's RawConn.Read callback (readFn: a method value made
// once, where a closure would be allocated per call), reading into evs
// and rerr.
func (l *EventListener) readBatch(fd uintptr) bool {
	for len(l.evs) < ReceiveBatch {
		n, errno := recvDatagram(fd, l.buf, false)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			// Nothing (more) queued: wait for readability unless
			// there is something to return.
			return len(l.evs) > 0
		case errno != 0:
			l.rerr = receiveError(errno)
			return true
		case n > len(l.buf):
			l.rerr = fmt.Errorf("pathmgr: receive events: datagram of %d bytes truncated to %d", n, len(l.buf))
			return true
		}
		var derr error
		if l.evs, derr = decodeDatagram(l.buf[:n], l.family.ID, l.evs); derr != nil {
			l.rerr = derr
			return true
		}
	}
	return true
}

// Only makes the kernel queue on the listener's socket only the events of
// the given types (a socket filter on the generic netlink command): the
// others cost the reader neither a wake-up nor room in the receive
// buffer. Without types it lets every event through again.
func (l *EventListener) Only(types ...EventType) error {
	var serr error
	err := l.control(func(fd uintptr) {
		if len(types) == 0 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
			if errors.Is(serr, unix.ENOENT) {
				serr = nil // none attached
			}
			return
		}
		prog := eventFilter(types)
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("pathmgr: filter events: %w", err)
	}
	return nil
}

// eventFilter is a classic BPF program that accepts a message whose
// generic netlink command (the byte after the 16-byte netlink header) is
// one of types and drops the others.
func eventFilter(types []EventType) []unix.SockFilter {
	n := len(types)
	prog := []unix.SockFilter{{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: nlmsgHdrLen}}
	for i, t := range types {
		// On a match jump to the accept at the end: past the rest of the
		// comparisons and the drop.
		prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: uint8(n - i), K: uint32(t)})
	}
	return append(prog,
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // drop
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // accept, whole
	)
}

// Backlog returns how much of the listener's receive buffer the events
// not yet received take, and how much it holds before the kernel drops
// events (ErrEventsLost), in the kernel's own count (SO_MEMINFO: the
// buffers queued, not the bytes of the events). A reader that puts off
// its reads, as the daemon does while its create thread serves a burst,
// looks here for the room left.
func (l *EventListener) Backlog() (queued, limit int, err error) {
	var m [unix.SK_MEMINFO_VARS]uint32
	var errno unix.Errno
	cerr := l.control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(m))
		_, _, errno = unix.RawSyscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&m[0])), uintptr(unsafe.Pointer(&size)), 0)
	})
	if cerr == nil && errno != 0 {
		cerr = errno
	}
	if cerr != nil {
		return 0, 0, fmt.Errorf("pathmgr: events socket's backlog: %w", cerr)
	}
	return int(m[unix.SK_MEMINFO_RMEM_ALLOC]), int(m[unix.SK_MEMINFO_RCVBUF]), nil
}

// Close releases the socket; a blocked Receive returns.
func (l *EventListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.unwatch != nil {
		l.unwatch()
	}
	if l.paced != nil {
		return l.paced.close()
	}
	return l.c.Close()
}
