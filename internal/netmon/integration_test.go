//go:build linux

package netmon_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/testbed"
)

func newNS(t *testing.T, role string) *testbed.NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN)")
	}
	ns, err := testbed.NewNetNS(role)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func must(t *testing.T, ns *testbed.NetNS, args ...string) {
	t.Helper()
	if _, err := ns.Run(args...); err != nil {
		t.Fatal(err)
	}
}

// expect reads events until one matches; events before it are allowed
// (e.g. the link-local address or routes coming and going).
func expect(t *testing.T, ch <-chan netmon.Event, what string, match func(netmon.Event) bool) netmon.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var seen []string
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("waiting for %s: channel closed; saw %v", what, seen)
			}
			if match(e) {
				return e
			}
			seen = append(seen, e.String())
		case <-deadline:
			t.Fatalf("no %s within 10s; saw %v", what, seen)
		}
	}
}

func TestIntegrationWatcher(t *testing.T) {
	cli := newNS(t, "nm")
	peer := newNS(t, "nmp")
	if err := testbed.Veth(cli, "wifi0", peer, "wifi0p"); err != nil {
		t.Fatal(err)
	}
	must(t, cli, "ip", "addr", "add", "10.77.1.2/24", "dev", "wifi0")

	w, err := netmon.New(netmon.Config{NetNS: cli.Name})
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := w.Subscribe(256)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	<-w.Ready()

	// The initial state arrives as events and is in State; loopback is not.
	e := expect(t, ch, "initial link-up wifi0", func(e netmon.Event) bool { return e.Type == netmon.LinkUp && e.Link.Name == "wifi0" })
	wifi := e.Link.Index
	if e.Time.IsZero() {
		t.Error("event without the time it was read")
	}
	expect(t, ch, "initial address", func(e netmon.Event) bool {
		return e.Type == netmon.AddrAdded && e.Addr.Prefix == netip.MustParsePrefix("10.77.1.2/24") && e.Link.Name == "wifi0"
	})
	st := w.State()
	if _, ok := st.LinkByName("lo"); ok {
		t.Error("loopback reported")
	}
	if l := st.Links[wifi]; !l.Up() || l.Name != "wifi0" {
		t.Errorf("State link %d = %+v", wifi, l)
	}

	// Address added and removed with ip.
	must(t, cli, "ip", "addr", "add", "10.77.2.2/24", "dev", "wifi0")
	expect(t, ch, "addr-added 10.77.2.2/24", func(e netmon.Event) bool {
		return e.Type == netmon.AddrAdded && e.Addr.Prefix == netip.MustParsePrefix("10.77.2.2/24") && e.Addr.Index == wifi
	})
	must(t, cli, "ip", "addr", "del", "10.77.2.2/24", "dev", "wifi0")
	expect(t, ch, "addr-removed 10.77.2.2/24", func(e netmon.Event) bool {
		return e.Type == netmon.AddrRemoved && e.Addr.Prefix == netip.MustParsePrefix("10.77.2.2/24")
	})

	// A default route: the gateway is known per link.
	must(t, cli, "ip", "route", "add", "default", "via", "10.77.1.1", "dev", "wifi0")
	expect(t, ch, "route-added default via 10.77.1.1", func(e netmon.Event) bool {
		return e.Type == netmon.RouteAdded && e.Route.Gateway == netip.MustParseAddr("10.77.1.1") && e.Route.Index == wifi
	})
	if gw, ok := w.State().Gateway(wifi, false); !ok || gw != netip.MustParseAddr("10.77.1.1") {
		t.Errorf("State().Gateway(wifi0) = %v, %v", gw, ok)
	}

	// Link down: link-down, and the IPv4 route the kernel flushes silently
	// is reported as removed.
	must(t, cli, "ip", "link", "set", "wifi0", "down")
	expect(t, ch, "link-down wifi0", func(e netmon.Event) bool { return e.Type == netmon.LinkDown && e.Link.Index == wifi && !e.Removed })
	expect(t, ch, "route-removed", func(e netmon.Event) bool { return e.Type == netmon.RouteRemoved && e.Route.Index == wifi })
	if _, ok := w.State().Gateway(wifi, false); ok {
		t.Error("default route still in State after link down")
	}

	// An IPv6 address added while the link is down stays tentative: not
	// reported until DAD has run after the link came up.
	must(t, cli, "ip", "addr", "add", "2001:db8:77::2/64", "dev", "wifi0")
	// Carrier down on the peer side: admin up, oper down is still down.
	must(t, peer, "ip", "link", "set", "wifi0p", "down")
	must(t, cli, "ip", "link", "set", "wifi0", "up")
	out, _ := cli.Run("ip", "-6", "addr", "show", "dev", "wifi0", "scope", "global")
	if !strings.Contains(out, "tentative") {
		t.Fatalf("oracle: the address should be tentative without carrier: %s", out)
	}
	// A message round trip through the watcher (the admin-up above) so the
	// address message has been read too.
	must(t, cli, "ip", "addr", "add", "10.77.3.2/24", "dev", "wifi0")
	expect(t, ch, "addr-added 10.77.3.2", func(e netmon.Event) bool {
		return e.Type == netmon.AddrAdded && e.Addr.Prefix == netip.MustParsePrefix("10.77.3.2/24")
	})
	for _, a := range w.State().Addrs[wifi] {
		if a.Prefix.Addr().Is6() {
			t.Errorf("tentative address reported: %v", a.Prefix)
		}
	}
	if l := w.State().Links[wifi]; !l.AdminUp || l.OperUp || l.Up() {
		t.Errorf("admin up without carrier: %+v", l)
	}
	must(t, peer, "ip", "link", "set", "wifi0p", "up")
	expect(t, ch, "link-up wifi0 after carrier", func(e netmon.Event) bool { return e.Type == netmon.LinkUp && e.Link.Index == wifi })
	expect(t, ch, "addr-added 2001:db8:77::2 after DAD", func(e netmon.Event) bool {
		return e.Type == netmon.AddrAdded && e.Addr.Prefix == netip.MustParsePrefix("2001:db8:77::2/64")
	})
	// The oracle agrees it is no longer tentative.
	out, err = cli.Run("ip", "-6", "addr", "show", "dev", "wifi0", "scope", "global")
	if err != nil || strings.Contains(out, "tentative") || !strings.Contains(out, "2001:db8:77::2/64") {
		t.Errorf("ip -6 addr show: %v %s", err, out)
	}
	// The link-local address came up as well (DAD ran at the same time):
	// it is not reported by default.
	for _, a := range w.State().Addrs[wifi] {
		if a.Prefix.Addr().IsLinkLocalUnicast() {
			t.Errorf("link-local address reported: %v", a.Prefix)
		}
	}

	// Link deleted: link-down with Removed, its addresses go.
	must(t, cli, "ip", "link", "del", "wifi0")
	expect(t, ch, "link-down removed", func(e netmon.Event) bool { return e.Type == netmon.LinkDown && e.Removed && e.Link.Index == wifi })
	st = w.State()
	if _, ok := st.Links[wifi]; ok || len(st.Addrs[wifi]) != 0 {
		t.Errorf("deleted link still in State: %+v %v", st.Links[wifi], st.Addrs[wifi])
	}
}

