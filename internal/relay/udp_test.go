package relay_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
	"github.com/gigapath/gigapath/internal/relay/socks5"
)

// udpEcho answers each datagram with "echo:" + payload and counts what it
// received.
type udpEcho struct {
	addr socks5.Addr
	got  atomic.Int64
	mu   sync.Mutex
	seen map[string]bool // payloads received
}

func (e *udpEcho) saw(payload string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[payload]
}

func startUDPEcho(t testing.TB, network, addr string) *udpEcho {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	e := &udpEcho{addr: socks5.AddrFromNet(pc.LocalAddr()), seen: map[string]bool{}}
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			e.got.Add(1)
			e.mu.Lock()
			e.seen[string(b[:n])] = true
			e.mu.Unlock()
			pc.WriteTo(append([]byte("echo:"), b[:n]...), from)
		}
	}()
	return e
}

// udpSession is a client's UDP ASSOCIATE: the control connection and a
// UDP socket connected to the relay's bound address.
type udpSession struct {
	ctl net.Conn
	uc  *net.UDPConn
}

// associate asks relayAddr for UDP ASSOCIATE (no auth, client address
// 0.0.0.0:0) and returns the reply code and the session (without a UDP
// socket when refused).
func associate(t testing.TB, relayAddr string) (socks5.Reply, *udpSession) {
	t.Helper()
	ctl := dial(t, relayAddr)
	ctl.Write(socks5.AppendGreeting(nil, socks5.MethodNoAuth))
	if _, err := io.ReadFull(ctl, make([]byte, 2)); err != nil {
		t.Fatalf("greeting to %s: %v", relayAddr, err)
	}
	ctl.Write(socks5.AppendRequest(nil, socks5.Request{Cmd: socks5.CmdUDPAssociate, Addr: socks5.Addr{IP: netip.IPv4Unspecified()}}))
	rep, bound, err := socks5.ParseReply(ctl)
	if err != nil {
		t.Fatalf("UDP ASSOCIATE reply from %s: %v", relayAddr, err)
	}
	if rep != socks5.Succeeded {
		return rep, &udpSession{ctl: ctl}
	}
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bound.IP, bound.Port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return rep, &udpSession{ctl: ctl, uc: uc}
}

func (u *udpSession) send(dst socks5.Addr, payload string) {
	u.uc.Write(socks5.AppendUDP(nil, socks5.UDPHeader{Addr: dst}, []byte(payload)))
}

// recv waits up to d for a datagram and returns its header and payload.
func (u *udpSession) recv(d time.Duration) (socks5.UDPHeader, string, error) {
	u.uc.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 4096)
	n, err := u.uc.Read(b)
	if err != nil {
		return socks5.UDPHeader{}, "", err
	}
	h, p, err := socks5.ParseUDP(b[:n])
	return h, string(p), err
}

// roundTrip sends payload to dst and expects the echo, from from.
func (u *udpSession) roundTrip(t testing.TB, dst, from socks5.Addr, payload string) {
	t.Helper()
	// UDP may lose a datagram even on loopback (full buffers on a loaded
	// machine): a few tries, each waiting long enough.
	for i := 0; i < 3; i++ {
		u.send(dst, payload)
		h, p, err := u.recv(5 * time.Second)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil || p != "echo:"+payload || h.Addr != from || h.Frag != 0 {
			t.Fatalf("to %v: got %+v %q %v, want from %v payload %q", dst, h, p, err, from, "echo:"+payload)
		}
		return
	}
	t.Fatalf("to %v: no reply through the relays", dst)
}

// hangingResolver is a resolver whose server is never reached: its Dial
// blocks until the test ends, whatever the resolver's own timeouts, so
// only the caller's context can end a lookup. asked gets a value for each
// lookup that reached it.
func hangingResolver(t testing.TB) (r *net.Resolver, asked <-chan string) {
	release := make(chan struct{})
	ch := make(chan string, 64)
	t.Cleanup(func() { close(release) })
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		select {
		case ch <- address:
		default:
		}
		<-release
		return nil, errors.New("test resolver released")
	}}, ch
}

