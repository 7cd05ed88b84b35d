package controller

import (
	"net/netip"
	"slices"
	"time"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/routing"
	"github.com/gigapath/gigapath/pathmgr"
)

// PM is what the controller asks of the userspace path manager
// (pathmgr.Client): the commands of the decision core.
type PM interface {
	CreateSubflow(token uint32, local pathmgr.Endpoint, remote netip.AddrPort) error
	DestroySubflow(token uint32, sf pathmgr.Subflow) error
	SetSubflowBackup(token uint32, sf pathmgr.Subflow, backup bool) error
	Announce(token uint32, e pathmgr.Endpoint) error
	Remove(token uint32, id uint8) error
}

// kernelPM is what the controller asks of the in-kernel path manager and
// of the kernel's per-connection address lists (pathmgr.Client).
type kernelPM interface {
	SetLimits(u pathmgr.LimitsUpdate) error
	Endpoints() ([]pathmgr.Endpoint, error)
	AddEndpoint(e pathmgr.Endpoint) error
	DeleteEndpoint(id uint8, addr netip.Addr) error
	ConnectionAddrs(token uint32) ([]pathmgr.Endpoint, error)
}

// inventory lists the kernel's MPTCP connections (pathmgr.Inventory).
type inventory interface {
	Connections(opts pathmgr.ListOptions) ([]pathmgr.Connection, error)
}

// router keeps the per-interface tables and source rules
// (routing.Manager).
type router interface {
	Ensure(p routing.Path) error
	Prune(keep []int) error
	Cleanup() error
	Close() error
}

// conn is one MPTCP connection the controller tracks.
type conn struct {
	token uint32
	// swept is the mark of the last adoption sweep whose dump held the
	// connection (sweep.gen).
	swept         uint32
	local, remote netip.AddrPort
	server        bool
	// noJoinRemote: the peer set the "C" flag (RFC 8684 §3.1; the
	// kernel's deny_join_id0, in the CREATED and ESTABLISHED events): no
	// subflow may be opened to the connection's remote address, only to
	// the addresses the peer announces.
	noJoinRemote bool
	established  bool
	// assumed: the real-time thread's creates were taken as sent when the
	// loop took the connection in (rtcreates.go).
	assumed  bool
	estAt    time.Time // when this process saw ESTABLISHED (zero: adopted)
	measured bool      // reaction latency recorded
	// The collections below are slices, nil while empty: a connection
	// holds none, one or two entries in each, and a Go map with any
	// entry costs a group of eight slots (BenchmarkStateMemory).
	//
	// ann is what this process announced to the connection (server
	// side), or found announced when it adopted it, in id order; change
	// it with setAnnounced and dropAnnounced.
	ann      []pathmgr.Endpoint
	annRetry smallMap[uint8, time.Time] // an announce the kernel refused: not before
	// subs changes only through putSub and dropSub (they keep the gauges'
	// counts); subOf finds one.
	subs []*sub
	// peers are the addresses the peer announced (ADD_ADDR), by its
	// address id, in the order they came, the order subflows go to them;
	// a REMOVED event drops one.
	peers   smallMap[uint8, netip.AddrPort]
	pending smallMap[slot, time.Time] // CreateSubflow sent, no sub_established yet
	backoff smallMap[slot, time.Time] // do not retry before
	// due is when the connection's earliest timer fires (timers.go); zero
	// when none is armed.
	due time.Time
	// touched is the controller's change clock at the last change
	// (resync.go).
	touched uint64
}

// addPeer records an address the peer announced under id; one already
// known under id keeps its place, another address under id goes last.
func (cn *conn) addPeer(id uint8, addr netip.AddrPort) {
	if p, ok := cn.peers.get(id); ok && norm(p) == norm(addr) {
		return
	}
	cn.peers.del(id)
	cn.peers.set(id, addr)
}

// subOf is the connection's subflow sf, nil when it has none.
func (cn *conn) subOf(sf pathmgr.Subflow) *sub { return subIn(cn.subs, sf) }

// subIn is the subflow sf of subs, nil when it is not there.
func subIn(subs []*sub, sf pathmgr.Subflow) *sub {
	if i := subIndex(subs, sf); i >= 0 {
		return subs[i]
	}
	return nil
}

// subIndex is the position of the subflow sf in subs, -1 when absent.
func subIndex(subs []*sub, sf pathmgr.Subflow) int {
	return slices.IndexFunc(subs, func(s *sub) bool { return s.sf == sf })
}

// announced is what the connection was told under id.
func (cn *conn) announced(id uint8) (pathmgr.Endpoint, bool) { return wanted(cn.ann, id) }

// setAnnounced records that the connection was told e (under e.ID).
func (cn *conn) setAnnounced(e pathmgr.Endpoint) {
	if i, ok := idIndex(cn.ann, e.ID); ok {
		cn.ann[i] = e
	} else {
		cn.ann = slices.Insert(cn.ann, i, e)
	}
}

// dropAnnounced forgets what the connection was told under id.
func (cn *conn) dropAnnounced(id uint8) {
	if i, ok := idIndex(cn.ann, id); ok {
		if cn.ann = slices.Delete(cn.ann, i, i+1); len(cn.ann) == 0 {
			cn.ann = nil
		}
	}
}

// slot is one subflow the controller may open for a connection: from an
// interface to a destination (the connection's remote address or one the
// peer announced). There is at most one subflow per slot.
type slot struct {
	ifindex int
	dst     netip.AddrPort
}

