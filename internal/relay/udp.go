package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gigapath/gigapath/internal/relay/socks5"
)

// udpAssociate serves UDP ASSOCIATE (RFC 1928 section 7): a UDP socket on
// the control connection's local address relays datagrams between the
// client and the destinations it names, for as long as the TCP control
// connection stays open. Only datagrams from the client's IP (and from the
// port it announced, when it announced one) are relayed out.
//
// Without an upstream the relay resolves and sends to the destinations
// itself (udpDirect). With one, it opens its own association on the
// upstream proxy and passes the client's datagrams, SOCKS header and all,
// to the upstream's UDP relay (udpUpstream).
func (c *conn) udpAssociate(log *slog.Logger, req socks5.Request) {
	a := c.newAssociation()
	defer a.wait()
	if c.s.pol.upstream != nil {
		c.udpUpstream(log, a, req)
	} else {
		c.udpDirect(log, a, req)
	}
}

// association is the state every UDP ASSOCIATE shares: a context that its
// end cancels (so a name lookup in flight ends with it), the sockets and
// connections its end closes, the goroutines to wait for, and the idle
// timer across both directions.
type association struct {
	ctx    context.Context
	cancel context.CancelFunc
	idle   time.Duration
	last   atomic.Int64 // unix nanos of the last datagram in any direction
	wg     sync.WaitGroup

	mu      sync.Mutex
	ended   bool
	closers []io.Closer

	up, down atomic.Int64 // datagrams relayed, for the closing log line
}

func (c *conn) newAssociation() *association {
	ctx, cancel := context.WithCancel(c.ctx) // Shutdown's abort cancels c.ctx
	a := &association{ctx: ctx, cancel: cancel, idle: c.s.cfg.IdleTimeout}
	a.last.Store(time.Now().UnixNano())
	return a
}

// hold makes end close cs (at once if the association already ended).
func (a *association) hold(cs ...io.Closer) {
	a.mu.Lock()
	ended := a.ended
	if !ended {
		a.closers = append(a.closers, cs...)
	}
	a.mu.Unlock()
	if ended {
		for _, c := range cs {
			c.Close()
		}
	}
}

// end cancels the association's context and closes everything it holds;
// every loop and watcher returns soon after. Safe to call many times.
func (a *association) end() {
	a.cancel()
	a.mu.Lock()
	cs := a.closers
	a.closers, a.ended = nil, true
	a.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// wait ends the association and waits for its goroutines.
func (a *association) wait() {
	a.end()
	a.wg.Wait()
}

// watch ends the association when ctl ends: EOF, error or close.
func (a *association) watch(ctl net.Conn) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		io.Copy(io.Discard, ctl)
		a.end()
	}()
}

// read reads one datagram from pc. With an idle timeout, a deadline hit
// while the other direction moved a datagram recently is not idleness.
func (a *association) read(pc *net.UDPConn, buf []byte) (int, netip.AddrPort, error) {
	for {
		if a.idle > 0 {
			pc.SetReadDeadline(time.Now().Add(a.idle))
		}
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err == nil {
			a.last.Store(time.Now().UnixNano())
			return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
		}
		if a.idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, a.last.Load())) < a.idle {
			continue
		}
		return 0, netip.AddrPort{}, err
	}
}

// udpClient is the client side of an association: datagrams count as the
// client's only from the control connection's peer IP, from the port the
// client announced (when it announced one), and, once one was accepted,
// from that same address and port only.
type udpClient struct {
	ip   netip.Addr
	port uint16 // announced port, 0: any
	mu   sync.Mutex
	ap   netip.AddrPort // fixed by the announcement or the first datagram
}

func newUDPClient(peer netip.Addr, announced socks5.Addr) *udpClient {
	u := &udpClient{ip: peer, port: announced.Port}
	if announced.Name == "" && announced.Port != 0 && announced.IP.IsValid() && !announced.IP.IsUnspecified() {
		u.ap = netip.AddrPortFrom(announced.IP.Unmap(), announced.Port)
	}
	return u
}

