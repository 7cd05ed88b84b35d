package relay

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The kernel gives a connection it accepts the packet scheduler of the
// listening socket, chosen when that socket was created
// (mptcp_sk_clone_init copies the listener's), not the namespace's current
// net.mptcp.scheduler. A relay that keeps one listener for its whole life
// therefore never follows `gigapath sched use` or a daemon's `scheduler:`,
// and keeps handing out a BPF scheduler after it was unloaded (the listener
// holds a reference on it).
//
// followListener is a net.Listener that follows the namespace instead: it
// watches the effective scheduler (net.mptcp.scheduler if it is registered,
// else "default", which is what a new socket gets) and, when it changes,
// opens a new listener on the same address (SO_REUSEPORT, set on every
// listener it opens) and retires the old one: for retireDrain it still
// accepts what reaches it (the kernel spreads new connections over both),
// then closes it. Connections accepted earlier keep their scheduler until
// they end. A handshake still in progress on the old listener when it
// closes is reset unless net.ipv4.tcp_migrate_req is 1 in the namespace
// (the kernel then moves it to the new listener); renewals are rare (an
// operator changing the scheduler), and the relay logs that hint.
type followListener struct {
	open     func() (net.Listener, error) // a new listener on the address
	read     func() (string, error)       // the effective scheduler
	migrate  func() bool                  // net.ipv4.tcp_migrate_req is on
	interval time.Duration
	log      *slog.Logger
	renewed  func(from, to string) // metrics hook, may be nil

	accepted chan acceptResult
	done     chan struct{}
	closeErr error
	once     sync.Once
	wg       sync.WaitGroup

	mu    sync.Mutex
	cur   *followed
	sched string
}

// followed is one of the listeners: the current one, or one being retired.
type followed struct {
	ln      net.Listener
	retired atomic.Bool
}

type acceptResult struct {
	c   net.Conn
	err error
}

// retireDrain is how long a retired listener keeps accepting before it is
// closed.
const retireDrain = 100 * time.Millisecond

func newFollowListener(open func() (net.Listener, error), read func() (string, error), interval time.Duration, log *slog.Logger, renewed func(from, to string)) (*followListener, error) {
	sched, err := read()
	if err != nil {
		return nil, err
	}
	ln, err := open()
	if err != nil {
		return nil, err
	}
	f := &followListener{open: open, read: read, migrate: migrateReq, interval: interval, log: log, renewed: renewed,
		accepted: make(chan acceptResult), done: make(chan struct{}), cur: &followed{ln: ln}, sched: sched}
	f.wg.Add(2)
	go f.acceptLoop(f.cur)
	go f.watch()
	return f, nil
}

type deadliner interface{ SetDeadline(time.Time) error }

func setDeadline(ln net.Listener, t time.Time) {
	if d, ok := ln.(deadliner); ok {
		d.SetDeadline(t)
	}
}

// acceptLoop hands e's connections to Accept. Once e is retired it keeps
// accepting until its deadline (retireDrain after retirement), then closes.
func (f *followListener) acceptLoop(e *followed) {
	defer f.wg.Done()
	defer e.ln.Close()
	for {
		c, err := e.ln.Accept()
		var ne net.Error
		timeout := err != nil && errors.As(err, &ne) && ne.Timeout()
		switch {
		case err != nil && e.retired.Load():
			return // drained (deadline) or closed
		case err != nil && f.closing():
			return
		}
		select {
		case f.accepted <- acceptResult{c, err}:
		case <-f.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil && !timeout && !errors.Is(err, errTooManyFiles) {
			return // Serve returns this error
		}
	}
}

func (f *followListener) closing() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// watch polls the effective scheduler and renews the listener when it
// changes. A failed renewal keeps the old listener (and is tried again at
// the next poll).
func (f *followListener) watch() {
	defer f.wg.Done()
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-f.done:
			return
		case <-t.C:
		}
		now, err := f.read()
		f.mu.Lock()
		was := f.sched
		f.mu.Unlock()
		if err != nil || now == was {
			continue
		}
		ln, err := f.open()
		if err != nil {
			f.log.Warn("relay: the packet scheduler changed but no new listener could be opened; new connections keep the old scheduler",
				"from", was, "to", now, "err", err)
			continue
		}
		e := &followed{ln: ln}
		f.mu.Lock()
		if f.closing() {
			f.mu.Unlock()
			ln.Close()
			return
		}
		old := f.cur
		f.cur, f.sched = e, now
		f.wg.Add(1)
		go f.acceptLoop(e)
		// old accepts for retireDrain more, then its loop closes it.
		old.retired.Store(true)
		setDeadline(old.ln, time.Now().Add(retireDrain))
		f.mu.Unlock()
		f.log.Info("relay: listener renewed for the namespace's packet scheduler", "addr", ln.Addr().String(), "from", was, "to", now)
		if !f.migrate() {
			f.log.Info("relay: handshakes in progress on the retired listener are reset when it closes; net.ipv4.tcp_migrate_req=1 in this namespace moves them to the new one")
		}
		if f.renewed != nil {
			f.renewed(was, now)
		}
	}
}

// Accept waits for the next connection from the current listener or from
// one being retired.
func (f *followListener) Accept() (net.Conn, error) {
	select {
	case r := <-f.accepted:
		return r.c, r.err
	case <-f.done:
		return nil, net.ErrClosed
	}
}

// Close closes every listener, stops watching and waits for its
// goroutines.
func (f *followListener) Close() error {
	f.once.Do(func() {
		f.mu.Lock()
		close(f.done)
		cur := f.cur
		f.mu.Unlock()
		f.closeErr = cur.ln.Close()
		f.wg.Wait()
	})
	return f.closeErr
}

// Addr is the listening address.
func (f *followListener) Addr() net.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur.ln.Addr()
}

// Scheduler is the packet scheduler new connections get.
func (f *followListener) Scheduler() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sched
}

// effectiveScheduler is the scheduler a socket created now in this network
// namespace gets: net.mptcp.scheduler when the kernel has it registered,
// else the built-in "default" (what mptcp_init_sock falls back to). Kernels
// before 6.3 have no sysctl and only the built-in scheduler.
func effectiveScheduler() (string, error) {
	cur, err := os.ReadFile("/proc/sys/net/mptcp/scheduler")
	if errors.Is(err, os.ErrNotExist) {
		return "default", nil
	}
	if err != nil {
		return "", err
	}
	avail, err := os.ReadFile("/proc/sys/net/mptcp/available_schedulers")
	if err != nil {
		return "", err
	}
	name := strings.TrimSpace(string(cur))
	for _, a := range strings.Fields(string(avail)) {
		if a == name {
			return name, nil
		}
	}
	return "default", nil
}

// migrateReq reports whether the kernel moves handshakes in progress from a
// closing listener to another one of its SO_REUSEPORT group.
func migrateReq() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}
