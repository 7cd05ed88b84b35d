package controller

import (
	"errors"
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
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

var (
	remote = netip.MustParseAddrPort("10.0.0.1:443")
	peerA  = netip.MustParseAddrPort("10.0.2.1:443")
	peerB  = netip.MustParseAddrPort("10.0.3.1:8443")
	peer6  = netip.MustParseAddrPort("[fd00::1]:443")
	wifiA  = netip.MustParseAddr("10.1.1.2")
	lteA   = netip.MustParseAddr("10.1.2.2")
)

func TestTargets(t *testing.T) {
	p := testPolicy(t, "aggregate")
	w, _ := ifaces(p)
	w.addrs = []netip.Addr{wifiA}
	cn := newConn(1)
	cn.remote = netip.AddrPortFrom(netip.MustParseAddr("::ffff:10.0.0.1"), 443) // as an IPv6 socket shows it
	cn.addPeer(7, peerB)
	cn.addPeer(3, peer6)
	cn.addPeer(2, peerA)
	cn.addPeer(7, peerB)  // a repeated ADD_ADDR keeps its place
	cn.addPeer(9, remote) // the peer announcing the address in use: no second destination
	if got, want := cn.dests(nil, false), []netip.AddrPort{remote}; !slices.Equal(got, want) {
		t.Errorf("dests(ignore) = %v, want %v", got, want)
	}
	if got, want := cn.dests(nil, true), []netip.AddrPort{remote, peerB, peer6, peerA}; !slices.Equal(got, want) {
		t.Errorf("dests(use) = %v, want %v (remote first, then in announcement order, each once)", got, want)
	}
	for _, tc := range []struct {
		max  int
		want []netip.AddrPort
	}{
		{1, []netip.AddrPort{remote}},
		{2, []netip.AddrPort{remote, peerB}},
		// the IPv6 address does not use up the quota of an IPv4-only interface
		{3, []netip.AddrPort{remote, peerB, peerA}},
		{8, []netip.AddrPort{remote, peerB, peerA}},
	} {
		w.pol.MaxSubflows = tc.max
		if got := targets(nil, w, cn.dests(nil, true), nil, nil); !slices.Equal(got, tc.want) {
			t.Errorf("max_subflows %d: targets = %v, want %v", tc.max, got, tc.want)
		}
	}
}

// recPM records the commands; create fails for the destinations in refuse.
type recPM struct {
	creates  []string // "ifindex>dst"
	destroys []string // "local>remote"
	refuse   map[netip.AddrPort]bool
}

func (r *recPM) CreateSubflow(_ uint32, l pathmgr.Endpoint, dst netip.AddrPort) error {
	r.creates = append(r.creates, fmt.Sprintf("%d>%s", l.IfIndex, dst))
	if r.refuse[dst] {
		return errors.New("refused")
	}
	return nil
}
func (r *recPM) DestroySubflow(_ uint32, sf pathmgr.Subflow) error {
	r.destroys = append(r.destroys, fmt.Sprintf("%s>%s", sf.Local, sf.Remote))
	return nil
}
func (r *recPM) SetSubflowBackup(uint32, pathmgr.Subflow, bool) error { return nil }
func (r *recPM) Announce(uint32, pathmgr.Endpoint) error              { return nil }
func (r *recPM) Remove(uint32, uint8) error                           { return nil }

func (r *recPM) take() (c, d []string) {
	c, d = r.creates, r.destroys
	r.creates, r.destroys = nil, nil
	slices.Sort(c)
	slices.Sort(d)
	return
}

// peerController is a client controller with wifi0 (index 2) and lte0
// (index 3) up, driven by hand-made events.
func peerController(t *testing.T, extra string, maxSub int) (*Controller, *recPM) {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf("path_manager: userspace\n%s\ninterfaces:\n  - name: wifi0\n    role: wifi\n    max_subflows: %d\n  - name: lte0\n    role: lte\n    max_subflows: %d\n", extra, maxSub, maxSub)))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Policy: p, Metrics: metrics.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recPM{refuse: map[netip.AddrPort]bool{}}
	c.pm = rec
	c.netSt = netmon.State{Links: map[int]netmon.Link{}, Addrs: map[int][]netmon.Addr{
		2: {{Index: 2, Prefix: netip.PrefixFrom(wifiA, 24)}},
		3: {{Index: 3, Prefix: netip.PrefixFrom(lteA, 24)}},
	}}
	w, l := ifaces(p)
	w.addrs, l.addrs = []netip.Addr{wifiA}, []netip.Addr{lteA}
	c.ifs = map[int]*iface{2: w, 3: l}
	return c, rec
}