// accept reports whether from is the client, and learns its port.
func (u *udpClient) accept(from netip.AddrPort) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if from.Addr() != u.ip || (u.ap.IsValid() && from != u.ap) || (u.port != 0 && from.Port() != u.port) {
		return false
	}
	u.ap = from
	return true
}

// addr is the client's address, invalid until it is known.
func (u *udpClient) addr() netip.AddrPort {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ap
}

// listenUDP opens the client-facing UDP socket on the control
// connection's local address.
func (c *conn) listenUDP() (*net.UDPConn, error) {
	local := c.c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
}

// started replies success with the client-facing socket's address and
// lets the control connection live without a deadline.
func (c *conn) started(pc *net.UDPConn) error {
	if err := c.reply(socks5.Succeeded, socks5.AddrFromNet(pc.LocalAddr())); err != nil {
		return err
	}
	c.s.m.handshake.Observe(time.Since(c.start).Seconds())
	c.c.SetDeadline(time.Time{})
	return nil
}

func (c *conn) udpClosed(log *slog.Logger, a *association, err error) {
	if err != nil && !errors.Is(err, net.ErrClosed) {
		log.Info("relay udp end", "err", err)
	}
	log.Info("relay udp closed", "up_datagrams", a.up.Load(), "down_datagrams", a.down.Load(), "duration", time.Since(c.start).Round(time.Millisecond))
}

// udpDirect relays between the client and the destinations: names resolve
// here, the destination policy applies to the address used, and datagrams
// are relayed back only from destinations the client has sent to.
// Destinations of the control connection's family are sent to from the
// client-facing socket (so from the relay's address the client knows);
// those of the other family from a second socket, opened on first use,
// whose source address the routing picks.
func (c *conn) udpDirect(log *slog.Logger, a *association, req socks5.Request) {
	s := c.s
	pc, err := c.listenUDP()
	if err != nil {
		c.reply(socks5.GeneralFailure, socks5.Addr{})
		log.Warn("relay udp listen", "err", err)
		return
	}
	a.hold(pc, c.c)
	if err := c.started(pc); err != nil {
		return
	}
	a.watch(c.c)
	d := &udpDests{
		c: c, a: a, pc: pc, cl: newUDPClient(c.client, req.Addr),
		is4:       pc.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap().Is4(),
		contacted: map[netip.AddrPort]struct{}{},
	}
	names := map[string]netip.Addr{}
	buf := make([]byte, 64<<10)
	out := make([]byte, 0, 64<<10+262)
	for {
		n, from, err := a.read(pc, buf)
		if err != nil {
			c.udpClosed(log, a, err)
			return
		}
		if !d.cl.accept(from) {
			out = d.back(out, from, buf[:n])
			continue
		}
		h, payload, err := socks5.ParseUDP(buf[:n])
		if err != nil || h.Frag != 0 {
			s.m.udp.WithLabelValues("dropped").Inc()
			continue
		}
		dst, ok := c.udpDest(a, h.Addr, d.is4, names)
		if !ok {
			s.m.udp.WithLabelValues("dropped").Inc()
			continue
		}
		if err := d.send(payload, dst); err != nil {
			s.m.udp.WithLabelValues("dropped").Inc()
			continue
		}
		s.m.udp.WithLabelValues("up").Inc()
		a.up.Add(1)
	}
}

// udpDests is the destination side of a direct association.
type udpDests struct {
	c   *conn
	a   *association
	pc  *net.UDPConn // client-facing; sends to destinations of family is4
	is4 bool
	cl  *udpClient

	other *net.UDPConn // the other family; only the loop opens it

	mu        sync.Mutex
	contacted map[netip.AddrPort]struct{}
}

