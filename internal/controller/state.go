package controller

import (
	"net/netip"
	"slices"
	"time"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// PM is what the controller asks of the path manager (pathmgr.Client).
type PM interface {
	CreateSubflow(token uint32, local pathmgr.Endpoint, remote netip.AddrPort) error
	DestroySubflow(token uint32, sf pathmgr.Subflow) error
	SetSubflowBackup(token uint32, sf pathmgr.Subflow, backup bool) error
	Announce(token uint32, e pathmgr.Endpoint) error
}

// conn is one MPTCP connection the controller tracks.
type conn struct {
	token         uint32
	local, remote netip.AddrPort
	server        bool
	established   bool
	estAt         time.Time // when this process saw ESTABLISHED (zero: adopted)
	measured      bool      // reaction latency recorded
	announced     bool
	subs          map[pathmgr.Subflow]*sub
	pending       map[int]time.Time // ifindex → CreateSubflow sent, no sub_established yet
	backoff       map[int]time.Time // ifindex → do not retry before
}

type sub struct {
	sf      pathmgr.Subflow
	ifindex int
	localID uint8
	backup  bool
	// health samples from the inventory
	rtt                  time.Duration
	bytesSent, bytesRetr uint64
}

func newConn(token uint32) *conn {
	return &conn{token: token, subs: map[pathmgr.Subflow]*sub{}, pending: map[int]time.Time{}, backoff: map[int]time.Time{}}
}

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
	rtt       time.Duration
	loss      float64
	unhealthy bool
	goodSince time.Time // first sample below the recovery thresholds
	since     time.Time // became unhealthy
	failures  int
	sampled   bool
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

// buildIfaces maps the netmon snapshot onto the policy.
func buildIfaces(p *policy.Policy, st netmon.State, prev map[int]*iface) map[int]*iface {
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
				ifc.availSince = time.Now()
			}
		} else if prev != nil {
			ifc.availSince = time.Now()
		}
		out[idx] = ifc
	}
	return out
}

// localID is the address id the controller uses for subflows from
// interface index: stable across restarts, never 0 (the initial subflow).
func localID(index int, v6 bool) uint8 {
	id := uint8(index%120) + 1
	if v6 {
		id += 128
	}
	return id
}

// want is the steering decision for one interface of one connection.
type want struct {
	open   bool // a subflow should exist
	backup bool // with this backup flag
}

// steer decides, for the available interfaces, which should carry a
// subflow and with which backup flag.
func steer(p *policy.Policy, ifs []*iface, now time.Time) map[int]want {
	out := map[int]want{}
	switch p.Steering {
	case policy.SteerHandover:
		// A primary that came back must stay for Hold before the backup
		// subflows close; until then they keep carrying.
		var primaryOK bool
		for _, i := range ifs {
			if !i.pol.Backup && !i.health.unhealthy && now.Sub(i.availSince) >= p.Handover.Hold {
				primaryOK = true
			}
		}
		for _, i := range ifs {
			if i.pol.Backup {
				out[i.index] = want{open: !primaryOK, backup: false}
			} else {
				out[i.index] = want{open: true, backup: !primaryOK && i.health.unhealthy}
			}
		}
	case policy.SteerPriority:
		primary := primaryOf(ifs)
		for _, i := range ifs {
			out[i.index] = want{open: true, backup: primary != nil && i != primary}
		}
	default: // aggregate, active-standby
		for _, i := range ifs {
			out[i.index] = want{open: true, backup: i.pol.Backup}
		}
	}
	return out
}

// primaryOf is the first healthy interface in policy order, or the first
// one when none is healthy.
func primaryOf(ifs []*iface) *iface {
	sorted := slices.Clone(ifs)
	slices.SortFunc(sorted, func(a, b *iface) int { return a.order - b.order })
	for _, i := range sorted {
		if !i.health.unhealthy {
			return i
		}
	}
	if len(sorted) > 0 {
		return sorted[0]
	}
	return nil
}
