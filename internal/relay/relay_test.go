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
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
	"github.com/gigapath/gigapath/internal/relay/socks5"
)

// startRelay serves cfg on an ephemeral loopback port and shuts it down in
// t.Cleanup.
func startRelay(t testing.TB, cfg relay.Config) (*relay.Server, string) {
	t.Helper()
	return startRelayWith(t, cfg, nil)
}

// echoServer echoes each connection until EOF, then half-closes.
func echoServer(t testing.TB, network, addr string) string {
	return echoServerWith(t, network, addr, func(c net.Conn) { io.Copy(c, c) })
}

// echoServerWith serves every connection with echo, then half-closes it.
func echoServerWith(t testing.TB, network, addr string, echo func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				echo(c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func mustAddr(t testing.TB, s string) socks5.Addr {
	a, err := socks5.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// rawExchange writes greeting (no auth) then req bytes and returns the
// reply code, or an error if the relay closed without one.
func rawExchange(t testing.TB, relayAddr string, req []byte) (socks5.Reply, error) {
	c := dial(t, relayAddr)
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return 0, err
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		return 0, err
	}
	if sel != [2]byte{5, 0} {
		t.Fatalf("method selection %x, want 0500", sel)
	}
	c.Write(req)
	var h [2]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, err
	}
	return socks5.Reply(h[1]), nil
}

func TestConnectIPv4IPv6Name(t *testing.T) {
	v4 := echoServer(t, "tcp4", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(v4)
	dests := []string{v4, "localhost:" + port}
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln.Close()
		dests = append(dests, echoServer(t, "tcp6", "[::1]:0"))
	}
	_, addr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8", "::1/128"}})
	for _, d := range dests {
		c := dial(t, addr)
		if rep, err := relay.ClientHandshake(c, "", "", mustAddr(t, d)); err != nil {
			t.Fatalf("CONNECT %s: %v %v", d, rep, err)
		}
		msg := []byte("hello through " + d)
		c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Errorf("echo via %s: %q %v", d, got, err)
		}
	}
}