// send sends payload to dst from the socket of dst's family.
func (d *udpDests) send(payload []byte, dst netip.AddrPort) error {
	d.mu.Lock()
	if len(d.contacted) < 1024 {
		d.contacted[dst] = struct{}{}
	}
	d.mu.Unlock()
	if dst.Addr().Is4() == d.is4 {
		_, err := d.pc.WriteToUDPAddrPort(payload, dst)
		return err
	}
	if d.other == nil {
		network := "udp6"
		if dst.Addr().Is4() {
			network = "udp4"
		}
		o, err := net.ListenUDP(network, nil)
		if err != nil {
			return err
		}
		d.other = o
		d.a.hold(o)
		d.a.wg.Add(1)
		go func() {
			defer d.a.wg.Done()
			defer d.a.end()
			buf := make([]byte, 64<<10)
			out := make([]byte, 0, 64<<10+262)
			for {
				n, from, err := d.a.read(o, buf)
				if err != nil {
					return
				}
				out = d.back(out, from, buf[:n])
			}
		}()
	}
	_, err := d.other.WriteToUDPAddrPort(payload, dst)
	return err
}

// back relays a datagram from a destination the client has sent to back
// to the client, wrapped; others are dropped. out is the scratch buffer.
func (d *udpDests) back(out []byte, from netip.AddrPort, payload []byte) []byte {
	m := d.c.s.m
	d.mu.Lock()
	_, ok := d.contacted[from]
	d.mu.Unlock()
	to := d.cl.addr()
	if !ok || !to.IsValid() {
		m.udp.WithLabelValues("dropped").Inc()
		return out
	}
	out = socks5.AppendUDP(out[:0], socks5.UDPHeader{Addr: socks5.Addr{IP: from.Addr(), Port: from.Port()}}, payload)
	if _, err := d.pc.WriteToUDPAddrPort(out, to); err == nil {
		m.udp.WithLabelValues("down").Inc()
		d.a.down.Add(1)
	}
	return out
}

// udpDest picks where a datagram for d goes: the first address (of d's
// name, resolved under the association's context and the dial timeout)
// that the destination policy allows, preferring the control connection's
// family (IPv4 when is4). Resolved names are cached for the association.
func (c *conn) udpDest(a *association, d socks5.Addr, is4 bool, names map[string]netip.Addr) (netip.AddrPort, bool) {
	s := c.s
	if d.Name == "" {
		ip := d.IP.Unmap()
		if !s.pol.destAllowed(ip, s.own.contains) {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(ip, d.Port), true
	}
	if ip, ok := names[d.Name]; ok {
		return netip.AddrPortFrom(ip, d.Port), ip.IsValid()
	}
	ctx, cancel := context.WithTimeout(a.ctx, s.cfg.DialTimeout)
	ips, err := s.resolver.LookupNetIP(ctx, "ip", d.Name)
	cancel()
	if err != nil {
		return netip.AddrPort{}, false
	}
	var pick netip.Addr
	for _, ip := range ips {
		ip = ip.Unmap()
		if s.pol.destAllowed(ip, s.own.contains) && (!pick.IsValid() || ip.Is4() == is4 && pick.Is4() != is4) {
			pick = ip
		}
	}
	if len(names) < 1024 {
		names[d.Name] = pick
	}
	return netip.AddrPortFrom(pick, d.Port), pick.IsValid()
}

// udpUpstream chains the association: it opens a control connection to
// the upstream proxy (MPTCP, with the upstream credentials) and asks UDP
// ASSOCIATE there, then relays between the client and the upstream's UDP
// relay. Datagrams keep their SOCKS header both ways: names go up
// unresolved, replies come back already wrapped. The local destination
// policy still applies to IP destinations (names are checked upstream,
// after it resolves them). Either control connection ending ends both
// associations.
func (c *conn) udpUpstream(log *slog.Logger, a *association, req socks5.Request) {
	s := c.s
	ctx, cancel := context.WithTimeout(a.ctx, s.cfg.DialTimeout)
	defer cancel()
	// 0.0.0.0:0: the address we send from is not known to us behind a NAT;
	// the upstream takes the control connection's peer IP and learns the
	// port from the first datagram.
	up, bound, rep, err := s.upstreamRequest(ctx, socks5.Request{Cmd: socks5.CmdUDPAssociate, Addr: socks5.Addr{IP: netip.IPv4Unspecified()}})
	if err != nil {
		c.reply(rep, socks5.Addr{})
		log.Info("relay refused", "reply", rep.String(), "err", err)
		return
	}
	if !c.setDst(up) { // aborted meanwhile
		up.Close()
		return
	}
	a.hold(up, c.c)
	relayAddr, err := s.upstreamUDPAddr(ctx, up, bound)
	var upc *net.UDPConn
	if err == nil {
		upc, err = dialUpstreamUDP(up, relayAddr)
	}
	if err != nil {
		c.reply(socks5.GeneralFailure, socks5.Addr{})
		log.Warn("relay udp upstream", "err", err)
		return
	}
	a.hold(upc)
	pc, err := c.listenUDP()
	if err != nil {
		c.reply(socks5.GeneralFailure, socks5.Addr{})
		log.Warn("relay udp listen", "err", err)
		return
	}
	a.hold(pc)
	cancel()
	if err := c.started(pc); err != nil {
		return
	}
	log = log.With("upstream_udp", relayAddr.String())
	a.watch(c.c)
	a.watch(up)
	cl := newUDPClient(c.client, req.Addr)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer a.end()
		c.udpFromUpstream(a, upc, pc, cl)
	}()
	err = c.udpToUpstream(a, pc, upc, cl)
	a.end()
	c.udpClosed(log, a, err)
}

