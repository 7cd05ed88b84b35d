package controller

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/gigapath/gigapath/pathmgr"
)

// smallMap behaves as a map (get, set, del) and keeps the order keys were
// first set in; emptied, it holds no memory.
func TestSmallMap(t *testing.T) {
	var m smallMap[uint8, string]
	if _, ok := m.get(1); ok || m.at(1) != "" || len(m) != 0 {
		t.Fatalf("empty map: get(1) found something, or len %d", len(m))
	}
	m.set(3, "c")
	m.set(1, "a")
	m.set(2, "b")
	m.set(1, "A") // in place
	keys := func() []uint8 {
		var out []uint8
		for _, e := range m {
			out = append(out, e.key)
		}
		return out
	}
	if got := keys(); !slices.Equal(got, []uint8{3, 1, 2}) {
		t.Errorf("keys %v, want [3 1 2] (the order first set in)", got)
	}
	if v, ok := m.get(1); !ok || v != "A" {
		t.Errorf("get(1) = %q, %v; want A, true", v, ok)
	}
	m.del(1)
	m.del(9) // absent: nothing happens
	if got := keys(); !slices.Equal(got, []uint8{3, 2}) {
		t.Errorf("after del(1): keys %v, want [3 2]", got)
	}
	m.deleteFunc(func(k uint8, v string) bool { return v == "c" })
	if got := keys(); !slices.Equal(got, []uint8{2}) || m.at(2) != "b" {
		t.Errorf("after deleteFunc: %v, want only 2: b", m)
	}
	m.del(2)
	if m != nil {
		t.Errorf("emptied map %v keeps its array (cap %d)", m, cap(m))
	}
}

// A connection's announcements stay in id order whatever order they are
// recorded in; a peer address replaced under its id goes last (subflows
// go to the peer's addresses in the order they were announced).
func TestConnCollectionsOrder(t *testing.T) {
	cn := newConn(1)
	for _, id := range []uint8{5, 2, 9, 2} {
		cn.setAnnounced(pathmgr.Endpoint{ID: id, Addr: netip.AddrFrom4([4]byte{10, 0, 1, id})})
	}
	cn.dropAnnounced(7)
	var ids []uint8
	for _, e := range cn.ann {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []uint8{2, 5, 9}) {
		t.Errorf("announced ids %v, want [2 5 9]", ids)
	}
	for _, id := range []uint8{2, 5, 9} {
		cn.dropAnnounced(id)
	}
	if cn.ann != nil {
		t.Errorf("all withdrawn, ann %v keeps its array", cn.ann)
	}

	a, b, c := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:1"), netip.MustParseAddrPort("10.0.0.3:1")
	cn.addPeer(4, a)
	cn.addPeer(1, b)
	cn.addPeer(4, netip.MustParseAddrPort("[::ffff:10.0.0.1]:1")) // the same address: keeps its place
	if d := cn.dests(nil, true); !slices.Equal(d, []netip.AddrPort{a, b}) {
		t.Errorf("dests %v, want [%v %v]", d, a, b)
	}
	cn.addPeer(4, c) // another address under id 4: goes last
	if d := cn.dests(nil, true); !slices.Equal(d, []netip.AddrPort{b, c}) {
		t.Errorf("dests %v, want [%v %v]", d, b, c)
	}
}
