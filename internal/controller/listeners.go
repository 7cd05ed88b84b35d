package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr/netns"
)

// Listeners behind announced ports. The kernel hands a join SYN to its
// connection only through a listening MPTCP socket on the SYN's
// destination: a join to the connection's own port goes through the
// connection's listener (a wildcard one serves every address), but a join
// to another port is accepted only through a listener bound to exactly the
// announced address and port (subflow_check_req compares the listener's
// own address with the connection's announcements; with a wildcard
// listener on the port it is refused, MPTcpExtMismatchPortSynRx). The
// in-kernel PM opens such a listener for a signal endpoint with a port;
// the userspace PM opens none. So with the userspace PM on the server side
// the daemon keeps one on every address:port it announces with a port
// (announce[].port), as mptcpd does, while the announcement stands, unless
// another socket listens there already.
//
// A join never leaves such a listener's accept queue (the kernel attaches
// it to its connection), so the listener hands out no connection and its
// packet scheduler is never used: a joined subflow is scheduled by the
// connection's scheduler, chosen when its own listener accepted it. That
// is why these listeners, unlike the relay's (internal/relay,
// schedfollow.go), need not follow net.mptcp.scheduler. A new connection
// (an MP_CAPABLE or plain TCP SYN) to such a port is accepted by the
// kernel and then closed with a reset at once
// (gigapath_join_port_refused_total), so it cannot fill the accept queue,
// which would make the kernel drop joins too.

// listenRetry is how long a listener that could not be opened waits
// before the next try (another socket holds the port, the address is
// gone).
const listenRetry = 10 * time.Second

// joinListeners are the listeners the daemon holds, by address:port.
type joinListeners struct {
	ns  string
	log *slog.Logger
	m   *metrics.Metrics
	// listen opens an MPTCP listener on ap (zone: the interface of a
	// link-local address) in the namespace ns.
	listen func(ns string, ap netip.AddrPort, zone string) (net.Listener, error)
	held   map[netip.AddrPort]net.Listener
	// failed are the address:ports whose listener could not be opened:
	// not tried again before at, and logged only when the error changes.
	failed map[netip.AddrPort]listenFailure
	wg     sync.WaitGroup
}

type listenFailure struct {
	at  time.Time
	err string
}

func newJoinListeners(ns string, log *slog.Logger, m *metrics.Metrics) *joinListeners {
	return &joinListeners{ns: ns, log: log, m: m, listen: listenMPTCP,
		held: map[netip.AddrPort]net.Listener{}, failed: map[netip.AddrPort]listenFailure{}}
}

// listenWant lists the address:ports the policy announces with a port now,
// each with the zone a link-local one binds with: every `address:` entry
// with a port, and every address of an
// `interface:` entry with a port while the interface counts as up (as
// announceWant: the candidates it picks from). Only the userspace PM on
// the server side: the in-kernel PM listens for its signal endpoints
// itself.
func (c *Controller) listenWant() map[netip.AddrPort]string {
	out := map[netip.AddrPort]string{}
	if c.pol.Side != policy.SideServer || c.pol.PathManager != policy.PMUserspace {
		return out
	}
	for _, a := range c.pol.Announce {
		if a.Port == 0 {
			continue
		}
		if a.Address.IsValid() {
			// Tried whether or not an interface shows it: an address on
			// the loopback (a node address, a VIP) is on none that
			// netmon reports. One that is not here fails to bind
			// (EADDRNOTAVAIL) and is tried again.
			out[netip.AddrPortFrom(a.Address.Unmap(), a.Port)] = ""
			continue
		}
		l, ok := c.netSt.LinkByName(a.Interface)
		if !ok || !c.announceUp(l) {
			continue
		}
		for _, x := range c.netSt.Addrs[l.Index] {
			addr, zone := x.Prefix.Addr().Unmap(), ""
			if addr.IsLinkLocalUnicast() {
				zone = l.Name
			}
			out[netip.AddrPortFrom(addr, a.Port)] = zone
		}
	}
	return out
}

// syncListeners opens the listeners the policy wants and closes the
// others (loop goroutine).
func (c *Controller) syncListeners() {
	c.lst.sync(c.listenWant(), c.now())
}