// udpToUpstream passes the client's datagrams, unchanged, to the
// upstream's UDP relay; it returns when pc is closed or fails.
func (c *conn) udpToUpstream(a *association, pc, upc *net.UDPConn, cl *udpClient) error {
	s := c.s
	buf := make([]byte, 64<<10)
	for {
		n, from, err := a.read(pc, buf)
		if err != nil {
			return err
		}
		if !cl.accept(from) {
			s.m.udp.WithLabelValues("dropped").Inc()
			continue
		}
		h, _, err := socks5.ParseUDP(buf[:n])
		if err != nil || h.Frag != 0 || !s.upstreamDestAllowed(h.Addr) {
			s.m.udp.WithLabelValues("dropped").Inc()
			continue
		}
		_, err = upc.Write(buf[:n])
		switch {
		case err == nil:
			s.m.udp.WithLabelValues("up").Inc()
			a.up.Add(1)
		case errors.Is(err, syscall.ECONNREFUSED):
			// ICMP port unreachable for an earlier datagram: this one
			// is lost, the association is not.
			s.m.udp.WithLabelValues("dropped").Inc()
		default:
			// The socket can no longer reach the upstream, typically
			// because the address it sends from (the MPTCP control
			// connection's first subflow's) went away with its link,
			// while the control connection lives on another path. The
			// upstream accepts datagrams from that address only, so end
			// the association: the client associates again.
			s.m.udp.WithLabelValues("dropped").Inc()
			return fmt.Errorf("send to the upstream's UDP relay: %w", err)
		}
	}
}

// upstreamDestAllowed applies the local destination policy to a CONNECT
// or a datagram passed to the upstream: IP destinations, and names that
// are IP literals, are checked here; real names are resolved and checked
// by the upstream.
func (s *Server) upstreamDestAllowed(a socks5.Addr) bool {
	ip := a.IP
	if a.Name != "" {
		lit, err := netip.ParseAddr(a.Name)
		if err != nil {
			return true
		}
		ip = lit
	}
	return s.pol.destAllowed(ip.Unmap(), s.own.contains)
}