func ev(typ pathmgr.EventType, local, remote netip.AddrPort, ifindex int) pathmgr.Event {
	return pathmgr.Event{Type: typ, Token: 1, Local: local, Remote: remote, IfIndex: ifindex}
}

// announced is the peer's ADD_ADDR of addr with address id id on
// connection 1.
func announced(addr netip.AddrPort, id uint8) pathmgr.Event {
	a := ev(pathmgr.EventAnnounced, netip.AddrPort{}, addr, 0)
	a.RemoteID = id
	return a
}

func TestPeerAddressSubflows(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: use", 2)
	now := time.Now()
	initial := netip.AddrPortFrom(wifiA, 40000)
	c.handlePM(ev(pathmgr.EventEstablished, initial, remote, 2), now)
	if cr, _ := rec.take(); !slices.Equal(cr, []string{"3>" + remote.String()}) {
		t.Fatalf("established: creates %v, want lte to the remote only", cr)
	}
	// The peer announces two addresses; max_subflows 2 leaves room for
	// the first announced only, from each interface; the second (a lower
	// id) does not displace it.
	c.handlePM(announced(peerB, 7), now)
	c.handlePM(announced(peerA, 2), now)
	if cr, _ := rec.take(); !slices.Equal(cr, []string{"2>" + peerB.String(), "3>" + peerB.String()}) {
		t.Errorf("creates after the announcements: %v, want wifi and lte to %s", cr, peerB)
	}
	// Pending creates are not repeated.
	c.reconcileAll()
	c.reconcileAll()
	if cr, d := rec.take(); len(cr)+len(d) != 0 {
		t.Errorf("reconcile repeated pending creates %v or destroyed %v", cr, d)
	}
}

// Announcements before the connection is established wait for it; then
// every interface opens remote + first peer address, and a withdrawn
// address's subflows are left to the kernel for a grace period, then
// destroyed, never the last subflow.
func TestPeerAddressLifecycle(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: use", 2)
	now := time.Now()
	c.handlePM(announced(peerA, 2), now)
	if cr, _ := rec.take(); len(cr) != 0 {
		t.Fatalf("creates before established: %v", cr)
	}
	initial := netip.AddrPortFrom(wifiA, 40000)
	c.handlePM(ev(pathmgr.EventEstablished, initial, remote, 2), now)
	cr, _ := rec.take()
	if want := []string{"2>" + peerA.String(), "3>" + remote.String(), "3>" + peerA.String()}; !slices.Equal(cr, want) {
		t.Fatalf("creates %v, want %v", cr, want)
	}
	subs := map[string]netip.AddrPort{
		"2>" + peerA.String():  netip.AddrPortFrom(wifiA, 40001),
		"3>" + peerA.String():  netip.AddrPortFrom(lteA, 40002),
		"3>" + remote.String(): netip.AddrPortFrom(lteA, 40003),
	}
	for k, l := range subs {
		dst := peerA
		if k[2:] == remote.String() {
			dst = remote
		}
		c.handlePM(ev(pathmgr.EventSubEstablished, l, dst, int(k[0]-'0')), now)
	}
	cn := c.conns[1]
	if len(cn.subs) != 4 || len(cn.pending) != 0 {
		t.Fatalf("subs %d pending %v, want 4 subflows and nothing pending", len(cn.subs), cn.pending)
	}
	c.reconcileAll()
	if cr, d := rec.take(); len(cr)+len(d) != 0 {
		t.Fatalf("steady state changed: creates %v destroys %v", cr, d)
	}

	// The peer withdraws the address: nothing destroyed at once...
	r := ev(pathmgr.EventRemoved, netip.AddrPort{}, netip.AddrPort{}, 0)
	r.RemoteID = 2
	c.handlePM(r, now)
	if cr, d := rec.take(); len(cr)+len(d) != 0 {
		t.Fatalf("on REMOVED: creates %v destroys %v, want none (the kernel closes them)", cr, d)
	}
	// ... the kernel closes one itself; the other is destroyed after the grace.
	c.handlePM(ev(pathmgr.EventSubClosed, subs["2>"+peerA.String()], peerA, 2), now)
	for _, s := range cn.subs {
		if !s.goneAt.IsZero() {
			s.goneAt = now.Add(-goneGrace)
		}
	}
	c.reconcileAll()
	cr, d := rec.take()
	if want := []string{subs["3>"+peerA.String()].String() + ">" + peerA.String()}; len(cr) != 0 || !slices.Equal(d, want) {
		t.Errorf("after the grace: creates %v destroys %v, want destroys %v", cr, d, want)
	}
	if s := c.snapshot(); len(s.Connections) != 1 || len(s.Connections[0].PeerAddrs) != 0 {
		t.Errorf("snapshot peer addresses after REMOVED: %+v", s.Connections)
	}
}

