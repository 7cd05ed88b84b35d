// Package relay is gigapath's SOCKS5 relay (RFC 1928, RFC 1929): it
// listens with MPTCP, applies the client and destination policy, dials the
// destination (or an upstream SOCKS5 proxy in client mode) and forwards both
// directions with splice and half-close.
//
// The data path, top to bottom: accept (serve) → limits → handshake
// (greeting, auth, request) → policy → dial → reply → forward (pipe) →
// metrics at close.
package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gigapath/gigapath/internal/relay/socks5"
	"github.com/prometheus/client_golang/prometheus"
)

// Server is a SOCKS5 relay. Create it with New.
type Server struct {
	cfg    Config
	pol    *policy
	log    *slog.Logger
	m      *metrics
	dialer net.Dialer
	upDial net.Dialer // to the upstream proxy: always MPTCP
	// resolver resolves destination names (and the upstream's, through
	// upDial); every lookup runs under a context that Shutdown's abort and
	// the end of a UDP association cancel.
	resolver *net.Resolver
	own      ownAddrs

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	ccControl func(network, address string, c syscall.RawConn) error // TCP_CONGESTION, or nil
	perClient map[netip.Addr]int
	draining  bool
	idle      chan struct{} // closed when conns drops to 0 while draining
	wg        sync.WaitGroup
}

// New validates cfg and returns a server. A non-loopback listen address
// without credentials or a client allow-list gives an error wrapping
// ErrOpenRelay.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	cfg.setDefaults()
	pol, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, pol: pol, log: logger, m: newMetrics(),
		dialer:    net.Dialer{Timeout: cfg.DialTimeout},
		upDial:    net.Dialer{Timeout: cfg.DialTimeout},
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
		perClient: map[netip.Addr]int{},
	}
	s.dialer.SetMultipathTCP(cfg.UpstreamMPTCP)
	s.upDial.SetMultipathTCP(true)
	if cfg.Congestion != "" {
		if s.ccControl, err = congestionControl(cfg.Congestion); err != nil {
			return nil, err
		}
		s.dialer.Control = s.ccControl
		s.upDial.Control = s.ccControl
	}
	s.setResolver(net.DefaultResolver)
	return s, nil
}

// setResolver makes r resolve every name the relay looks up (tests inject
// one whose server never answers).
func (s *Server) setResolver(r *net.Resolver) {
	s.resolver = r
	s.dialer.Resolver = r
	s.upDial.Resolver = r
}

// Collector returns the relay's Prometheus metrics.
func (s *Server) Collector() prometheus.Collector { return s.m }

// Config returns the configuration in use, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// Listen opens the configured listen address (MPTCP unless NoMPTCP). An
// MPTCP listener follows the namespace's packet scheduler (see
// Config.SchedulerPoll).
func (s *Server) Listen(ctx context.Context) (net.Listener, error) {
	if s.cfg.NoMPTCP || s.cfg.SchedulerPoll < 0 {
		return s.listen(ctx, s.cfg.Listen, s.cfg.ReusePort)
	}
	renewed := func(_, to string) { s.m.renewals.WithLabelValues(to).Inc() }
	addr := s.cfg.Listen
	if !s.cfg.ReusePort {
		// Every listener of a follower has SO_REUSEPORT, which would let
		// this relay share an address another one holds. Without
		// ReusePort that must fail as it always did: bind once without.
		probe, err := s.listen(ctx, addr, false)
		if err != nil {
			return nil, err
		}
		addr = probe.Addr().String()
		probe.Close()
	}
	open := func() (net.Listener, error) {
		ln, err := s.listen(context.Background(), addr, true)
		if err == nil {
			addr = ln.Addr().String() // a port 0 resolved: its successors take the same
		}
		return ln, err
	}
	ln, err := newFollowListener(open, effectiveScheduler, s.cfg.SchedulerPoll, s.log, renewed)
	if err != nil {
		return nil, fmt.Errorf("relay listen: %w", err)
	}
	return ln, nil
}