// udpFromUpstream passes datagrams from the upstream's UDP relay (the
// only source a connected socket receives from), already wrapped in their
// SOCKS header, to the client.
func (c *conn) udpFromUpstream(a *association, upc, pc *net.UDPConn, cl *udpClient) {
	s := c.s
	buf := make([]byte, 64<<10)
	for {
		n, _, err := a.read(upc, buf)
		if errors.Is(err, syscall.ECONNREFUSED) {
			continue // ICMP port unreachable for an earlier datagram
		}
		if err != nil {
			return
		}
		h, _, err := socks5.ParseUDP(buf[:n])
		to := cl.addr()
		if err != nil || h.Frag != 0 || !to.IsValid() {
			s.m.udp.WithLabelValues("dropped").Inc()
			continue
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:n], to); err == nil {
			s.m.udp.WithLabelValues("down").Inc()
			a.down.Add(1)
		}
	}
}

// upstreamUDPAddr is where the upstream relays UDP: its BND.ADDR and
// BND.PORT, with an unspecified address (0.0.0.0, ::) read as the control
// connection's remote address (RFC 1928 practice), as is one of a narrower
// scope than that remote address (see narrower), and a name resolved under
// ctx.
func (s *Server) upstreamUDPAddr(ctx context.Context, up net.Conn, bound socks5.Addr) (netip.AddrPort, error) {
	if bound.Port == 0 {
		return netip.AddrPort{}, fmt.Errorf("upstream %s announced UDP relay %s: port 0", s.pol.upstream.addr, bound)
	}
	ip := bound.IP
	if bound.Name != "" {
		ips, err := s.resolver.LookupNetIP(ctx, "ip", bound.Name)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("upstream %s announced UDP relay %s: %w", s.pol.upstream.addr, bound, err)
		}
		ip = ips[0]
	}
	ip = ip.Unmap()
	var remote netip.Addr
	if ta, ok := up.RemoteAddr().(*net.TCPAddr); ok {
		remote = ta.AddrPort().Addr().Unmap()
	}
	if !ip.IsValid() || ip.IsUnspecified() || narrower(ip, remote) {
		if !remote.IsValid() {
			return netip.AddrPort{}, fmt.Errorf("upstream %s announced UDP relay %s and its control connection has no IP address", s.pol.upstream.addr, bound)
		}
		ip = remote
	}
	return netip.AddrPortFrom(ip, bound.Port), nil
}

// narrower reports whether an announced BND.ADDR has a narrower scope than
// the address the control connection reached the upstream at, so it cannot
// be where that upstream relays UDP for us: a loopback, link-local or
// multicast address from a remote upstream (which would make us send the
// client's datagrams to a local service), or a private address from an
// upstream reached at a public one (its own address behind a NAT).
func narrower(bnd, remote netip.Addr) bool {
	if !remote.IsValid() {
		return false
	}
	switch {
	case bnd.IsMulticast():
		return true
	case bnd.IsLoopback():
		return !remote.IsLoopback()
	case bnd.IsLinkLocalUnicast():
		return !remote.IsLoopback() && !remote.IsLinkLocalUnicast()
	case bnd.IsPrivate():
		return !remote.IsLoopback() && !remote.IsLinkLocalUnicast() && !remote.IsPrivate()
	}
	return false
}

// dialUpstreamUDP opens the upstream-facing UDP socket, connected to the
// upstream's UDP relay and, when the families match, sending from the
// control connection's local address: the upstream accepts datagrams from
// the control connection's peer IP only, and with source routing (one
// table per link) another source could take another link.
func dialUpstreamUDP(up net.Conn, relayAddr netip.AddrPort) (*net.UDPConn, error) {
	var laddr *net.UDPAddr
	if ta, ok := up.LocalAddr().(*net.TCPAddr); ok {
		if local := ta.AddrPort().Addr().Unmap(); local.Is4() == relayAddr.Addr().Is4() {
			laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
		}
	}
	upc, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(relayAddr))
	if err != nil {
		return nil, fmt.Errorf("upstream UDP relay %s: %w", relayAddr, err)
	}
	return upc, nil
}