// norm makes an address comparable whatever the source wrote (an IPv4
// connection may show as ::ffff:a.b.c.d).
func norm(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// dests lists the connection's destinations in the order subflows go to
// them: its remote address, then (withPeers) the peer's announced
// addresses in the order they were announced, each once. Announcement
// order keeps the choice stable: a later ADD_ADDR never displaces a
// destination already in use. The list is written over buf (its capacity
// reused; nil for a new one).
func (cn *conn) dests(buf []netip.AddrPort, withPeers bool) []netip.AddrPort {
	out := buf[:0]
	if cn.remote.IsValid() {
		out = append(out, norm(cn.remote))
	}
	if !withPeers {
		return out
	}
	for _, p := range cn.peers {
		d := norm(p.val)
		if d.IsValid() && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// targets picks the destinations interface i keeps subflows to: at most
// i.pol.MaxSubflows, one subflow each, of the families i has an address
// for (a destination i cannot reach does not use up the quota).
// Destinations that hold a slot (held: a live subflow or a create in
// flight) keep it, in dests order; the rest of the quota goes to the others
// in dests order, skipping those backing off after a failure (failing), so
// an unreachable destination does not block the next one, and a working
// subflow is never displaced when the failed one could be tried again.
// held and failing may be nil. The list is written over buf (its capacity
// reused; nil for a new one).
func targets(buf []netip.AddrPort, i *iface, dests []netip.AddrPort, held, failing func(netip.AddrPort) bool) []netip.AddrPort {
	limit := i.pol.MaxSubflows
	if limit < 1 {
		limit = 1
	}
	out := buf[:0]
	reach := func(d netip.AddrPort) bool { _, ok := i.addrFor(d.Addr()); return ok }
	if held != nil {
		for _, d := range dests {
			if len(out) < limit && reach(d) && held(d) {
				out = append(out, d)
			}
		}
	}
	for _, d := range dests {
		if len(out) == limit {
			break
		}
		if !reach(d) || slices.Contains(out, d) || (failing != nil && failing(d)) {
			continue
		}
		out = append(out, d)
	}
	// Keep dests order, which is the order subflows are made in.
	slices.SortStableFunc(out, func(a, b netip.AddrPort) int {
		return slices.Index(dests, a) - slices.Index(dests, b)
	})
	return out
}

type sub struct {
	sf      pathmgr.Subflow
	ifindex int
	localID uint8
	backup  bool
	// goneAt is when the peer withdrew the subflow's destination
	// (REMOVED): the kernel closes such subflows itself, so the
	// controller waits pendingTimeout before destroying one.
	goneAt time.Time
	// health samples from the inventory
	rtt time.Duration
}

func newConn(token uint32) *conn { return &conn{token: token} }

// iface is one interface the policy applies to, as the controller sees it.
type iface struct {
	index int
	name  string
	pol   policy.Interface
	order int // position in the policy (priority order)
	up    bool
	addrs []netip.Addr
	// availSince is when the interface last became available; zero when
	// it already was at the first look (daemon start).
	availSince time.Time
	health     health
}

// health is the state of an interface for handover/priority steering.
type health struct {
	// Send side (what this host sends: smoothed RTT, retransmitted share
	// of the bytes sent) and receive side (rcv_rtt, out-of-order share of
	// the data segments received) of the last sample that had data in that
	// direction; tx and rx say whether the last sample had any.
	rtt     time.Duration
	loss    float64
	rxRTT   time.Duration
	reorder float64
	tx, rx  bool
	// bypassed: in the last sample that had the path, the connections
	// whose peer passed over their subflows through it for a backup one
	// (bypassedBy).
	bypassed  int
	unhealthy bool
	goodSince time.Time // first sample below the recovery thresholds
	since     time.Time // became unhealthy
	failures  int
	sampled   bool
	// tookOver is when priority steering last made this interface the
	// primary; its reorder share does not count for takeoverGrace after.
	tookOver time.Time
}

// available reports whether subflows can use the interface.
func (i *iface) available() bool { return i.up && len(i.addrs) > 0 }

// addrFor returns the interface's address of the family of remote.
func (i *iface) addrFor(remote netip.Addr) (netip.Addr, bool) {
	for _, a := range i.addrs {
		if a.Is4() == remote.Unmap().Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// buildIfaces maps the netmon snapshot onto the policy; now is when an
// interface that became available since prev did.
func buildIfaces(p *policy.Policy, st netmon.State, prev map[int]*iface, now time.Time) map[int]*iface {
	out := map[int]*iface{}
	for idx, l := range st.Links {
		pi, ok := p.InterfaceFor(l.Name)
		if !ok {
			continue
		}
		order := slices.IndexFunc(p.Interfaces, func(x policy.Interface) bool { return x.Key() == pi.Key() })
		ifc := &iface{index: idx, name: l.Name, pol: *pi, order: order, up: l.Up()}
		for _, a := range st.Addrs[idx] {
			ifc.addrs = append(ifc.addrs, a.Prefix.Addr())
		}
		if old, ok := prev[idx]; ok && old.name == l.Name {
			ifc.health = old.health
			ifc.availSince = old.availSince
			if ifc.available() && !old.available() {
				ifc.availSince = now
			}
		} else if prev != nil {
			ifc.availSince = now
		}
		out[idx] = ifc
	}
	return out
}