// listen opens one listener on the listen address; reusePort sets
// SO_REUSEPORT (always for a listener that follows the scheduler, whose
// successor binds the same address).
func (s *Server) listen(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		return s.listenControl(network, address, c, reusePort)
	}}
	lc.SetMultipathTCP(!s.cfg.NoMPTCP)
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay listen: %w", err)
	}
	return ln, nil
}

// ListenAndServe listens on cfg.Listen and serves until ctx is done, then
// drains for up to DrainTimeout.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := s.Listen(ctx)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("relay: server closed")

// listenControl prepares the listening socket: SO_REUSEPORT when
// reusePort, then the congestion control.
func (s *Server) listenControl(network, address string, c syscall.RawConn, reusePort bool) error {
	if reusePort {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = setReusePort(fd)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("SO_REUSEPORT: %w", serr)
		}
	}
	if s.ccControl != nil {
		return s.ccControl(network, address, c)
	}
	return nil
}

// ListenTransparent opens the configured transparent address (plain TCP).
func (s *Server) ListenTransparent(ctx context.Context) (net.Listener, error) {
	lc := net.ListenConfig{Control: s.ccControl}
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Transparent)
	if err != nil {
		return nil, fmt.Errorf("relay transparent listen: %w", err)
	}
	return ln, nil
}

// ServeTransparent is Serve for connections redirected by nftables: no
// SOCKS handshake, the destination is the connection's original one.
func (s *Server) ServeTransparent(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, ln, true)
}

// Serve accepts connections on ln until ctx is done or Shutdown is called.
// When ctx ends, Serve drains (Shutdown with DrainTimeout) before returning.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, ln, false)
}

func (s *Server) serve(ctx context.Context, ln net.Listener, transparent bool) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
		defer cancel()
		s.Shutdown(dctx)
	})
	defer stop()
	up := ""
	if s.pol.upstream != nil {
		up = s.pol.upstream.addr // never the credentials
	}
	s.log.Info("relay listening", "addr", ln.Addr().String(), "mptcp", !s.cfg.NoMPTCP && !transparent, "transparent", transparent, "upstream", up)
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			draining := s.draining
			s.mu.Unlock()
			if draining {
				s.wg.Wait()
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				// Out of fds or similar: back off like net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("relay accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("relay accept: %w", err)
		}
		delay = 0
		s.accepted(c, transparent)
	}
}

// Shutdown stops accepting, lets active connections finish until ctx is
// done, then closes what is left. It returns ctx.Err() if it had to cut
// connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.draining {
		s.draining = true
		s.idle = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.idle)
		}
	}
	for ln := range s.listeners {
		ln.Close()
		delete(s.listeners, ln)
	}
	idle := s.idle
	n := len(s.conns)
	s.mu.Unlock()
	s.log.Info("relay draining", "active", n)
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	cut := len(s.conns)
	for c := range s.conns {
		c.abort()
	}
	s.mu.Unlock()
	s.log.Warn("relay drain deadline reached, closing connections", "closed", cut)
	s.wg.Wait()
	return ctx.Err()
}

// conn is one client connection and, once dialed, its destination.
type conn struct {
	s       *Server
	c       net.Conn
	client  netip.Addr
	mptcp   bool
	start   time.Time
	mu      sync.Mutex
	dst     net.Conn
	aborted bool
	// ctx lives as long as the connection; abort cancels it, which ends a
	// dial, a name lookup or an upstream handshake in progress.
	ctx    context.Context
	cancel context.CancelFunc
	// transparent: redirected by nftables, no SOCKS on this connection.
	transparent bool
	lastRecv    atomic.Int64 // unix nanos of the last byte moved in any direction
	// sampled: the subflows are sampled once, when the first direction
	// ends (sampleEnd).
	sampled sync.Once
}

func (c *conn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	c.c.Close()
	c.cancel()
	if c.dst != nil {
		c.dst.Close()
	}
}

func (c *conn) setDst(d net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return false
	}
	c.dst = d
	return true
}