// startRelayWith starts a relay on a loopback port (unless cfg.Listen
// says otherwise), after setup (when not nil) has prepared the server (a
// resolver); at cleanup it shuts the server down and checks that Serve
// returned ErrServerClosed.
func startRelayWith(t testing.TB, cfg relay.Config, setup func(*relay.Server)) (*relay.Server, string) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := relay.New(cfg, nil)
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	if setup != nil {
		setup(s)
	}
	ln, err := s.Listen(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-done; !errors.Is(err, relay.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

func haveIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err == nil {
		ln.Close()
	}
	return err == nil
}

func mptcpEnabled() bool {
	b, err := os.ReadFile("/proc/sys/net/mptcp/enabled")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// TestUDPChain: client → local relay (--upstream) → upstream relay → UDP
// echo, real datagrams both ways, to an IPv4 address, to a name (which the
// local relay must pass on unresolved: its resolver hangs), and to an IPv6
// address over the IPv4 hop and over an IPv6 upstream hop while the client
// side stays IPv4.
func TestUDPChain(t *testing.T) {
	echo4 := startUDPEcho(t, "udp4", "127.0.0.1:0")
	creds := filepath.Join(t.TempDir(), "users")
	os.WriteFile(creds, []byte("u:p\n"), 0o600)
	up4, up4Addr := startRelay(t, relay.Config{Credentials: creds, AllowDest: []string{"127.0.0.0/8", "::1/128"}})
	hang, asked := hangingResolver(t)
	local, localAddr := startRelayWith(t, relay.Config{Upstream: "socks5://u:p@" + up4Addr, AllowDest: []string{"127.0.0.0/8", "::1/128"}},
		func(s *relay.Server) { relay.SetResolver(s, hang) })

	rep, u := associate(t, localAddr)
	if rep != socks5.Succeeded {
		t.Fatalf("UDP ASSOCIATE through the chain: %v", rep)
	}
	u.roundTrip(t, echo4.addr, echo4.addr, "v4")
	u.roundTrip(t, socks5.Addr{Name: "localhost", Port: echo4.addr.Port}, echo4.addr, "by name")
	select {
	case a := <-asked:
		t.Errorf("the local relay looked a name up (via %s); names must go upstream unresolved", a)
	default:
	}
	if n := valueAtLeast(t, up4, relay.MetricUDPDatagrams, "up", 2); n < 2 {
		t.Errorf("upstream relayed %v datagrams up, want >= 2", n)
	}
	if n := valueAtLeast(t, local, relay.MetricUDPDatagrams, "down", 2); n < 2 {
		t.Errorf("local relay passed %v datagrams down, want >= 2", n)
	}
	if mptcpEnabled() {
		if n := value(t, up4, relay.MetricConnections, "mptcp"); n != 1 {
			t.Errorf("upstream saw %v MPTCP control connections, want 1 (the hop must be MPTCP)", n)
		}
	}

	if !haveIPv6Loopback() {
		t.Log("no ::1: IPv6 part not run")
		return
	}
	echo6 := startUDPEcho(t, "udp6", "[::1]:0")
	u.roundTrip(t, echo6.addr, echo6.addr, "v6 over the IPv4 hop")
	_, up6Addr := startRelay(t, relay.Config{Listen: "[::1]:0", AllowDest: []string{"::1/128"}})
	_, local6 := startRelay(t, relay.Config{Upstream: "socks5://" + up6Addr, AllowDest: []string{"::1/128"}})
	rep, u6 := associate(t, local6)
	if rep != socks5.Succeeded {
		t.Fatalf("UDP ASSOCIATE through the IPv6 chain: %v", rep)
	}
	u6.roundTrip(t, echo6.addr, echo6.addr, "v6")
}

// TestUDPChainLocalPolicy: the local relay applies its own destination
// policy to a datagram's destination before passing it upstream, and
// counts the drop; the upstream, which would allow it, never sees it.
func TestUDPChainLocalPolicy(t *testing.T) {
	denied := startUDPEcho(t, "udp4", "127.0.0.1:0")
	allowed := startUDPEcho(t, "udp4", "127.0.0.3:0")
	up, upAddr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	local, localAddr := startRelay(t, relay.Config{Upstream: "socks5://" + upAddr, AllowDest: []string{"127.0.0.0/8"}, DenyDest: []string{"127.0.0.1/32"}})
	_, u := associate(t, localAddr)
	u.send(denied.addr, "must not pass")
	// Datagrams of one client are handled in order: once the next one came
	// back, the denied one was dealt with.
	u.roundTrip(t, allowed.addr, allowed.addr, "allowed")
	if n := denied.got.Load(); n != 0 {
		t.Errorf("the destination denied by the local relay received %d datagrams", n)
	}
	if n := value(t, local, relay.MetricUDPDatagrams, "dropped"); n != 1 {
		t.Errorf("local relay dropped %v datagrams, want 1", n)
	}
	// The same denied address written as a name (an IP literal, ATYP 3) is
	// refused locally too.
	u.send(socks5.Addr{Name: denied.addr.IP.String(), Port: denied.addr.Port}, "literal must not pass")
	u.roundTrip(t, allowed.addr, allowed.addr, "allowed again")
	if n := denied.got.Load(); n != 0 {
		t.Errorf("the denied destination, named as an IP literal, received %d datagrams", n)
	}
	if n := value(t, local, relay.MetricUDPDatagrams, "dropped"); n != 2 {
		t.Errorf("local relay dropped %v datagrams, want 2", n)
	}
	// Another socket of the client's host, once the client's port is
	// known, is not the client.
	stranger, err := net.DialUDP("udp", nil, u.uc.RemoteAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	stranger.Write(socks5.AppendUDP(nil, socks5.UDPHeader{Addr: allowed.addr}, []byte("stranger")))
	u.roundTrip(t, allowed.addr, allowed.addr, "after the stranger")
	if allowed.saw("stranger") {
		t.Error("a datagram from another port than the client's was relayed")
	}
	if n := value(t, local, relay.MetricUDPDatagrams, "dropped"); n != 3 {
		t.Errorf("local relay dropped %v datagrams, want 3", n)
	}
	if n := value(t, up, relay.MetricUDPDatagrams, "up"); n < 1 {
		t.Errorf("upstream relayed %v datagrams, want the allowed ones", n)
	}
	// With the default policy loopback is refused locally too.
	_, strictAddr := startRelay(t, relay.Config{Upstream: "socks5://" + upAddr})
	_, s := associate(t, strictAddr)
	s.send(denied.addr, "loopback")
	if _, _, err := s.recv(500 * time.Millisecond); err == nil {
		t.Error("a loopback destination passed a local relay with the default policy")
	}
}

// activeZero waits until s has no open client connections.
func activeZero(t testing.TB, s *relay.Server, what string) {
	t.Helper()
	for i := 0; i < 400; i++ {
		if value(t, s, relay.MetricActive, "mptcp")+value(t, s, relay.MetricActive, "tcp") == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: connections still active after 20s", what)
}

// TestUDPChainTeardown: either control connection ending ends both
// associations.
func TestUDPChainTeardown(t *testing.T) {
	echo := startUDPEcho(t, "udp4", "127.0.0.1:0")
	up, upAddr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	local, localAddr := startRelay(t, relay.Config{Upstream: "socks5://" + upAddr, AllowDest: []string{"127.0.0.0/8"}})

	// The client closes its control connection: the local relay closes
	// its upstream control connection, the upstream's association ends.
	_, u := associate(t, localAddr)
	u.roundTrip(t, echo.addr, echo.addr, "before")
	u.ctl.Close()
	activeZero(t, up, "upstream after the client closed")
	activeZero(t, local, "local relay after the client closed")
	before := echo.got.Load()
	u.send(echo.addr, "late")
	if _, _, err := u.recv(300 * time.Millisecond); err == nil {
		t.Error("datagram relayed after the client's control connection closed")
	}
	if echo.got.Load() != before {
		t.Error("the echo server got a datagram sent after the association ended")
	}

	// The upstream ends its control connection (an upstream whose idle
	// timeout fires): the local relay closes the client's.
	_, idleUp := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}, IdleTimeout: 300 * time.Millisecond})
	_, local2 := startRelay(t, relay.Config{Upstream: "socks5://" + idleUp, AllowDest: []string{"127.0.0.0/8"}})
	_, u2 := associate(t, local2)
	u2.roundTrip(t, echo.addr, echo.addr, "before")
	if b, err := io.ReadAll(u2.ctl); err != nil || len(b) != 0 {
		t.Errorf("client control connection after the upstream ended: %x %v, want EOF", b, err)
	}
	// And an upstream cut by its own Shutdown.
	up3, up3Addr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	_, local3 := startRelay(t, relay.Config{Upstream: "socks5://" + up3Addr, AllowDest: []string{"127.0.0.0/8"}})
	_, u3 := associate(t, local3)
	u3.roundTrip(t, echo.addr, echo.addr, "before")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	up3.Shutdown(ctx)
	if b, err := io.ReadAll(u3.ctl); err != nil || len(b) != 0 {
		t.Errorf("client control connection after the upstream shut down: %x %v, want EOF", b, err)
	}
}

// TestUDPChainRefusals: the upstream's refusal code comes back unchanged.
func TestUDPChainRefusals(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "users")
	os.WriteFile(creds, []byte("u:p\n"), 0o600)
	_, noUDP := startRelay(t, relay.Config{DisableUDP: true})
	_, auth := startRelay(t, relay.Config{Credentials: creds})
	for _, tc := range []struct {
		upstream string
		want     socks5.Reply
	}{
		{"socks5://" + noUDP, socks5.CommandNotSupported},
		{"socks5://u:wrong@" + auth, socks5.NotAllowed},
		{"socks5://" + closedPort(t), socks5.GeneralFailure},
	} {
		_, local := startRelay(t, relay.Config{Upstream: tc.upstream})
		if rep, _ := associate(t, local); rep != tc.want {
			t.Errorf("upstream %s: reply %v, want %v", tc.upstream, rep, tc.want)
		}
	}
}