// The last subflow survives even when its destination is withdrawn.
func TestPeerAddressLastSubflow(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: use", 2)
	now := time.Now()
	c.ifs[3].up = false // lte down
	c.handlePM(announced(peerA, 2), now)
	initial := netip.AddrPortFrom(wifiA, 40000)
	c.handlePM(ev(pathmgr.EventEstablished, initial, remote, 2), now)
	onPeer := netip.AddrPortFrom(wifiA, 40001)
	c.handlePM(ev(pathmgr.EventSubEstablished, onPeer, peerA, 2), now)
	c.handlePM(ev(pathmgr.EventSubClosed, initial, remote, 2), now)
	rec.take()
	c.conns[1].remote = remote
	rec.refuse[remote] = true // the remote address is unreachable now
	r := ev(pathmgr.EventRemoved, netip.AddrPort{}, netip.AddrPort{}, 0)
	r.RemoteID = 2
	c.handlePM(r, now.Add(-2*goneGrace))
	c.reconcileAll()
	if _, d := rec.take(); len(d) != 0 {
		t.Errorf("destroyed the last subflow: %v", d)
	}
}

// peer_addresses: ignore, or max_subflows 1, opens nothing to announced
// addresses; a refused create backs off only its own (interface,
// destination).
func TestPeerAddressIgnoredAndBackoff(t *testing.T) {
	for _, tc := range []struct {
		extra string
		max   int
	}{{"peer_addresses: ignore", 2}, {"peer_addresses: use", 1}} {
		c, rec := peerController(t, tc.extra, tc.max)
		now := time.Now()
		c.handlePM(ev(pathmgr.EventEstablished, netip.AddrPortFrom(wifiA, 40000), remote, 2), now)
		c.handlePM(announced(peerA, 2), now)
		if cr, _ := rec.take(); !slices.Equal(cr, []string{"3>" + remote.String()}) {
			t.Errorf("%s, max_subflows %d: creates %v, want lte to the remote only", tc.extra, tc.max, cr)
		}
		if s := c.snapshot(); len(s.Connections[0].PeerAddrs) != 1 || s.Connections[0].PeerAddrs[0].Addr != peerA {
			t.Errorf("snapshot peer addresses: %+v", s.Connections[0].PeerAddrs)
		}
	}

	c, rec := peerController(t, "peer_addresses: use", 2)
	rec.refuse[peerA] = true
	now := time.Now()
	c.handlePM(ev(pathmgr.EventEstablished, netip.AddrPortFrom(wifiA, 40000), remote, 2), now)
	c.handlePM(announced(peerA, 2), now)
	rec.take()
	cn := c.conns[1]
	if _, ok := cn.backoff.get(slot{3, peerA}); !ok || len(cn.backoff) != 2 {
		t.Errorf("backoff %v, want the two slots to peerA", cn.backoff)
	}
	if _, ok := cn.pending.get(slot{3, remote}); !ok {
		t.Errorf("pending %v, want lte to the remote", cn.pending)
	}
	c.reconcileAll()
	if cr, _ := rec.take(); len(cr) != 0 {
		t.Errorf("retried during the backoff: %v", cr)
	}
	for i := range cn.backoff {
		cn.backoff[i].val = now.Add(-time.Millisecond)
	}
	c.reconcileAll()
	if cr, _ := rec.take(); !slices.Equal(cr, []string{"2>" + peerA.String(), "3>" + peerA.String()}) {
		t.Errorf("after the backoff: creates %v, want the two to peerA again", cr)
	}
}