func closedPort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// TestReplyCodes provokes each reply code reachable on loopback; the
// unreachable ones are in TestIntegrationUnreachable.
func TestReplyCodes(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	s, addr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}, DenyDest: []string{"127.0.0.2/32"}})
	_, strict := startRelay(t, relay.Config{})
	_, echoPort, _ := net.SplitHostPort(echo)
	req := func(cmd socks5.Command, a string) []byte {
		return socks5.AppendRequest(nil, socks5.Request{Cmd: cmd, Addr: mustAddr(t, a)})
	}
	for _, tc := range []struct {
		name  string
		relay string
		req   []byte
		want  socks5.Reply
	}{
		{"connect ok", addr, req(socks5.CmdConnect, echo), socks5.Succeeded},
		{"refused: closed port", addr, req(socks5.CmdConnect, closedPort(t)), socks5.ConnectionRefused},
		{"not allowed: loopback by default", strict, req(socks5.CmdConnect, echo), socks5.NotAllowed},
		{"not allowed: name resolving to loopback", strict, req(socks5.CmdConnect, "localhost:"+echoPort), socks5.NotAllowed},
		{"not allowed: unspecified", strict, req(socks5.CmdConnect, "0.0.0.0:80"), socks5.NotAllowed},
		{"not allowed: link-local", strict, req(socks5.CmdConnect, "169.254.1.1:80"), socks5.NotAllowed},
		{"not allowed: multicast", strict, req(socks5.CmdConnect, "[ff02::1]:80"), socks5.NotAllowed},
		{"not allowed: deny-dest wins over allow-dest", addr, req(socks5.CmdConnect, "127.0.0.2:80"), socks5.NotAllowed},
		{"host unreachable: name does not resolve", addr, req(socks5.CmdConnect, "no-such-host.invalid:80"), socks5.HostUnreachable},
		{"command not supported: BIND", addr, req(socks5.CmdBind, echo), socks5.CommandNotSupported},
		{"command not supported: 0x09", addr, req(socks5.Command(9), echo), socks5.CommandNotSupported},
		{"address type not supported: 0x05", addr, []byte{5, 1, 0, 5, 1, 2, 3, 4, 0, 80}, socks5.AddressTypeNotSupported},
	} {
		got, err := rawExchange(t, tc.relay, tc.req)
		if err != nil || got != tc.want {
			t.Errorf("%s: reply %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
	if n := value(t, s, relay.MetricReplies, "connection-refused"); n != 1 {
		t.Errorf("%s{code=connection-refused} = %v, want 1", relay.MetricReplies, n)
	}
}

func TestAuth(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	creds := filepath.Join(t.TempDir(), "users")
	os.WriteFile(creds, []byte("# users\nalice:s3cret\nbob:pa:ss\n"), 0o600)
	_, addr := startRelay(t, relay.Config{Credentials: creds, AllowDest: []string{"127.0.0.0/8"}})
	for _, tc := range []struct {
		user, pass string
		ok         bool
	}{{"alice", "s3cret", true}, {"bob", "pa:ss", true}, {"alice", "wrong", false}, {"carol", "s3cret", false}, {"alice", "s3cre", false}} {
		c := dial(t, addr)
		rep, err := relay.ClientHandshake(c, tc.user, tc.pass, mustAddr(t, echo))
		if (err == nil) != tc.ok {
			t.Errorf("%s:%s: reply %v err %v, want ok=%v", tc.user, tc.pass, rep, err, tc.ok)
		}
	}
	// Raw RFC 1929 failure: status != 0 and the relay closes.
	c := dial(t, addr)
	c.Write([]byte{5, 1, 2, 1, 5, 'a', 'l', 'i', 'c', 'e', 1, 'x'})
	b, _ := io.ReadAll(c)
	if !bytes.Equal(b, []byte{5, 2, 1, 1}) {
		t.Errorf("wrong password: relay sent %x, want 0502 0101 then close", b)
	}
	// A client offering only no-auth gets 0xFF.
	c = dial(t, addr)
	c.Write([]byte{5, 1, 0})
	b, _ = io.ReadAll(c)
	if !bytes.Equal(b, []byte{5, 0xff}) {
		t.Errorf("no-auth offer to an auth relay: got %x, want 05ff then close", b)
	}
}

func TestOpenRelayRefused(t *testing.T) {
	for _, l := range []string{"0.0.0.0:1080", "[::]:1080", ":1080", "10.0.0.1:1080"} {
		if _, err := relay.New(relay.Config{Listen: l}, nil); !errors.Is(err, relay.ErrOpenRelay) {
			t.Errorf("listen %s without auth or allow-client: %v, want ErrOpenRelay", l, err)
		}
	}
	if _, err := relay.New(relay.Config{Transparent: "0.0.0.0:1081"}, nil); !errors.Is(err, relay.ErrOpenRelay) {
		t.Errorf("public transparent listener without allow-client: %v, want ErrOpenRelay", err)
	}
	if _, err := relay.New(relay.Config{Listen: "0.0.0.0:1080", AllowClients: []string{"10.0.0.0/8"}}, nil); err != nil {
		t.Errorf("with --allow-client: %v", err)
	}
	if _, err := relay.New(relay.Config{Listen: "127.0.0.1:1080", AllowDest: []string{"nope"}}, nil); err == nil || !strings.Contains(err.Error(), `allow-dest "nope"`) {
		t.Errorf("bad CIDR: %v, want an error naming allow-dest \"nope\"", err)
	}
}

func TestAllowClient(t *testing.T) {
	_, addr := startRelay(t, relay.Config{AllowClients: []string{"10.0.0.0/8"}})
	c := dial(t, addr)
	c.Write([]byte{5, 1, 0})
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("client outside --allow-client got %x, want close", b)
	}
}

func TestMaxConnsPerClient(t *testing.T) {
	s, addr := startRelay(t, relay.Config{MaxConnsPerClient: 1})
	first := dial(t, addr)
	first.Write([]byte{5, 1, 0})
	io.ReadFull(first, make([]byte, 2)) // accepted and in handshake
	second := dial(t, addr)
	second.Write([]byte{5, 1, 0})
	if b, _ := io.ReadAll(second); len(b) != 0 {
		t.Errorf("second connection got %x, want close", b)
	}
	if n := value(t, s, relay.MetricRejected, "max-conns-per-client"); n != 1 {
		t.Errorf("rejected{max-conns-per-client} = %v, want 1", n)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	_, addr := startRelay(t, relay.Config{HandshakeTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	c.Write([]byte{5}) // and then nothing
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("relay did not close a stalled handshake: %v", err)
	}
}

// TestHalfClose: each side's FIN reaches the other while the opposite
// direction keeps flowing.
func TestHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		defer c.Close()
		// Read the request until the client's FIN, then answer and FIN.
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "request" {
			srvDone <- errors.New("server got " + string(b))
			return
		}
		c.Write([]byte("response"))
		c.(*net.TCPConn).CloseWrite()
		srvDone <- nil
	}()
	_, addr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	c := dial(t, addr)
	if _, err := relay.ClientHandshake(c, "", "", mustAddr(t, ln.Addr().String())); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("request"))
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "response" {
		t.Errorf("client read %q, %v after its half-close; want response then EOF", b, err)
	}
	if err := <-srvDone; err != nil {
		t.Error(err)
	}
}