// fakeUpstream is a minimal SOCKS5 server for UDP ASSOCIATE that announces
// BND.ADDR 0.0.0.0 and records the datagrams it gets verbatim; it answers
// each with the same header and "echo:" + payload.
type fakeUpstream struct {
	addr string
	mu   sync.Mutex
	got  [][]byte
}

func startFakeUpstream(t testing.TB) *fakeUpstream {
	// 127.0.0.2: Linux sends to 0.0.0.0 as to 127.0.0.1, so a relay taking
	// BND.ADDR literally would miss it.
	ln, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fakeUpstream{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeUpstream) serve(c net.Conn) {
	defer c.Close()
	if _, err := socks5.ParseGreeting(c); err != nil {
		return
	}
	c.Write([]byte{5, 0})
	req, err := socks5.ParseRequest(c)
	if err != nil || req.Cmd != socks5.CmdUDPAssociate {
		c.Write(socks5.AppendReply(nil, socks5.CommandNotSupported, socks5.Addr{IP: netip.IPv4Unspecified()}))
		return
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		return
	}
	defer pc.Close()
	c.Write(socks5.AppendReply(nil, socks5.Succeeded, socks5.Addr{IP: netip.IPv4Unspecified(), Port: uint16(pc.LocalAddr().(*net.UDPAddr).Port)}))
	go func() { io.Copy(io.Discard, c); pc.Close() }()
	b := make([]byte, 4096)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(b)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.got = append(f.got, bytes.Clone(b[:n]))
		f.mu.Unlock()
		h, p, err := socks5.ParseUDP(b[:n])
		if err != nil {
			continue
		}
		pc.WriteToUDPAddrPort(socks5.AppendUDP(nil, h, append([]byte("echo:"), p...)), from)
	}
}

