package controller

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// The handoff carries each connection's announced peer addresses in
// announcement order (not id order), the peer's C flag and the path
// manager the host had; inheritPeers gives them back in that order.
func TestHandoffRoundTrip(t *testing.T) {
	c := &Controller{conns: map[uint32]*conn{}, ids: newIDAlloc(), pmWas: "kernel"}
	a := newConn(7)
	a.addPeer(9, netip.MustParseAddrPort("10.0.9.1:443"))
	a.addPeer(3, netip.MustParseAddrPort("[fd00::9]:443"))
	c.conns[7] = a
	c.conns[8] = newConn(8) // no peers: not carried
	cflag := newConn(9)
	cflag.noJoinRemote = true // no peers yet, but the C flag
	c.conns[9] = cflag
	h, err := parseHandoff(c.makeHandoff())
	if err != nil {
		t.Fatal(err)
	}
	if h.PathManagerWas != "kernel" || len(h.Conns) != 2 || h.Conns[0].Token != 7 || h.Conns[1].Token != 9 {
		t.Fatalf("handoff %+v", h)
	}
	n := &Controller{peersIn: h.connsByToken()}
	c9 := newConn(9)
	if n.inheritPeers(c9); !c9.noJoinRemote {
		t.Error("the C flag was not handed over")
	}
	got := newConn(7)
	n.inheritPeers(got)
	other := newConn(8)
	n.inheritPeers(other)
	if len(other.peers) != 0 || other.noJoinRemote || got.noJoinRemote {
		t.Errorf("connection 8 got peers %v, C flags %v %v", other.peers, other.noJoinRemote, got.noJoinRemote)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("10.0.9.1:443"), netip.MustParseAddrPort("[fd00::9]:443")}
	d := got.dests(nil, true)
	if len(d) != 2 || d[0] != want[0] || d[1] != want[1] {
		t.Errorf("inherited destinations %v, want %v (announcement order)", d, want)
	}
	if got.peers.at(9) != want[0] || got.peers.at(3) != want[1] {
		t.Errorf("ids lost: %+v", got.peers)
	}
}

func TestHandoffRefused(t *testing.T) {
	for in, want := range map[string]string{
		`{"version":2}`: "version 2, this binary reads 1",
		`{"version":1,"path_manager_was":"netlink"}`: `path_manager_was "netlink"`,
		`not json`: "handoff from the previous process",
		`{"version":1,"conns":[{"token":1,"peers":"x"}]}`: "handoff from the previous process",
	} {
		if _, err := parseHandoff([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseHandoff(%s) = %v, want an error with %q", in, err, want)
		}
	}
	if h, err := parseHandoff(nil); h != nil || err != nil {
		t.Errorf("no handoff: %v, %v", h, err)
	}
}

// countingKPM counts the kernel's per-connection address reads.
type countingKPM struct {
	*fakeKernel
	reads int
}

func (k *countingKPM) ConnectionAddrs(uint32) ([]pathmgr.Endpoint, error) {
	k.reads++
	return nil, nil
}

// An upgrade hands over what was announced to each server-side
// connection: the new process adopts them without asking the kernel
// connection by connection (GET_ADDR), and announces nothing again; a
// connection the handoff does not know is still asked about.
func TestHandoffCarriesAnnouncements(t *testing.T) {
	yaml := reloadBases["server"]
	old, _, _ := fakeController(t, yaml, &testbed.LockedBuffer{})
	if len(old.conns[1].ann) == 0 {
		t.Fatal("the fake server connection was announced nothing")
	}
	h, err := parseHandoff(old.makeHandoff())
	if err != nil {
		t.Fatal(err)
	}
	c, k, _ := fakeController(t, yaml, &testbed.LockedBuffer{})
	ck := &countingKPM{fakeKernel: k}
	c.kpm = ck
	clear(c.conns)
	c.peersIn = h.connsByToken()
	list := append(slices.Clone(k.conns), pathmgr.Connection{Token: 2, Local: netip.MustParseAddrPort("10.1.1.2:443"),
		Remote: netip.MustParseAddrPort("10.9.9.8:50000"), State: 1})
	c.adopt(list, c.now())
	c.reconcileEvery()
	if ck.reads != 1 {
		t.Errorf("%d per-connection address reads, want 1 (the connection not handed over)", ck.reads)
	}
	if !slices.Equal(c.conns[1].ann, old.conns[1].ann) {
		t.Errorf("announced %v after the handoff, the old process had %v", c.conns[1].ann, old.conns[1].ann)
	}
	var announces []string
	for _, cmd := range k.take() {
		if strings.HasPrefix(cmd, "announce") {
			announces = append(announces, cmd)
		}
	}
	if len(announces) != len(old.conns[1].ann) {
		t.Errorf("announcements after the adoption %q, want %d: to the connection not handed over only", announces, len(old.conns[1].ann))
	}
}