func transport(mptcp bool) string {
	if mptcp {
		return "mptcp"
	}
	return "tcp"
}

// accepted applies the connection limits and starts the handler.
func (s *Server) accepted(nc net.Conn, transparent bool) {
	ap := netip.AddrPort{}
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	}
	c := &conn{s: s, c: nc, client: ap.Addr().Unmap(), start: time.Now(), transparent: transparent}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if tc, ok := nc.(*net.TCPConn); ok {
		c.mptcp, _ = tc.MultipathTCP()
	}
	reject := func(reason string) {
		s.m.rejected.WithLabelValues(reason).Inc()
		s.log.Info("relay reject", "client", ap.String(), "reason", reason)
		nc.Close()
	}
	if !s.pol.clientAllowed(c.client) {
		reject("client-not-allowed")
		return
	}
	s.mu.Lock()
	switch {
	case s.draining:
		s.mu.Unlock()
		reject("draining")
		return
	case s.cfg.MaxConns > 0 && len(s.conns) >= s.cfg.MaxConns:
		s.mu.Unlock()
		reject("max-conns")
		return
	case s.cfg.MaxConnsPerClient > 0 && s.perClient[c.client] >= s.cfg.MaxConnsPerClient:
		s.mu.Unlock()
		reject("max-conns-per-client")
		return
	}
	s.conns[c] = struct{}{}
	s.perClient[c.client]++
	s.wg.Add(1)
	s.mu.Unlock()
	s.m.conns.WithLabelValues(transport(c.mptcp)).Inc()
	s.m.active.WithLabelValues(transport(c.mptcp)).Inc()
	go c.serve()
}

func (s *Server) done(c *conn) {
	s.m.active.WithLabelValues(transport(c.mptcp)).Dec()
	s.mu.Lock()
	delete(s.conns, c)
	if s.perClient[c.client]--; s.perClient[c.client] <= 0 {
		delete(s.perClient, c.client)
	}
	if s.draining && len(s.conns) == 0 {
		select {
		case <-s.idle:
		default:
			close(s.idle)
		}
	}
	s.mu.Unlock()
	s.wg.Done()
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 512) }}

// serve runs one connection to its end; it never leaves a goroutine or fd.
func (c *conn) serve() {
	s := c.s
	defer s.done(c)
	defer c.cancel()
	defer c.c.Close()
	log := s.log.With("client", c.c.RemoteAddr().String(), "transport", transport(c.mptcp))
	c.c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(c.c)
	defer func() {
		if br != nil {
			br.Reset(nil)
			readerPool.Put(br)
		}
	}()
	var req socks5.Request
	var err error
	if c.transparent {
		req.Cmd = socks5.CmdConnect
		req.Addr, err = originalDst(c.c)
	} else {
		req, err = c.handshake(br)
	}
	if err != nil {
		var he *handshakeError
		if errors.As(err, &he) && he.reply != 0 {
			c.reply(he.reply, socks5.Addr{})
		}
		s.m.handshakeErrors.Inc()
		log.Info("relay handshake failed", "err", err)
		return
	}
	log = log.With("cmd", req.Cmd.String(), "dest", req.Addr.String())
	switch {
	case req.Cmd == socks5.CmdConnect:
		c.connect(log, &br, req)
	case req.Cmd == socks5.CmdUDPAssociate && !s.cfg.DisableUDP:
		c.udpAssociate(log, req)
	default:
		c.reply(socks5.CommandNotSupported, socks5.Addr{})
		log.Info("relay refused", "reply", socks5.CommandNotSupported.String())
	}
}

// handshakeError carries the reply code to send, if any (0: just close).
type handshakeError struct {
	reply socks5.Reply
	err   error
}