// TestUDPChainUnspecifiedBound: an upstream announcing BND.ADDR 0.0.0.0
// is reached at its control connection's address, and it receives the
// client's datagrams byte for byte (the name unresolved).
func TestUDPChainUnspecifiedBound(t *testing.T) {
	f := startFakeUpstream(t)
	_, local := startRelay(t, relay.Config{Upstream: "socks5://" + f.addr})
	_, u := associate(t, local)
	dst := socks5.Addr{Name: "udp.example", Port: 5353}
	u.roundTrip(t, dst, dst, "named")
	f.mu.Lock()
	defer f.mu.Unlock()
	want := socks5.AppendUDP(nil, socks5.UDPHeader{Addr: dst}, []byte("named"))
	if len(f.got) == 0 || !bytes.Equal(f.got[0], want) {
		t.Errorf("upstream received %x, want the client's datagram %x unchanged", f.got, want)
	}
}

// TestShutdownCutsUDPLookup: a UDP association blocked on a name lookup
// that never answers ends promptly when the relay shuts down, and when the
// client closes its control connection.
func TestShutdownCutsUDPLookup(t *testing.T) {
	for _, how := range []string{"shutdown", "client closes"} {
		t.Run(how, func(t *testing.T) {
			hang, asked := hangingResolver(t)
			s, err := relay.New(relay.Config{Listen: "127.0.0.1:0", DialTimeout: 10 * time.Minute}, nil)
			if err != nil {
				t.Fatal(err)
			}
			relay.SetResolver(s, hang)
			ln, err := s.Listen(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- s.Serve(context.Background(), ln) }()
			_, u := associate(t, ln.Addr().String())
			u.send(socks5.Addr{Name: "hangs.example", Port: 9}, "x")
			select {
			case <-asked:
			case <-time.After(30 * time.Second):
				t.Fatal("the relay never started the lookup")
			}
			timeout := 100 * time.Millisecond
			if how == "client closes" {
				u.ctl.Close()
				timeout = 5 * time.Minute // the association must end by itself
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- s.Shutdown(ctx) }()
			// Generous liveness bound: without the fix this takes the
			// 10-minute dial timeout.
			select {
			case err := <-shut:
				if how == "client closes" && err != nil {
					t.Errorf("Shutdown: %v, want nil (the association had ended)", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Shutdown still waiting for a name lookup after 30s")
			}
			<-served
		})
	}
}

// TestShutdownCutsUpstreamUDPHandshake: an upstream that accepts but never
// answers does not hold Shutdown for the dial timeout.
func TestShutdownCutsUpstreamUDPHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	s, err := relay.New(relay.Config{Listen: "127.0.0.1:0", Upstream: "socks5://" + ln.Addr().String(), DialTimeout: 10 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := s.Listen(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), rl) }()
	c := dial(t, rl.Addr().String())
	replied := make(chan error, 1)
	go func() {
		c.Write(socks5.AppendGreeting(nil, socks5.MethodNoAuth))
		io.ReadFull(c, make([]byte, 2))
		c.Write(socks5.AppendRequest(nil, socks5.Request{Cmd: socks5.CmdUDPAssociate, Addr: socks5.Addr{IP: netip.IPv4Unspecified()}}))
		rep, _, err := socks5.ParseReply(c)
		if err == nil && rep == socks5.Succeeded {
			err = errors.New("UDP ASSOCIATE succeeded through an upstream that never answered")
		}
		replied <- err
	}()
	for i := 0; ; i++ { // wait until the relay is in the upstream handshake
		mu.Lock()
		n := len(held)
		mu.Unlock()
		if n > 0 {
			break
		}
		if i > 600 {
			t.Fatal("the relay never connected to the upstream")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	select {
	case <-shut:
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown still waiting for the upstream handshake after 30s")
	}
	<-served
	if err := <-replied; err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Error(err)
	}
}