// After a restart the inventory's subflows to announced addresses (remote
// id != 0) bring those addresses back.
func TestAdoptPeerAddresses(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: use", 2)
	var est pathmgr.TCPState = 1
	initial := netip.AddrPortFrom(wifiA, 40000)
	list := []pathmgr.Connection{{Token: 1, Local: initial, Remote: remote, State: est, Subflows: []pathmgr.SubflowInfo{
		{Local: initial, Remote: remote, State: est, IfIndex: 2},
		{Local: netip.AddrPortFrom(wifiA, 40001), Remote: peerA, State: est, IfIndex: 2, RemoteID: 4},
	}}}
	c.adopt(list, time.Now())
	if got := c.conns[1].peers; len(got) != 1 || got.at(4) != peerA {
		t.Fatalf("adopted peers %v, want id 4 %s", got, peerA)
	}
	c.reconcileAll()
	if cr, d := rec.take(); !slices.Equal(cr, []string{"3>" + remote.String(), "3>" + peerA.String()}) || len(d) != 0 {
		t.Errorf("after adopt: creates %v destroys %v, want lte to remote and peerA", cr, d)
	}
}

// A reload to peer_addresses: ignore closes the subflows to announced
// addresses; one back to use opens them again.
func TestPeerAddressReloadIgnore(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: use", 2)
	now := time.Now()
	initial := netip.AddrPortFrom(wifiA, 40000)
	c.handlePM(ev(pathmgr.EventEstablished, initial, remote, 2), now)
	c.handlePM(announced(peerA, 2), now)
	onPeer := netip.AddrPortFrom(wifiA, 40001)
	c.handlePM(ev(pathmgr.EventSubEstablished, onPeer, peerA, 2), now)
	c.handlePM(ev(pathmgr.EventSubEstablished, netip.AddrPortFrom(lteA, 40002), remote, 3), now)
	c.handlePM(ev(pathmgr.EventSubEstablished, netip.AddrPortFrom(lteA, 40003), peerA, 3), now)
	rec.take()
	use := c.pol
	ign, _ := peerController(t, "peer_addresses: ignore", 2)
	c.pol = ign.pol
	c.reconcileAll()
	cr, d := rec.take()
	if want := []string{"10.1.1.2:40001>" + peerA.String(), "10.1.2.2:40003>" + peerA.String()}; len(cr) != 0 || !slices.Equal(d, want) {
		t.Errorf("to ignore: creates %v destroys %v, want destroys %v", cr, d, want)
	}
	c.pol = use
	c.reconcileAll()
	if cr, _ := rec.take(); !slices.Equal(cr, []string{"2>" + peerA.String(), "3>" + peerA.String()}) {
		t.Errorf("back to use: creates %v", cr)
	}
}

// A resync between the peer's RM_ADDR and the kernel closing the subflows
// does not bring the withdrawn address back.
func TestAdoptAfterRemoved(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: use", 2)
	now := time.Now()
	initial := netip.AddrPortFrom(wifiA, 40000)
	c.handlePM(ev(pathmgr.EventEstablished, initial, remote, 2), now)
	c.handlePM(announced(peerA, 4), now)
	onPeer := netip.AddrPortFrom(wifiA, 40001)
	c.handlePM(ev(pathmgr.EventSubEstablished, onPeer, peerA, 2), now)
	r := ev(pathmgr.EventRemoved, netip.AddrPort{}, netip.AddrPort{}, 0)
	r.RemoteID = 4
	c.handlePM(r, now)
	var est pathmgr.TCPState = 1
	c.adopt([]pathmgr.Connection{{Token: 1, Local: initial, Remote: remote, State: est, Subflows: []pathmgr.SubflowInfo{
		{Local: initial, Remote: remote, State: est, IfIndex: 2},
		{Local: onPeer, Remote: peerA, State: est, IfIndex: 2, RemoteID: 4},
	}}}, now)
	if got := c.conns[1].peers; len(got) != 0 {
		t.Errorf("peers after adopt = %v, want none (withdrawn)", got)
	}
	rec.take()
	c.reconcileAll()
	if cr, _ := rec.take(); slices.Contains(cr, "2>"+peerA.String()) || slices.Contains(cr, "3>"+peerA.String()) {
		t.Errorf("creates to the withdrawn address after adopt: %v", cr)
	}
}

