//go:build linux

package routing_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/internal/routing"
	"github.com/gigapath/gigapath/internal/testbed"
	"net/netip"
)

func mustPrefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// BenchmarkEnsureNoop measures what the daemon pays on every link event
// when nothing changed: Ensure of an interface whose table and rules are in
// place, with an empty main table and with 20,000 routes in it (the kernel
// filters the dump to our protocol and table, so the cost should not grow).
func BenchmarkEnsureNoop(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (CAP_NET_ADMIN)")
	}
	for _, n := range []int{0, 20000} {
		b.Run(fmt.Sprintf("main-routes=%d", n), func(b *testing.B) {
			ns, err := testbed.NewNetNS("rtb")
			if err != nil {
				b.Fatal(err)
			}
			defer ns.Close()
			peer, err := testbed.NewNetNS("rtbp")
			if err != nil {
				b.Fatal(err)
			}
			defer peer.Close()
			if err := testbed.Veth(ns, "lte0", peer, "lte0p"); err != nil {
				b.Fatal(err)
			}
			if err := ns.AddAddr("lte0", "10.82.0.2/16"); err != nil {
				b.Fatal(err)
			}
			if n > 0 {
				var batch strings.Builder
				for i := 0; i < n; i++ {
					fmt.Fprintf(&batch, "route add 172.16.%d.%d/32 via 10.82.0.1\n", i/256, i%256)
				}
				f := filepath.Join(b.TempDir(), "batch")
				if err := os.WriteFile(f, []byte(batch.String()), 0o600); err != nil {
					b.Fatal(err)
				}
				if _, err := ns.Run("ip", "-batch", f); err != nil {
					b.Fatal(err)
				}
			}
			out, _ := ns.Run("ip", "link", "show", "lte0")
			var idx int
			fmt.Sscanf(out, "%d:", &idx)
			m, err := routing.New(routing.Config{NetNS: ns.Name})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			p := routing.Path{Index: idx, Name: "lte0", Addrs: mustPrefixes("10.82.0.2/16")}
			if err := m.Ensure(p); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := m.Ensure(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
