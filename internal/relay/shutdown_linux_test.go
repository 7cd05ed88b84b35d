//go:build linux

package relay_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
	"github.com/gigapath/gigapath/internal/relay/socks5"
	"golang.org/x/sys/unix"
)

// blackhole returns a loopback address whose SYNs are dropped: a listener
// with backlog 0 that never accepts, its accept queue already full.
func blackhole(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the accept queue (backlog 0 holds one) until a dial hangs.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", ap.String(), 300*time.Millisecond)
		if err != nil {
			return ap
		}
		t.Cleanup(func() { c.Close() })
		if i > 8 {
			t.Skip("cannot make a blackhole: the kernel keeps accepting into a backlog-0 queue")
		}
	}
}

// TestShutdownCutsDial: Shutdown's deadline also ends connections still
// dialing their destination (they used to hold Shutdown, and a SIGTERM'd
// relay, for the whole dial timeout).
func TestShutdownCutsDial(t *testing.T) {
	dst := blackhole(t)
	s, err := relay.New(relay.Config{Listen: "127.0.0.1:0", AllowDest: []string{"127.0.0.0/8"}, DialTimeout: 10 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), ln) }()
	c := dial(t, ln.Addr().String())
	replied := make(chan socks5.Reply, 1)
	go func() {
		rep, _ := relay.ClientHandshake(c, "", "", socks5.Addr{IP: dst.Addr(), Port: dst.Port()})
		replied <- rep
	}()
	time.Sleep(200 * time.Millisecond) // let the dial start (either order must work)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	// Generous liveness bound: without the fix this takes the 10-minute
	// dial timeout.
	select {
	case err := <-shut:
		if err == nil {
			t.Error("Shutdown returned nil although it had to cut a connection")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown still waiting for a dial 30s after its deadline")
	}
	<-served
	select {
	case rep := <-replied:
		if rep == socks5.Succeeded {
			t.Error("CONNECT to a blackhole succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the client got neither a reply nor EOF")
	}
}
