package controller

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// Ids are unique per family for the allocator's life, never 0, stable per
// address and port; when a family runs out, the id of the address gone
// longest is reused, never a live one.
func TestIDAlloc(t *testing.T) {
	a := newIDAlloc()
	seen := map[uint8]netip.AddrPort{}
	for i := range 127 {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)}), 0)
		id, ok := a.get(ap, nil)
		if !ok || id < 1 || id > 127 {
			t.Fatalf("%v: id %d, %v; want 1-127", ap, id, ok)
		}
		if o, dup := seen[id]; dup {
			t.Fatalf("id %d given to %v and %v", id, o, ap)
		}
		seen[id] = ap
		if again, _ := a.get(ap, nil); again != id {
			t.Fatalf("%v: id %d then %d", ap, id, again)
		}
	}
	v6, ok := a.get(netip.MustParseAddrPort("[fd00::1]:0"), nil)
	if !ok || v6 < 128 {
		t.Fatalf("IPv6 id %d, %v: want 128-255", v6, ok)
	}
	withPort, _ := a.get(netip.MustParseAddrPort("10.0.0.0:443"), nil)
	first, _ := a.get(netip.MustParseAddrPort("10.0.0.0:0"), nil)
	if withPort == first {
		t.Fatalf("10.0.0.0 with and without port 443 share id %d", first)
	}
	// withPort took the id of the address given out longest ago (the
	// family was full and live says nothing is on an interface).
	if withPort != 1 {
		t.Fatalf("a full family reused id %d, want 1 (the oldest)", withPort)
	}
	live := func(netip.Addr) bool { return true }
	if id, ok := a.get(netip.MustParseAddrPort("10.9.9.9:0"), live); ok {
		t.Fatalf("every IPv4 id live: got %d", id)
	}
	// Foreign ids are never given out; an address that had one moves.
	b := newIDAlloc()
	b.adopt(netip.MustParseAddrPort("10.0.0.1:0"), 1)
	b.setForeign([]uint8{1, 2})
	if id, _ := b.get(netip.MustParseAddrPort("10.0.0.1:0"), nil); id != 3 {
		t.Fatalf("address whose id became foreign: id %d, want 3", id)
	}
}

// fakeCtlNet is fakeController in a namespace of its own: links by index
// and name, one IPv4 address each (10.2.<index>.2/24).
func fakeCtlNet(t *testing.T, policyYAML string, links map[int]string, dir string) (*Controller, *fakeKernel) {
	t.Helper()
	st := netmon.State{Links: map[int]netmon.Link{}, Addrs: map[int][]netmon.Addr{}}
	for idx, name := range links {
		st.Links[idx] = netmon.Link{Index: idx, Name: name, AdminUp: true, OperUp: true}
		st.Addrs[idx] = []netmon.Addr{{Index: idx, Prefix: netip.MustParsePrefix(fmt.Sprintf("10.2.%d.2/24", idx))}}
	}
	c, k, _ := fakeController(t, policyYAML, &testbed.LockedBuffer{})
	// Forget the fake namespace fakeController set up.
	c.conns, c.ids = map[uint32]*conn{}, newIDAlloc()
	k.endpoints, k.epCmds, k.cmds = nil, nil, nil
	c.netRaw = func() netmon.State { return st }
	c.netSt = c.view(st)
	c.ifs = buildIfaces(c.pol, c.netSt, nil, c.now())
	if dir != "" {
		c.idPath = filepath.Join(dir, "ids.json")
	}
	return c, k
}

// Interfaces whose indexes differ by 120 (5 and 125: ifindex%120+1 gave
// both id 6, and the kernel refused the second subflow, "did not match
// address and id") get ids of their own, in subflow creates and in
// in-kernel PM endpoints.
func TestLocalIDsHighIfindex(t *testing.T) {
	const pol = "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n  - match: \"lte*\"\n    role: lte\nmetrics: {listen: \"\"}\nstatus_socket: \"\"\n"
	links := map[int]string{2: "wifi0", 5: "lte1", 125: "lte2", 245: "lte3"}
	c, k := fakeCtlNet(t, pol, links, "")
	cn := newConn(7)
	cn.established, cn.local, cn.remote = true, netip.MustParseAddrPort("10.2.2.2:40000"), fakeRemote
	initial := pathmgr.Subflow{Local: cn.local, Remote: cn.remote}
	cn.subs = []*sub{{sf: initial, ifindex: 2}}
	c.conns[7] = cn
	c.reconcileConn(cn)
	ids := map[string]bool{}
	for _, cmd := range k.take() {
		f := strings.Fields(cmd) // create IDX>DST id N backup B
		if len(f) < 4 || ids[f[3]] {
			t.Fatalf("creates %q: id %s twice", cmd, f[3])
		}
		ids[f[3]] = true
	}
	if len(ids) != 3 {
		t.Fatalf("creates from lte1, lte2, lte3 with ids %v, want 3 distinct", ids)
	}

	const kpol = "path_manager: kernel\ninterfaces:\n  - name: wifi0\n    role: wifi\n  - match: \"lte*\"\n    role: lte\nmetrics: {listen: \"\"}\nstatus_socket: \"\"\n"
	c, k = fakeCtlNet(t, kpol, links, "")
	c.applyKernelPM()
	byID := map[uint8]netip.Addr{}
	for _, e := range k.endpoints {
		if o, dup := byID[e.ID]; dup {
			t.Fatalf("endpoint id %d for %s and %s", e.ID, o, e.Addr)
		}
		byID[e.ID] = e.Addr
	}
	if len(byID) != 4 {
		t.Fatalf("endpoints %v, want one per interface", k.endpoints)
	}
}

