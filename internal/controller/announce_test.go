package controller

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
	"golang.org/x/sys/unix"
)

// annPM records announce and remove commands; announce fails for refuse.
type annPM struct {
	nopPM
	cmds      []string
	refuse    map[netip.Addr]bool
	removeErr error
}

func (a *annPM) Announce(_ uint32, e pathmgr.Endpoint) error {
	a.cmds = append(a.cmds, fmt.Sprintf("announce %d %s", e.ID, netip.AddrPortFrom(e.Addr, e.Port)))
	if a.refuse[e.Addr] {
		return fmt.Errorf("refused")
	}
	return nil
}
func (a *annPM) Remove(_ uint32, id uint8) error {
	a.cmds = append(a.cmds, fmt.Sprintf("remove %d", id))
	return a.removeErr
}
func (a *annPM) take() []string { c := a.cmds; a.cmds = nil; return c }

// A server whose policy announces interface lte1 (index 5) and a fixed
// address: the interface's address follows the interface — announced when
// it is added after the connection, replaced when it changes (a new
// address, a new id), withdrawn when it goes or the link has been down for
// announceHold (not for a shorter blip), kept when a lower one is added —
// while the fixed one stays, under its id even when the address shows up
// on an interface; a failed RM_ADDR is retried after the back-off; an IPv6
// connection is offered the interface's global IPv6 address, not its
// link-local one; a refused announce waits retryBackoff. Ids are the
// allocator's: one per address and port, the lowest free of the family.
func TestAnnounceFollowsInterface(t *testing.T) {
	p, err := policy.Parse([]byte(`side: server
path_manager: userspace
interfaces:
  - name: wifi1
    role: wifi
  - name: lte1
    role: lte
announce:
  - interface: lte1
  - address: 192.0.2.50
    port: 8443
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Policy: p, Metrics: metrics.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	pm := &annPM{refuse: map[netip.Addr]bool{}}
	c.pm = pm
	lte := netmon.Link{Index: 5, Name: "lte1", AdminUp: true, OperUp: true}
	c.netSt = netmon.State{Links: map[int]netmon.Link{5: lte}, Addrs: map[int][]netmon.Addr{}}
	cn := newConn(9)
	cn.server, cn.established = true, true
	cn.local, cn.remote = netip.MustParseAddrPort("10.0.1.1:443"), netip.MustParseAddrPort("10.0.9.9:50000")
	c.conns[9] = cn
	const fixedID, firstID, id = 1, 2, 3
	fixed := fmt.Sprintf("announce %d 192.0.2.50:8443", fixedID)
	step := func(what string, want ...string) {
		t.Helper()
		c.reconcileConn(cn)
		if got := pm.take(); !slices.Equal(got, want) {
			t.Errorf("%s: commands %q, want %q", what, got, want)
		}
	}
	step("no address on lte1 yet", fixed)
	step("nothing changed")
	c.netSt.Addrs[5] = []netmon.Addr{{Index: 5, Prefix: netip.MustParsePrefix("10.0.2.1/24")}}
	step("address added", fmt.Sprintf("announce %d 10.0.2.1:0", firstID))
	c.netSt.Addrs[5] = append(c.netSt.Addrs[5], netmon.Addr{Index: 5, Prefix: netip.MustParsePrefix("10.0.2.0/24")})
	step("a lower address added: the announced one stays")
	c.netSt.Addrs[5] = []netmon.Addr{{Index: 5, Prefix: netip.MustParsePrefix("10.0.2.7/24")}}
	step("address replaced", fmt.Sprintf("remove %d", firstID), fmt.Sprintf("announce %d 10.0.2.7:0", id))
	lte.OperUp = false
	c.netSt.Links[5] = lte
	c.noteLinksDown(time.Now())
	step("link down: held for announceHold")
	c.linkDownAt[5] = time.Now().Add(-announceHold)
	step("link down past the hold", fmt.Sprintf("remove %d", id))
	lte.OperUp = true
	c.netSt.Links[5] = lte
	c.noteLinksDown(time.Now())
	if _, ok := c.linkDownAt[5]; ok {
		t.Error("an up link still noted as down")
	}
	pm.refuse[netip.MustParseAddr("10.0.2.7")] = true
	step("link up, refused", fmt.Sprintf("announce %d 10.0.2.7:0", id))
	step("refused: not retried at once")
	cn.annRetry.set(id, time.Now().Add(-time.Millisecond))
	delete(pm.refuse, netip.MustParseAddr("10.0.2.7"))
	step("retried after the back-off", fmt.Sprintf("announce %d 10.0.2.7:0", id))
	pm.removeErr = unix.ENOBUFS
	c.netSt.Addrs[5] = nil
	step("address removed, remove fails", fmt.Sprintf("remove %d", id))
	step("still announced: not retried at once")
	pm.removeErr = nil
	cn.annRetry.set(id, time.Now().Add(-time.Millisecond))
	step("remove retried after the back-off", fmt.Sprintf("remove %d", id))
	step("withdrawn: nothing more")

	// The fixed address shows up on lte1 (a VIP moving here): it keeps
	// the id it was announced with (no RM_ADDR); lte1's own entry
	// announces the address too, without port: another id.
	c.netSt.Addrs[5] = []netmon.Addr{{Index: 5, Prefix: netip.MustParsePrefix("192.0.2.50/32")}}
	step("the fixed address on lte1", "announce 4 192.0.2.50:0")
	if e, ok := cn.announced(fixedID); !ok || e.Addr != netip.MustParseAddr("192.0.2.50") || e.Port != 8443 {
		t.Errorf("the fixed address's announcement: %+v, %v; want it kept under id %d", e, ok, fixedID)
	}

	v6 := newConn(10)
	v6.server, v6.established = true, true
	v6.local, v6.remote = netip.MustParseAddrPort("[fd00:1::1]:443"), netip.MustParseAddrPort("[fd00:9::9]:50000")
	c.netSt.Addrs[5] = []netmon.Addr{
		{Index: 5, Prefix: netip.MustParsePrefix("fe80::1/64")},
		{Index: 5, Prefix: netip.MustParsePrefix("fd00:2::9/64")},
		{Index: 5, Prefix: netip.MustParsePrefix("fd00:2::1/64")},
		{Index: 5, Prefix: netip.MustParsePrefix("10.0.2.1/24")},
	}
	c.reconcileConn(v6)
	if got, want := pm.take(), []string{"announce 128 [fd00:2::1]:0"}; !slices.Equal(got, want) {
		t.Errorf("IPv6 connection: %q, want %q (global before link-local, the lowest; no IPv4)", got, want)
	}
}

// The connection's own local address is not announced with its own port
// (or none, which means the connection's port: the kernel's id 0), but is
// with another one: a balancer that DNATs to the node address makes that
// address the local one of every connection, and the node announces it
// with a port of its own (TestIntegrationFleetNodeAddrIsLocal).
func TestAnnounceOwnAddressOtherPort(t *testing.T) {
	for _, tt := range []struct {
		entries string
		want    []string
	}{
		{"  - address: 10.0.1.1\n", nil},
		{"  - address: 10.0.1.1\n    port: 443\n", nil},
		{"  - address: 10.0.1.1\n    port: 1081\n", []string{"announce 1 10.0.1.1:1081"}},
		{"  - interface: lte1\n", nil},
		{"  - interface: lte1\n    port: 1081\n", []string{"announce 1 10.0.1.1:1081"}},
	} {
		p, err := policy.Parse([]byte("side: server\npath_manager: userspace\ninterfaces:\n  - name: lte1\n    role: lte\nannounce:\n" + tt.entries))
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Config{Policy: p, Metrics: metrics.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		pm := &annPM{}
		c.pm = pm
		c.netSt = netmon.State{Links: map[int]netmon.Link{5: {Index: 5, Name: "lte1", AdminUp: true, OperUp: true}},
			Addrs: map[int][]netmon.Addr{5: {{Index: 5, Prefix: netip.MustParsePrefix("10.0.1.1/24")}}}}
		cn := newConn(9)
		cn.server, cn.established = true, true
		cn.local, cn.remote = netip.MustParseAddrPort("10.0.1.1:443"), netip.MustParseAddrPort("10.0.9.9:50000")
		c.reconcileConn(cn)
		if got := pm.take(); !slices.Equal(got, tt.want) {
			t.Errorf("%q to a connection on 10.0.1.1:443: %q, want %q", tt.entries, got, tt.want)
		}
	}
}
