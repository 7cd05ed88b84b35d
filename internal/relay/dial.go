package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gigapath/gigapath/internal/relay/socks5"
)

var (
	errDeadline     = os.ErrDeadlineExceeded
	errTooManyFiles = syscall.EMFILE
)

// replyFor maps a resolve or dial error to the RFC 1928 reply code.
func replyFor(err error) socks5.Reply {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return socks5.ConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ENETDOWN):
		return socks5.NetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return socks5.HostUnreachable
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return socks5.TTLExpired
	case errors.As(err, &dnsErr):
		if dnsErr.IsTimeout {
			return socks5.TTLExpired
		}
		return socks5.HostUnreachable
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return socks5.NotAllowed
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return socks5.TTLExpired
	}
	return socks5.GeneralFailure
}

// ownAddrs caches the host's addresses (for the built-in refusal of
// destinations that are the relay host itself) for a few seconds.
type ownAddrs struct {
	mu    sync.Mutex
	at    time.Time
	addrs map[netip.Addr]struct{}
}

func (o *ownAddrs) contains(a netip.Addr) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.addrs == nil || time.Since(o.at) > 5*time.Second {
		o.addrs = map[netip.Addr]struct{}{}
		o.at = time.Now()
		ifas, _ := net.InterfaceAddrs()
		for _, ifa := range ifas {
			if p, err := netip.ParsePrefix(ifa.String()); err == nil {
				o.addrs[p.Addr().Unmap()] = struct{}{}
			}
		}
	}
	_, ok := o.addrs[a]
	return ok
}

// dialUpstream opens an MPTCP connection to the upstream SOCKS5 proxy and
// asks it to CONNECT to a (names are passed on and resolve there). The
// upstream's reply code is returned as is.
func (s *Server) dialUpstream(ctx context.Context, a socks5.Addr) (net.Conn, socks5.Reply, error) {
	c, _, rep, err := s.upstreamRequest(ctx, socks5.Request{Cmd: socks5.CmdConnect, Addr: a})
	return c, rep, err
}

// upstreamRequest opens an MPTCP connection to the upstream proxy, runs
// the greeting (with the upstream credentials) and req on it, and returns
// the connection with the proxy's bound address. ctx bounds it all: its
// deadline, and its cancellation (Shutdown) interrupts a handshake that
// hangs.
func (s *Server) upstreamRequest(ctx context.Context, req socks5.Request) (net.Conn, socks5.Addr, socks5.Reply, error) {
	up := s.pol.upstream
	c, err := s.upDial.DialContext(ctx, "tcp", up.addr)
	if err != nil {
		return nil, socks5.Addr{}, socks5.GeneralFailure, fmt.Errorf("upstream %s: %w", up.addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	rep, bound, err := clientRequest(c, up.user, up.pass, req)
	if !stop() || err != nil {
		c.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, socks5.Addr{}, rep, fmt.Errorf("upstream %s: %w", up.addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, bound, socks5.Succeeded, nil
}

// ClientHandshake runs the client side of SOCKS5 on c: greeting (with
// username/password when user is set), and CONNECT to dst. It reads the
// reply byte-exactly, so c carries the stream afterwards. On a refusal it
// returns the server's reply code and an error naming it.
func ClientHandshake(c net.Conn, user, pass string, dst socks5.Addr) (socks5.Reply, error) {
	rep, _, err := clientRequest(c, user, pass, socks5.Request{Cmd: socks5.CmdConnect, Addr: dst})
	return rep, err
}

// clientRequest is ClientHandshake for any command; it also returns the
// server's bound address (BND.ADDR, BND.PORT).
func clientRequest(c net.Conn, user, pass string, req socks5.Request) (socks5.Reply, socks5.Addr, error) {
	methods := []socks5.Method{socks5.MethodNoAuth}
	if user != "" {
		methods = []socks5.Method{socks5.MethodUserPass}
	}
	b := socks5.AppendGreeting(make([]byte, 0, 300), methods...)
	if _, err := c.Write(b); err != nil {
		return socks5.GeneralFailure, socks5.Addr{}, err
	}
	var sel [2]byte
	if _, err := readFull(c, sel[:]); err != nil {
		return socks5.GeneralFailure, socks5.Addr{}, fmt.Errorf("method selection: %w", err)
	}
	if sel[0] != socks5.Version || socks5.Method(sel[1]) != methods[0] {
		return socks5.GeneralFailure, socks5.Addr{}, fmt.Errorf("proxy selected %v, offered %v", socks5.Method(sel[1]), methods[0])
	}
	if user != "" {
		b, err := socks5.AppendUserPass(b[:0], user, pass)
		if err != nil {
			return socks5.GeneralFailure, socks5.Addr{}, err
		}
		if _, err := c.Write(b); err != nil {
			return socks5.GeneralFailure, socks5.Addr{}, err
		}
		var st [2]byte
		if _, err := readFull(c, st[:]); err != nil {
			return socks5.GeneralFailure, socks5.Addr{}, fmt.Errorf("auth reply: %w", err)
		}
		if st[1] != 0 {
			return socks5.NotAllowed, socks5.Addr{}, fmt.Errorf("proxy refused the credentials of user %q", user)
		}
	}
	if _, err := c.Write(socks5.AppendRequest(b[:0], req)); err != nil {
		return socks5.GeneralFailure, socks5.Addr{}, err
	}
	rep, bound, err := socks5.ParseReply(c)
	if err != nil {
		return socks5.GeneralFailure, socks5.Addr{}, fmt.Errorf("reply: %w", err)
	}
	if rep != socks5.Succeeded {
		return rep, socks5.Addr{}, fmt.Errorf("proxy replied %v to %v", rep, req.Cmd)
	}
	return rep, bound, nil
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