func TestUDPAssociate(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), b[:n]...), from)
		}
	}()
	_, addr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	c := dial(t, addr)
	c.Write(socks5.AppendGreeting(nil, socks5.MethodNoAuth))
	io.ReadFull(c, make([]byte, 2))
	c.Write(socks5.AppendRequest(nil, socks5.Request{Cmd: socks5.CmdUDPAssociate, Addr: socks5.Addr{IP: netip.IPv4Unspecified()}}))
	rep, bound, err := socks5.ParseReply(c)
	if err != nil || rep != socks5.Succeeded {
		t.Fatalf("UDP ASSOCIATE: %v %v", rep, err)
	}
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bound.IP, bound.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	dst := socks5.AddrFromNet(pc.LocalAddr())
	uc.Write(socks5.AppendUDP(nil, socks5.UDPHeader{Addr: dst}, []byte("ping")))
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 2048)
	n, err := uc.Read(b)
	if err != nil {
		t.Fatalf("no UDP reply through the relay: %v", err)
	}
	h, payload, err := socks5.ParseUDP(b[:n])
	if err != nil || string(payload) != "echo:ping" || h.Addr != dst {
		t.Fatalf("reply %+v %q %v, want from %v payload echo:ping", h, payload, err, dst)
	}
	// The association ends with the control connection.
	c.Close()
	time.Sleep(100 * time.Millisecond)
	uc.Write(socks5.AppendUDP(nil, socks5.UDPHeader{Addr: dst}, []byte("late")))
	uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := uc.Read(b); err == nil {
		t.Error("UDP still relayed after the control connection closed")
	}
}

// TestChain: a local entry forwards through an upstream relay over MPTCP,
// with credentials on the upstream.
func TestChain(t *testing.T) {
	if b, err := os.ReadFile("/proc/sys/net/mptcp/enabled"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Skip("needs MPTCP enabled in this namespace (net.mptcp.enabled=1)")
	}
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	creds := filepath.Join(t.TempDir(), "users")
	os.WriteFile(creds, []byte("u:p\n"), 0o600)
	up, upAddr := startRelay(t, relay.Config{Credentials: creds, AllowDest: []string{"127.0.0.0/8"}})
	_, local := startRelay(t, relay.Config{Upstream: "socks5://u:p@" + upAddr, AllowDest: []string{"127.0.0.0/8"}})
	c := dial(t, local)
	if _, err := relay.ClientHandshake(c, "", "", mustAddr(t, echo)); err != nil {
		t.Fatalf("CONNECT through the chain: %v", err)
	}
	c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if n := value(t, up, relay.MetricConnections, "mptcp"); n != 1 {
		t.Errorf("upstream saw %v MPTCP connections, want 1 (the hop must be MPTCP)", n)
	}
	// A refusal upstream comes back with its code.
	c = dial(t, local)
	if rep, _ := relay.ClientHandshake(c, "", "", mustAddr(t, closedPort(t))); rep != socks5.ConnectionRefused {
		t.Errorf("refusal through the chain: %v, want connection-refused", rep)
	}
	_, badLocal := startRelay(t, relay.Config{Upstream: "socks5://u:wrong@" + upAddr, AllowDest: []string{"127.0.0.0/8"}})
	c = dial(t, badLocal)
	if rep, _ := relay.ClientHandshake(c, "", "", mustAddr(t, echo)); rep != socks5.NotAllowed {
		t.Errorf("bad upstream credentials: %v, want not-allowed", rep)
	}
}