// sync makes the held listeners want: it closes those not wanted and
// opens the missing ones, except those that failed less than listenRetry
// ago.
func (j *joinListeners) sync(want map[netip.AddrPort]string, now time.Time) {
	for _, ap := range slices.SortedFunc(maps.Keys(j.held), netip.AddrPort.Compare) {
		if _, ok := want[ap]; ok {
			continue
		}
		j.held[ap].Close()
		delete(j.held, ap)
		j.log.Info("join listener closed: no longer announced", "listen", ap)
	}
	for ap := range j.failed {
		if _, ok := want[ap]; !ok {
			delete(j.failed, ap)
		}
	}
	for _, ap := range slices.SortedFunc(maps.Keys(want), netip.AddrPort.Compare) {
		if _, ok := j.held[ap]; ok {
			continue
		}
		f, failed := j.failed[ap]
		if failed && now.Before(f.at.Add(listenRetry)) {
			continue
		}
		ln, err := j.listen(j.ns, ap, want[ap])
		if err != nil {
			msg := err.Error()
			if !failed || f.err != msg {
				if errors.Is(err, syscall.EADDRINUSE) {
					j.log.Info("join listener not opened: another socket listens on the port (on this address, or on the wildcard address, which accepts no join to another port than the connection's); tried again every 10 s",
						"listen", ap, "err", err)
				} else {
					j.log.Warn("join listener not opened: joins to the announced address and port are refused until it is; tried again every 10 s",
						"listen", ap, "err", err)
				}
			}
			j.failed[ap] = listenFailure{at: now, err: msg}
			continue
		}
		if failed {
			delete(j.failed, ap)
		}
		j.held[ap] = ln
		j.log.Info("join listener open", "listen", ap)
		j.wg.Add(1)
		go j.refuseConns(ln, ap)
	}
	j.m.JoinListeners.Set(float64(len(j.held)))
}

// refuseConns closes every connection the kernel queues on ln (a new
// connection, not a join) with a reset, until ln is closed.
func (j *joinListeners) refuseConns(ln net.Listener, ap netip.AddrPort) {
	defer j.wg.Done()
	for {
		conn, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of descriptors or memory: the queue waits.
			j.log.Warn("join listener accept", "listen", ap, "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		j.log.Debug("a new connection to a port for joins only: reset", "listen", ap, "from", conn.RemoteAddr())
		conn.Close()
		j.m.JoinPortRefused.Inc()
	}
}

// hold duplicates the descriptors of the listeners held (without
// close-on-exec) for an upgrade in place: the sockets keep listening
// through the exec, joins to them keep being accepted, and the new binary
// adopts them (adopt).
func (j *joinListeners) hold() []int {
	var fds []int
	for ap, ln := range j.held {
		tl, ok := ln.(*net.TCPListener)
		if !ok {
			continue
		}
		f, err := tl.File()
		if err != nil {
			j.log.Warn("upgrade: join listener not held", "listen", ap, "err", err)
			continue
		}
		fd, err := unix.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			j.log.Warn("upgrade: join listener not held", "listen", ap, "err", err)
			continue
		}
		fds = append(fds, fd)
	}
	return fds
}

// adopt takes over the listeners a predecessor held across an upgrade
// (Config.HeldListeners); sync then keeps those still wanted and closes the
// others.
func (j *joinListeners) adopt(fds []int) {
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "join-listener")
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			j.log.Warn("held join listener from the previous binary", "fd", fd, "err", err)
			continue
		}
		ap, err := netip.ParseAddrPort(ln.Addr().String())
		if err != nil {
			ln.Close()
			continue
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
		if _, dup := j.held[ap]; dup {
			ln.Close()
			continue
		}
		j.held[ap] = ln
		j.log.Info("join listener taken over from the previous binary", "listen", ap)
		j.wg.Add(1)
		go j.refuseConns(ln, ap)
	}
}

// close closes every listener and waits for their goroutines.
func (j *joinListeners) close() {
	for ap, ln := range j.held {
		ln.Close()
		delete(j.held, ap)
	}
	j.wg.Wait()
	j.m.JoinListeners.Set(0)
}

// listenMPTCP opens an MPTCP listening socket bound to ap in the network
// namespace ns ("" = ours). Go's listener sets SO_REUSEADDR, never
// SO_REUSEPORT: a port another socket listens on is refused (EADDRINUSE)
// rather than shared, so no new connection meant for that socket lands
// here.
func listenMPTCP(ns string, ap netip.AddrPort, zone string) (net.Listener, error) {
	var ln net.Listener
	err := netns.Do(ns, func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		host := ap.Addr().String()
		if zone != "" {
			host += "%" + zone
		}
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, strconv.Itoa(int(ap.Port()))))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", ap, err)
	}
	return ln, nil
}
