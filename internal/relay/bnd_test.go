package relay

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/gigapath/gigapath/internal/relay/socks5"
)

// remoteConn is a net.Conn with only a remote address.
type remoteConn struct {
	net.Conn
	remote netip.AddrPort
}

func (c remoteConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

// The upstream's BND.ADDR is used as announced unless it is unspecified or
// of a narrower scope than the address the control connection reached the
// upstream at; then the latter, with BND.PORT.
func TestUpstreamUDPAddr(t *testing.T) {
	s, err := New(Config{Upstream: "socks5://192.0.2.1:1080"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ remote, bnd, want string }{
		{"203.0.113.7:1080", "0.0.0.0", "203.0.113.7"},                   // unspecified
		{"203.0.113.7:1080", "127.0.0.1", "203.0.113.7"},                 // loopback from a remote upstream
		{"203.0.113.7:1080", "169.254.1.1", "203.0.113.7"},               // link-local
		{"203.0.113.7:1080", "224.0.0.1", "203.0.113.7"},                 // multicast
		{"203.0.113.7:1080", "172.17.0.2", "203.0.113.7"},                // private behind a NAT
		{"203.0.113.7:1080", "198.51.100.9", "198.51.100.9"},             // another public address: as announced
		{"10.0.0.5:1080", "10.0.0.6", "10.0.0.6"},                        // private upstream on a private network
		{"127.0.0.2:1080", "127.0.0.3", "127.0.0.3"},                     // local upstream
		{"[2001:db8::7]:1080", "::1", "2001:db8::7"},                     // IPv6 loopback
		{"[2001:db8::7]:1080", "fd00::2", "2001:db8::7"},                 // IPv6 ULA behind a NAT
		{"[::ffff:203.0.113.7]:1080", "::ffff:127.0.0.1", "203.0.113.7"}, // mapped forms
	} {
		up := remoteConn{remote: netip.MustParseAddrPort(tc.remote)}
		got, err := s.upstreamUDPAddr(context.Background(), up, socks5.Addr{IP: netip.MustParseAddr(tc.bnd), Port: 5000})
		if want := netip.AddrPortFrom(netip.MustParseAddr(tc.want), 5000); err != nil || got != want {
			t.Errorf("remote %s, BND %s: %v %v, want %v", tc.remote, tc.bnd, got, err, want)
		}
	}
}
