//go:build linux

package pathmgr_test

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkIntegrationEndpointsDump reads 8 endpoints of a fresh namespace:
// through the library (one netlink dump on an open socket), through a new
// Client per read (dial + family lookup + dump), and by running
// `ip -n NS mptcp endpoint show` as scripts do. Compare ns/op side by side.
func BenchmarkIntegrationEndpointsDump(b *testing.B) {
	ns := testbed.NetNST(b, "bep")
	c, err := pathmgr.Dial(&pathmgr.Config{NetNS: ns.Name})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	for i := 1; i <= 8; i++ {
		if err := c.AddEndpoint(pathmgr.Endpoint{ID: uint8(i), Addr: netip.AddrFrom4([4]byte{10, 6, 0, byte(i)}), Flags: pathmgr.FlagSubflow}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("library", func(b *testing.B) {
		for b.Loop() {
			eps, err := c.Endpoints()
			if err != nil || len(eps) != 8 {
				b.Fatalf("%d endpoints, %v", len(eps), err)
			}
		}
	})
	b.Run("dial-per-read", func(b *testing.B) {
		for b.Loop() {
			c2, err := pathmgr.Dial(&pathmgr.Config{NetNS: ns.Name})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c2.Endpoints(); err != nil {
				b.Fatal(err)
			}
			c2.Close()
		}
	})
	b.Run("ip-mptcp-exec", func(b *testing.B) {
		for b.Loop() {
			if out, err := exec.Command("ip", "-n", ns.Name, "mptcp", "endpoint", "show").Output(); err != nil || len(out) == 0 {
				b.Fatalf("ip mptcp endpoint show: %v", err)
			}
		}
	})
}