// In client mode the local entry applies its own destination policy to
// IP destinations and IP-literal names before anything goes upstream (as
// for UDP datagrams); names go up unresolved for the upstream to check.
func TestChainLocalPolicy(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	up, upAddr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	_, denying := startRelay(t, relay.Config{Upstream: "socks5://" + upAddr, AllowDest: []string{"127.0.0.0/8"}, DenyDest: []string{"127.0.0.1/32"}})
	_, strict := startRelay(t, relay.Config{Upstream: "socks5://" + upAddr})
	e := mustAddr(t, echo)
	literal := socks5.Addr{Name: e.IP.String(), Port: e.Port}
	for _, tc := range []struct {
		local string
		dst   socks5.Addr
		what  string
	}{
		{denying, e, "--deny-dest"},
		{denying, literal, "--deny-dest, as an IP-literal name"},
		{strict, e, "loopback under the default policy"},
	} {
		c := dial(t, tc.local)
		if rep, _ := relay.ClientHandshake(c, "", "", tc.dst); rep != socks5.NotAllowed {
			t.Errorf("%s: reply %v, want not-allowed from the local entry", tc.what, rep)
		}
		c.Close()
	}
	if n := value(t, up, relay.MetricConnections, "mptcp") + value(t, up, relay.MetricConnections, "tcp"); n != 0 {
		t.Errorf("the upstream saw %v connections, want 0: refused destinations must not go up", n)
	}
	// A name goes up unresolved: the upstream resolves and allows it.
	c := dial(t, strict)
	if rep, err := relay.ClientHandshake(c, "", "", socks5.Addr{Name: "localhost", Port: e.Port}); rep != socks5.Succeeded {
		t.Errorf("a name through the strict local entry: %v %v, want succeeded (checked upstream)", rep, err)
	}
	c.Close()
}

func TestDrain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-release
		c.Write([]byte("late answer"))
	}()
	s, err := relay.New(relay.Config{Listen: "127.0.0.1:0", AllowDest: []string{"127.0.0.0/8"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rl, _ := s.Listen(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), rl) }()
	c := dial(t, rl.Addr().String())
	if _, err := relay.ClientHandshake(c, "", "", mustAddr(t, ln.Addr().String())); err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// New connections are refused while the old one is still served.
	for i := 0; ; i++ {
		if nc, err := net.Dial("tcp", rl.Addr().String()); err != nil {
			break
		} else {
			nc.Close()
		}
		if i > 100 {
			t.Fatal("relay still accepting after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "late answer" {
		t.Errorf("transfer across drain: %q %v", b, err)
	}
	c.Close() // the client's FIN ends the other direction
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v, want nil (all finished before the deadline)", err)
	}
	if err := <-served; !errors.Is(err, relay.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	// A drain deadline cuts what is left.
	s2, addr2 := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	c2 := dial(t, addr2)
	relay.ClientHandshake(c2, "", "", mustAddr(t, echoServer(t, "tcp4", "127.0.0.1:0")))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s2.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a busy connection: %v, want deadline exceeded", err)
	}
	if _, err := io.ReadAll(c2); err != nil {
		t.Errorf("cut connection: %v, want EOF", err)
	}
}

// openFDs counts open fds after letting GC drop pooled splice pipes (Go
// keeps them in a sync.Pool and closes them from a finalizer).
func openFDs(t testing.TB) int {
	relay.DropIdlePipes()
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	time.Sleep(10 * time.Millisecond)
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestNoLeaks runs a battery of failure cases and checks that goroutines
// and file descriptors return to where they were.
func TestNoLeaks(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	creds := filepath.Join(t.TempDir(), "users")
	os.WriteFile(creds, []byte("u:p\n"), 0o600)
	_, addr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8", "::1/128"}, HandshakeTimeout: 300 * time.Millisecond, MaxConnsPerClient: 50})
	_, authAddr := startRelay(t, relay.Config{Credentials: creds, AllowDest: []string{"127.0.0.0/8"}})
	_, chainAddr := startRelay(t, relay.Config{Upstream: "socks5://" + addr, AllowDest: []string{"127.0.0.0/8", "::1/128"}})
	_, idleUp := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}, IdleTimeout: 200 * time.Millisecond})
	_, idleChain := startRelay(t, relay.Config{Upstream: "socks5://" + idleUp, AllowDest: []string{"127.0.0.0/8"}})
	_, noUDP := startRelay(t, relay.Config{DisableUDP: true})
	_, noUDPChain := startRelay(t, relay.Config{Upstream: "socks5://" + noUDP, AllowDest: []string{"127.0.0.0/8"}})
	echo4 := startUDPEcho(t, "udp4", "127.0.0.1:0")
	var echo6 *udpEcho // the upstream's second (IPv6) socket
	if haveIPv6Loopback() {
		echo6 = startUDPEcho(t, "udp6", "[::1]:0")
	}
	battery := func() {
		for _, req := range [][]byte{
			socks5.AppendRequest(nil, socks5.Request{Cmd: socks5.CmdConnect, Addr: mustAddr(t, closedPort(t))}),
			socks5.AppendRequest(nil, socks5.Request{Cmd: socks5.CmdBind, Addr: mustAddr(t, echo)}),
			{5, 1, 0, 5, 0},
			{5, 1, 0, 1, 127}, // truncated, then close
		} {
			c, _ := net.Dial("tcp", addr)
			c.Write(append([]byte{5, 1, 0}, req...))
			c.(*net.TCPConn).CloseWrite()
			io.ReadAll(c)
			c.Close()
		}
		for _, a := range []string{authAddr, chainAddr} {
			c, _ := net.Dial("tcp", a)
			relay.ClientHandshake(c, "u", "bad", mustAddr(t, echo))
			c.Close()
		}
		// chained refusal, chained success closed by the client mid-stream
		c, _ := net.Dial("tcp", chainAddr)
		relay.ClientHandshake(c, "", "", mustAddr(t, closedPort(t)))
		c.Close()
		c, _ = net.Dial("tcp", chainAddr)
		relay.ClientHandshake(c, "", "", mustAddr(t, echo))
		c.Write([]byte("abc"))
		c.Close()
		// stalled handshake hits the timeout; abrupt close mid-greeting
		stall, _ := net.Dial("tcp", addr)
		stall.Write([]byte{5, 1})
		c, _ = net.Dial("tcp", addr)
		c.Close()
		io.ReadAll(stall)
		stall.Close()
		// UDP associate torn down by the client
		c, _ = net.Dial("tcp", addr)
		c.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
		io.ReadFull(c, make([]byte, 12))
		c.Close()
		// chained UDP: a datagram each way, then torn down by the client;
		// torn down by the upstream (idle); refused upstream
		for _, a := range []string{chainAddr, idleChain, noUDPChain} {
			rep, u := associate(t, a)
			if rep == socks5.Succeeded {
				if a == chainAddr {
					u.send(echo4.addr, "x")
					u.recv(2 * time.Second)
					if echo6 != nil {
						u.send(echo6.addr, "x")
						u.recv(2 * time.Second)
					}
				} else {
					io.ReadAll(u.ctl) // until the upstream's idle timeout
				}
				u.uc.Close()
			}
			u.ctl.Close()
		}
	}
	battery() // warm up pools and lazily started goroutines
	time.Sleep(200 * time.Millisecond)
	g0, f0 := runtime.NumGoroutine(), openFDs(t)
	for i := 0; i < 5; i++ {
		battery()
	}
	var g, f int
	for i := 0; i < 50; i++ {
		time.Sleep(50 * time.Millisecond)
		g, f = runtime.NumGoroutine(), openFDs(t)
		if g <= g0 && f <= f0 {
			return
		}
	}
	buf := make([]byte, 1<<16)
	t.Errorf("leak: goroutines %d → %d, fds %d → %d\n%s", g0, g, f0, f, buf[:runtime.Stack(buf, true)])
}