// Two subflows in one (interface, destination) slot: one is destroyed.
func TestDuplicateSlot(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: ignore", 1)
	now := time.Now()
	c.handlePM(ev(pathmgr.EventEstablished, netip.AddrPortFrom(wifiA, 40000), remote, 2), now)
	c.handlePM(ev(pathmgr.EventSubEstablished, netip.AddrPortFrom(lteA, 40009), remote, 3), now)
	rec.take()
	c.handlePM(ev(pathmgr.EventSubEstablished, netip.AddrPortFrom(lteA, 40002), remote, 3), now)
	c.reconcileAll()
	if cr, d := rec.take(); len(cr) != 0 || !slices.Equal(d, []string{"10.1.2.2:40009>" + remote.String()}) {
		t.Errorf("creates %v destroys %v, want the later lte subflow destroyed", cr, d)
	}
}

// A create that is neither established nor closed stays pending: a join to
// an unreachable address retries its SYN for about two minutes, and a new
// create every few seconds would pile up half-open subflows. Its SUB_CLOSED
// frees the slot for a retry after the back-off.
func TestPendingCreateNotRepeated(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: use", 2)
	now := time.Now()
	c.ifs[3].up = false // wifi only
	c.handlePM(announced(peerA, 2), now)
	c.handlePM(ev(pathmgr.EventEstablished, netip.AddrPortFrom(wifiA, 40000), remote, 2), now)
	if cr, _ := rec.take(); !slices.Equal(cr, []string{"2>" + peerA.String()}) {
		t.Fatalf("creates %v, want one to the announced address", cr)
	}
	cn := c.conns[1]
	k := slot{2, peerA}
	for _, age := range []time.Duration{3 * time.Second, 10 * time.Second, 60 * time.Second} {
		cn.pending.set(k, time.Now().Add(-age))
		c.reconcileConn(cn)
		if cr, _ := rec.take(); len(cr) != 0 {
			t.Errorf("a create pending for %v was sent again: %v", age, cr)
		}
	}
	// The join fails: SUB_CLOSED for the slot; retried after the back-off.
	c.handlePM(ev(pathmgr.EventSubClosed, netip.AddrPortFrom(wifiA, 40001), peerA, 2), now)
	c.reconcileConn(cn)
	if cr, _ := rec.take(); len(cr) != 0 {
		t.Errorf("retried at once after SUB_CLOSED: %v", cr)
	}
	cn.backoff.set(k, time.Now().Add(-time.Millisecond))
	c.reconcileConn(cn)
	if cr, _ := rec.take(); !slices.Equal(cr, []string{"2>" + peerA.String()}) {
		t.Errorf("after the back-off: creates %v, want the retry", cr)
	}
}

// Withdrawing an id whose address is still a destination — announced again
// under another id, or the connection's own remote address — leaves its
// subflows alone.
func TestPeerGoneKeepsLiveDestinations(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: use", 2)
	now := time.Now()
	c.ifs[3].up = false
	for id, addr := range map[uint8]netip.AddrPort{2: peerA, 3: peerA, 4: remote} {
		c.handlePM(announced(addr, id), now)
	}
	initial := netip.AddrPortFrom(wifiA, 40000)
	c.handlePM(ev(pathmgr.EventEstablished, initial, remote, 2), now)
	c.handlePM(ev(pathmgr.EventSubEstablished, netip.AddrPortFrom(wifiA, 40001), peerA, 2), now)
	rec.take()
	for _, id := range []uint8{3, 4} {
		r := ev(pathmgr.EventRemoved, netip.AddrPort{}, netip.AddrPort{}, 0)
		r.RemoteID = id
		c.handlePM(r, now.Add(-2*goneGrace))
	}
	for _, s := range c.conns[1].subs {
		if !s.goneAt.IsZero() {
			t.Errorf("subflow %v marked gone though its destination is still announced or in use", s.sf)
		}
	}
	c.reconcileAll()
	if cr, d := rec.take(); len(cr)+len(d) != 0 {
		t.Errorf("creates %v destroys %v, want none", cr, d)
	}
}