func (e *handshakeError) Error() string { return e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

func (c *conn) handshake(br *bufio.Reader) (socks5.Request, error) {
	s := c.s
	methods, err := socks5.ParseGreeting(br)
	if err != nil {
		return socks5.Request{}, fmt.Errorf("greeting: %w", err)
	}
	want := socks5.MethodNoAuth
	if len(s.pol.creds) > 0 {
		want = socks5.MethodUserPass
	}
	offered := false
	for _, m := range methods {
		offered = offered || m == want
	}
	if !offered {
		c.c.Write([]byte{socks5.Version, byte(socks5.MethodNoAcceptable)})
		s.m.rejected.WithLabelValues("no-acceptable-method").Inc()
		return socks5.Request{}, fmt.Errorf("client offered %v, relay needs %v", methods, want)
	}
	if _, err := c.c.Write([]byte{socks5.Version, byte(want)}); err != nil {
		return socks5.Request{}, err
	}
	if want == socks5.MethodUserPass {
		user, pass, err := socks5.ParseUserPass(br)
		if err != nil {
			return socks5.Request{}, fmt.Errorf("auth: %w", err)
		}
		if !s.pol.check(user, pass) {
			c.c.Write([]byte{socks5.AuthVersion, 1})
			s.m.rejected.WithLabelValues("auth-failed").Inc()
			return socks5.Request{}, fmt.Errorf("auth failed for user %q", user)
		}
		if _, err := c.c.Write([]byte{socks5.AuthVersion, 0}); err != nil {
			return socks5.Request{}, err
		}
	}
	req, err := socks5.ParseRequest(br)
	if errors.Is(err, socks5.ErrAtyp) {
		return req, &handshakeError{reply: socks5.AddressTypeNotSupported, err: err}
	}
	if err != nil {
		return req, fmt.Errorf("request: %w", err)
	}
	return req, nil
}

func (c *conn) reply(rep socks5.Reply, bound socks5.Addr) error {
	c.s.m.replies.WithLabelValues(rep.String()).Inc()
	if c.transparent {
		return nil // the app speaks its own protocol; a failure just closes
	}
	var b [64]byte
	_, err := c.c.Write(socks5.AppendReply(b[:0], rep, bound))
	return err
}

// connect serves CONNECT: dial (policy applied), reply, forward.
func (c *conn) connect(log *slog.Logger, brp **bufio.Reader, req socks5.Request) {
	br := *brp
	s := c.s
	// Shutdown's abort cancels the dial too (c.ctx), not only the client side.
	ctx, cancel := context.WithTimeout(c.ctx, s.cfg.DialTimeout)
	var dst net.Conn
	var rep socks5.Reply
	var err error
	if s.pol.upstream != nil {
		// The local policy applies to IP destinations (and names that
		// are IP literals) here too, as to UDP datagrams; names go up
		// unresolved and the upstream checks what they resolve to.
		if !s.upstreamDestAllowed(req.Addr) {
			dst, rep, err = nil, socks5.NotAllowed, fmt.Errorf("destination %s refused by the local policy", req.Addr)
		} else {
			dst, rep, err = s.dialUpstream(ctx, req.Addr)
		}
	} else {
		dst, rep, err = s.dialDest(ctx, req.Addr)
	}
	cancel()
	if err != nil {
		c.reply(rep, socks5.Addr{})
		log.Info("relay refused", "reply", rep.String(), "err", err)
		return
	}
	if !c.setDst(dst) {
		dst.Close()
		return
	}
	defer dst.Close()
	if err := c.reply(socks5.Succeeded, socks5.AddrFromNet(dst.LocalAddr())); err != nil {
		return
	}
	s.m.handshake.Observe(time.Since(c.start).Seconds())
	c.c.SetDeadline(time.Time{})
	// Bytes the client sent right after its request are already buffered.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := dst.Write(b); err != nil {
			return
		}
		s.m.bytes.WithLabelValues("up").Add(float64(n))
	}
	// The handshake reader is not needed while forwarding: back to the pool.
	br.Reset(nil)
	readerPool.Put(br)
	*brp = nil
	up, down := c.pipe(c.c, dst)
	log.Info("relay closed", "up_bytes", up, "down_bytes", down, "duration", time.Since(c.start).Round(time.Millisecond))
}