// TestIdleTimeout: a silent connection is closed after --idle-timeout; one
// with data trickling in either direction is kept.
func TestIdleTimeout(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	_, addr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}, IdleTimeout: 300 * time.Millisecond})
	busy := dial(t, addr)
	idle := dial(t, addr)
	for _, c := range []net.Conn{busy, idle} {
		if _, err := relay.ClientHandshake(c, "", "", mustAddr(t, echo)); err != nil {
			t.Fatal(err)
		}
	}
	idleClosed := make(chan time.Duration, 1)
	t0 := time.Now()
	go func() {
		io.ReadAll(idle)
		idleClosed <- time.Since(t0)
	}()
	buf := make([]byte, 1)
	for i := 0; i < 12; i++ { // 1.2 s of one byte every 100 ms
		if _, err := busy.Write([]byte{byte(i)}); err != nil {
			t.Fatalf("busy connection cut after %v: %v", time.Since(t0), err)
		}
		if _, err := io.ReadFull(busy, buf); err != nil {
			t.Fatalf("busy connection cut after %v: %v", time.Since(t0), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-idleClosed:
	default:
		t.Error("idle connection still open after 1.2 s with --idle-timeout 300ms")
	}
}

func TestMaxConns(t *testing.T) {
	s, addr := startRelay(t, relay.Config{MaxConns: 2})
	for i := 0; i < 2; i++ {
		c := dial(t, addr)
		c.Write([]byte{5, 1, 0})
		io.ReadFull(c, make([]byte, 2))
	}
	c := dial(t, addr)
	c.Write([]byte{5, 1, 0})
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("third connection over --max-conns 2 got %x, want close", b)
	}
	if n := value(t, s, relay.MetricRejected, "max-conns"); n != 1 {
		t.Errorf("rejected{max-conns} = %v, want 1", n)
	}
}
