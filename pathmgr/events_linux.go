//go:build linux

package pathmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

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
	family genetlink.Family
	mu     sync.Mutex // guards closed
	closed bool
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
	return &EventListener{c: c, family: f}, nil
}

// Receive blocks until events arrive or ctx is done, and returns them in
// the order the kernel sent them. On a receive-buffer overflow it returns an
// error matching ErrEventsLost (and unix.ENOBUFS); the listener keeps
// working and the next call receives newer events. If a message cannot be
// decoded, the events before it are returned together with the error.
// Receive must not be called concurrently with itself.
func (l *EventListener) Receive(ctx context.Context) ([]Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Clear a deadline left by an earlier cancellation that raced with a
	// successful read.
	_ = l.c.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() {
		_ = l.c.SetReadDeadline(time.Unix(1, 0)) // unblock the read
	})
	defer stop()
	for {
		msgs, _, err := l.c.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				_ = l.c.SetReadDeadline(time.Time{})
				continue
			}
			return nil, receiveError(err)
		}
		events := make([]Event, 0, len(msgs))
		for _, m := range msgs {
			ev, err := decodeEvent(m.Header.Command, m.Data)
			if err != nil {
				return events, err
			}
			events = append(events, ev)
		}
		if len(events) > 0 {
			return events, nil
		}
	}
}

// Close releases the socket; a blocked Receive returns.
func (l *EventListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.c.Close()
}