// dialDest resolves (names resolve here), applies the destination policy to
// every address and dials the first allowed one that answers.
func (s *Server) dialDest(ctx context.Context, a socks5.Addr) (net.Conn, socks5.Reply, error) {
	var ips []netip.Addr
	if a.Name != "" {
		var err error
		ips, err = s.resolver.LookupNetIP(ctx, "ip", a.Name)
		if err != nil {
			return nil, replyFor(err), fmt.Errorf("resolve %s: %w", a.Name, err)
		}
	} else {
		ips = []netip.Addr{a.IP}
	}
	var allowed []netip.Addr
	for _, ip := range ips {
		if s.pol.destAllowed(ip, s.own.contains) {
			allowed = append(allowed, ip.Unmap())
		}
	}
	if len(allowed) == 0 {
		return nil, socks5.NotAllowed, fmt.Errorf("destination %s (%v) not allowed by the ruleset", a, ips)
	}
	var errs []error
	for _, ip := range allowed {
		d, err := s.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, a.Port).String())
		if err == nil {
			return d, socks5.Succeeded, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, replyFor(errs[0]), errors.Join(errs...)
}

// pipe forwards both directions until both ended (half-close passes EOF
// on) or one failed; it returns the bytes client→dest and dest→client.
func (c *conn) pipe(cl, dst net.Conn) (up, down int64) {
	c.lastRecv.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		down = c.copyHalf(cl, dst, "down")
	}()
	up = c.copyHalf(dst, cl, "up")
	wg.Wait()
	return up, down
}

// chunk bounds one splice call so the idle timer sees progress.
const chunk = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyChunk copies up to limit bytes src→dst through a pooled buffer; a
// nil error means limit bytes or EOF.
func copyChunk(dst, src net.Conn, limit int64) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{dst}, io.LimitReader(src, limit), *bp)
}

// copyHalf copies src→dst. At EOF it half-closes dst; on an error or an
// idle timeout it closes both so the other direction ends too.
func (c *conn) copyHalf(dst, src net.Conn, dir string) int64 {
	idle := c.s.cfg.IdleTimeout
	ctr := c.s.m.bytes.WithLabelValues(dir)
	var total int64
	dt, dok := dst.(*net.TCPConn)
	var sp *splicer
	if st, ok := src.(*net.TCPConn); ok && dok {
		sp = newSplicer(dt, st)
	}
	if sp != nil {
		defer sp.release()
	}
	for {
		if idle > 0 {
			src.SetReadDeadline(time.Now().Add(idle))
		}
		var n int64
		var err error
		if sp != nil {
			n, err = sp.move(chunk)
		} else {
			n, err = copyChunk(dst, src, chunk)
		}
		total += n
		ctr.Add(float64(n))
		if n > 0 {
			c.lastRecv.Store(time.Now().UnixNano())
		}
		if err == nil && n == chunk {
			continue
		}
		if err == nil { // EOF: pass the half-close on
			c.sampleEnd()
			if dok {
				dt.CloseWrite()
			} else {
				dst.Close()
			}
			return total
		}
		if idle > 0 && errors.Is(err, errDeadline) && time.Since(time.Unix(0, c.lastRecv.Load())) < idle {
			continue // the other direction is busy
		}
		c.sampleEnd()
		c.mu.Lock()
		c.c.Close()
		if c.dst != nil {
			c.dst.Close()
		}
		c.mu.Unlock()
		return total
	}
}

// sampleEnd samples the connection's subflows (gigapath_relay_subflows)
// when the first of its two directions ends, before the relay closes or
// half-closes anything: the end of the other direction may come much
// later (on a loaded host an MPTCP DATA_FIN was seen to wait more than
// 10 s before the kernel took it in, docs/deploy.md), and after a close
// the connection cannot be asked. A direction that ends in an error (a
// reset) is sampled too, with what is left of it then.
func (c *conn) sampleEnd() {
	c.sampled.Do(func() {
		c.mu.Lock()
		dst := c.dst
		c.mu.Unlock()
		c.sampleSubflows(dst)
	})
}