// max_subflows 1 with a peer address: the remote address refuses lte's
// subflow, so lte tries the announced address instead of waiting on the
// remote; once that subflow works, the remote's expired back-off does not
// take its place back (no create to the remote, no destroy).
func TestFailingDestinationYieldsItsPlace(t *testing.T) {
	c, rec := peerController(t, "peer_addresses: use", 1)
	rec.refuse[remote] = true
	now := time.Now()
	c.handlePM(ev(pathmgr.EventEstablished, netip.AddrPortFrom(wifiA, 40000), remote, 2), now)
	c.handlePM(announced(peerA, 2), now)
	if cr, _ := rec.take(); !slices.Equal(cr, []string{"3>" + remote.String(), "3>" + peerA.String()}) {
		t.Fatalf("creates %v, want lte to the remote (refused), then to the announced address", cr)
	}
	lteSub := netip.AddrPortFrom(lteA, 40100)
	c.handlePM(ev(pathmgr.EventSubEstablished, lteSub, peerA, 3), now)
	cn := c.conns[1]
	for i := range cn.backoff {
		cn.backoff[i].val = now.Add(-time.Second) // the remote could be tried again
	}
	delete(rec.refuse, remote)
	c.reconcileAll()
	if cr, d := rec.take(); len(cr) != 0 || len(d) != 0 {
		t.Errorf("after the back-off: creates %v, destroys %v; want the working subflow kept, nothing else", cr, d)
	}
	// Its subflow gone, the slot goes back to the first destination.
	c.handlePM(ev(pathmgr.EventSubClosed, lteSub, peerA, 3), now)
	c.reconcileAll()
	if cr, _ := rec.take(); !slices.Equal(cr, []string{"3>" + remote.String()}) {
		t.Errorf("after the subflow closed: creates %v, want lte to the remote", cr)
	}
}

// A connection whose peer set the C flag (deny_join_id0 in the CREATED
// event): with peer_addresses: use, the lte subflow goes to the address
// the peer announces, never to the connection's remote address, and wifi
// keeps its initial subflow to the remote; before any announcement lte
// gets nothing. Without the flag, lte joins the remote address (the
// first destination) as before. Oracle: the commands sent to the fake
// kernel.
func TestCFlagNoJoinToRemote(t *testing.T) {
	peers := reloadBases["peers"] // peer_addresses: use, max_subflows 1
	for _, cflag := range []bool{true, false} {
		c, k, _ := fakeController(t, peers, &testbed.LockedBuffer{})
		const tok = 42
		wifi := netip.MustParseAddrPort("10.1.1.2:41000")
		ev := pathmgr.Event{Token: tok, Local: wifi, Remote: fakeRemote, IfIndex: 2, DenyJoinID0: cflag}
		ev.Type = pathmgr.EventCreated
		c.handlePM(ev, c.now())
		ev.Type, ev.DenyJoinID0 = pathmgr.EventEstablished, false // the flag is on both; one suffices
		c.handlePM(ev, c.now())
		got := k.take()
		toRemote := "create 3>" + fakeRemote.String() + " id 1 backup false"
		if cflag && len(got) != 0 {
			t.Errorf("C flag, nothing announced yet: commands %q, want none", got)
		}
		if !cflag && !slices.Equal(got, []string{toRemote}) {
			t.Errorf("no C flag: commands %q, want %q", got, toRemote)
		}
		c.handlePM(pathmgr.Event{Type: pathmgr.EventAnnounced, Token: tok, RemoteID: 3, Remote: fakePeer}, c.now())
		got = k.take()
		if cflag && !slices.Equal(got, []string{"create 3>" + fakePeer.String() + " id 1 backup false"}) {
			t.Errorf("C flag, the peer's address announced: commands %q, want lte to it only", got)
		}
		if !cflag && len(got) != 0 {
			t.Errorf("no C flag: lte already joins the remote; commands %q", got)
		}
		if s := c.snapshot(); s.Connections[len(s.Connections)-1].NoJoinRemote != cflag {
			t.Errorf("status no_join_remote %v, want %v", !cflag, cflag)
		}
	}
}