// The in-kernel PM's endpoints are the daemon's because it made them, not
// because their id and interface look derived: a hand-made endpoint on a
// non-policy interface whose id is what ifindex%120+1 gives (the old test
// of ownership, which deleted it) and one on a policy interface's address
// are never touched, and the daemon makes no endpoint for that address.
// Its own endpoints follow the interfaces, and a restarted daemon
// recognises them from its record (none duplicated, none deleted), or
// without the record leaves them alone.
func TestKernelPMEndpointOwnership(t *testing.T) {
	const pol = "path_manager: kernel\ninterfaces:\n  - name: wifi0\n    role: wifi\n  - name: lte0\n    role: lte\n  - name: eth0\n    role: ethernet\nmetrics: {listen: \"\"}\nstatus_socket: \"\"\n"
	links := map[int]string{2: "wifi0", 3: "lte0", 4: "eth0", 5: "eth9"}
	dir := t.TempDir()
	c, k := fakeCtlNet(t, pol, links, dir)
	foreign := []pathmgr.Endpoint{
		{ID: 6, Addr: netip.MustParseAddr("10.2.5.2"), IfIndex: 5, Flags: pathmgr.FlagSubflow}, // eth9: 5%120+1 = 6
		{ID: 40, Addr: netip.MustParseAddr("10.2.4.2"), IfIndex: 4, Flags: pathmgr.FlagSignal}, // eth0's address, made by hand
	}
	k.endpoints = slices.Clone(foreign)
	c.applyKernelPM()
	c.applyKernelPM()
	has := func(e pathmgr.Endpoint) bool {
		return slices.ContainsFunc(k.endpoints, func(x pathmgr.Endpoint) bool { return x.ID == e.ID && x.Addr == e.Addr })
	}
	for _, e := range foreign {
		if !has(e) {
			t.Fatalf("the hand-made endpoint %d %s is gone: %v", e.ID, e.Addr, k.epCmds)
		}
	}
	mine := func() []string {
		var out []string
		for _, e := range k.endpoints {
			if e.ID != 6 && e.ID != 40 {
				out = append(out, e.Addr.String())
			}
		}
		slices.Sort(out)
		return out
	}
	if got := mine(); !slices.Equal(got, []string{"10.2.2.2", "10.2.3.2"}) {
		t.Fatalf("the daemon's endpoints %v, want wifi0's and lte0's (eth0's address has a hand-made one)", got)
	}
	for _, cmd := range k.epCmds {
		if strings.HasPrefix(cmd, "del") || strings.Contains(cmd, " 6 ") || strings.Contains(cmd, " 40 ") {
			t.Fatalf("commands %q touch a hand-made endpoint or delete one", k.epCmds)
		}
	}

	// lte0 goes: its endpoint goes; the hand-made ones stay.
	st := c.netRaw()
	delete(st.Addrs, 3)
	c.netRaw = func() netmon.State { return st }
	c.netSt = c.view(st)
	c.ifs = buildIfaces(c.pol, c.netSt, c.ifs, c.now())
	c.applyKernelPM()
	if got := mine(); !slices.Equal(got, []string{"10.2.2.2"}) || !has(foreign[0]) || !has(foreign[1]) {
		t.Fatalf("after lte0 lost its address: endpoints %v", k.endpoints)
	}

	// A restart with the record: the same endpoints, nothing made twice.
	before := slices.Clone(k.endpoints)
	r, k2 := fakeCtlNet(t, pol, links, dir)
	k2.endpoints = slices.Clone(before)
	recorded, err := readIDFile(c.idPath)
	if err != nil || len(recorded.Endpoints) != 1 {
		t.Fatalf("record %+v, %v; want the one endpoint the daemon has", recorded, err)
	}
	r.ids.load(recorded)
	r.netRaw, r.netSt, r.ifs = c.netRaw, c.netSt, buildIfaces(r.pol, c.netSt, nil, r.now())
	r.applyKernelPM()
	if len(k2.epCmds) != 0 || !slices.EqualFunc(k2.endpoints, before, func(a, b pathmgr.Endpoint) bool { return a.ID == b.ID && a.Addr == b.Addr }) {
		t.Fatalf("restart with the record: commands %q, endpoints %v (before %v)", k2.epCmds, k2.endpoints, before)
	}

	// Without the record: every endpoint is someone else's.
	n, k3 := fakeCtlNet(t, pol, links, "")
	k3.endpoints = slices.Clone(before)
	n.netRaw, n.netSt, n.ifs = c.netRaw, c.netSt, buildIfaces(n.pol, c.netSt, nil, n.now())
	n.applyKernelPM()
	for _, cmd := range k3.epCmds {
		if strings.HasPrefix(cmd, "del") {
			t.Fatalf("restart without the record deleted an endpoint: %q", k3.epCmds)
		}
	}
}