func TestIntegrationWatcherLinkLocal(t *testing.T) {
	cli := newNS(t, "nml")
	must(t, cli, "ip", "link", "add", "eth7", "type", "veth", "peer", "name", "eth7p")
	must(t, cli, "ip", "link", "set", "eth7p", "up")
	must(t, cli, "ip", "addr", "add", "fe80::7/64", "dev", "eth7", "nodad")
	must(t, cli, "ip", "link", "set", "eth7", "up")
	w, err := netmon.New(netmon.Config{NetNS: "/run/netns/" + cli.Name, IncludeLinkLocal: true})
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := w.Subscribe(64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	expect(t, ch, "link-local address with IncludeLinkLocal", func(e netmon.Event) bool {
		return e.Type == netmon.AddrAdded && e.Addr.Prefix == netip.MustParsePrefix("fe80::7/64")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Run closed the subscription.
	for range ch {
	}
}

func TestIntegrationWatcherBadNetNS(t *testing.T) {
	if _, err := netmon.New(netmon.Config{NetNS: "gp-does-not-exist"}); err == nil || !strings.Contains(err.Error(), "gp-does-not-exist") {
		t.Errorf("New with a missing namespace: %v", err)
	}
}

// TestIntegrationWatcherENOBUFS overflows a tiny event socket buffer (the
// socket joins its groups in New, the reader starts in Run) and checks the
// Watcher resynchronises: a kernel Resync event, and State equal to what
// ip shows.
func TestIntegrationWatcherENOBUFS(t *testing.T) {
	cli := newNS(t, "nmb")
	peer := newNS(t, "nmbp")
	if err := testbed.Veth(cli, "wifi0", peer, "wifi0p"); err != nil {
		t.Fatal(err)
	}
	w, err := netmon.New(netmon.Config{NetNS: cli.Name, ReadBuffer: 1024})
	if err != nil {
		t.Fatal(err)
	}
	var batch strings.Builder
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&batch, "addr add 10.78.%d.%d/32 dev wifi0\n", i/100, i%100+1)
	}
	for i := 0; i < 100; i++ { // remove half again: State must not have them
		fmt.Fprintf(&batch, "addr del 10.78.%d.%d/32 dev wifi0\n", i/100, i%100+1)
	}
	f := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(f, []byte(batch.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, cli, "ip", "-batch", f)

	ch, _ := w.Subscribe(1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	expect(t, ch, "resync after ENOBUFS", func(e netmon.Event) bool { return e.Type == netmon.Resync && e.Kernel })

	out, err := cli.Run("ip", "-4", "-o", "addr", "show", "dev", "wifi0")
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]bool{}
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil {
			want[p] = true
		}
	}
	l, _ := w.State().LinkByName("wifi0")
	got := map[netip.Prefix]bool{}
	for _, a := range w.State().Addrs[l.Index] {
		got[a.Prefix] = true
	}
	for p := range got {
		if !want[p] {
			t.Errorf("%v is in State but not shown by ip", p)
		}
	}
	if len(want) != 100 || len(got) != len(want) {
		t.Fatalf("after resync State has %d addresses, ip shows %d (want 100)", len(got), len(want))
	}
	for p := range want {
		if !got[p] {
			t.Errorf("%v shown by ip is missing from State", p)
		}
	}
}
