// Package netmon watches a network namespace's interfaces, addresses and
// default routes over rtnetlink, keeps a snapshot of them and tells
// subscribers what changed.
//
// A Watcher makes an initial dump, then follows RTMGRP_LINK, the IPv4/IPv6
// address groups and the IPv4/IPv6 route groups. Events are typed (LinkUp,
// AddrAdded, ...), de-duplicated against the snapshot (a repeated message
// changes nothing, so it produces no event) and delivered over buffered
// channels that never block the reader: a subscriber that falls behind
// loses events and receives one Resync event instead, after which State
// holds the truth. When the kernel drops messages (ENOBUFS) the Watcher
// dumps again, emits the differences and a Resync.
//
// Loopback interfaces and addresses are never reported; link-local
// addresses are skipped unless Config.IncludeLinkLocal; tentative,
// duplicate (DAD failed) and deprecated addresses count as absent.
package netmon

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"time"

	"github.com/gigapath/gigapath/pathmgr/netns"
)

// Config selects the namespace and what is reported.
type Config struct {
	// NetNS is a name from `ip netns list` or an absolute path to a
	// namespace file (/proc/PID/ns/net); empty is the current namespace.
	NetNS string
	// IncludeLinkLocal reports fe80::/10 and 169.254.0.0/16 addresses too.
	IncludeLinkLocal bool
	// ReadBuffer is the event socket's receive buffer in bytes; 0 means
	// 4 MiB. When it overflows the kernel drops messages (ENOBUFS) and the
	// Watcher resynchronises.
	ReadBuffer int
}

// Link is a network interface.
type Link struct {
	Index        int
	Name         string
	AdminUp      bool // IFF_UP: set up by an administrator
	OperUp       bool // IFF_RUNNING: carrier and operational state up
	MTU          int
	HardwareAddr net.HardwareAddr
}

// Up reports whether the link can carry traffic.
func (l Link) Up() bool { return l.AdminUp && l.OperUp }

// Addr is a usable address of an interface with its prefix length
// (10.0.2.2/24: address 10.0.2.2, connected subnet 10.0.2.0/24).
type Addr struct {
	Index  int
	Prefix netip.Prefix
}

// Route is a default route of the main table through a link. Gateway is
// the zero Addr for an on-link (dev-only) default route.
type Route struct {
	Index   int
	Family  int // unix.AF_INET or unix.AF_INET6
	Gateway netip.Addr
	Metric  uint32
}

// EventType says what changed.
type EventType int

// Event types.
const (
	LinkUp EventType = iota + 1
	LinkDown
	AddrAdded
	AddrRemoved
	RouteAdded   // a default route appeared
	RouteRemoved // a default route went away
	// Resync means events were lost (the subscriber lagged or the kernel
	// dropped messages): read State for the truth.
	Resync
)

var eventNames = [...]string{"", "link-up", "link-down", "addr-added", "addr-removed", "route-added", "route-removed", "resync"}

func (t EventType) String() string {
	if t > 0 && int(t) < len(eventNames) {
		return eventNames[t]
	}
	return fmt.Sprintf("event(%d)", int(t))
}

// Event is one change. Link is set for link events (for address and route
// events too when the link is known); Addr for address events; Route for
// route events.
type Event struct {
	Type  EventType
	Link  Link
	Addr  Addr
	Route Route
	// Removed is set on LinkDown when the link was deleted.
	Removed bool
	// Kernel is set on Resync when the kernel dropped messages (ENOBUFS),
	// unset when only this subscriber lagged.
	Kernel bool
	// Time is when the Watcher read the change (for reaction latencies);
	// zero on a Resync caused by a lagging subscriber.
	Time time.Time
}

func (e Event) String() string {
	switch e.Type {
	case LinkUp, LinkDown:
		s := fmt.Sprintf("%s %s (%d)", e.Type, e.Link.Name, e.Link.Index)
		if e.Removed {
			s += " removed"
		}
		return s
	case AddrAdded, AddrRemoved:
		return fmt.Sprintf("%s %s dev %s (%d)", e.Type, e.Addr.Prefix, e.Link.Name, e.Addr.Index)
	case RouteAdded, RouteRemoved:
		gw := "on-link"
		if e.Route.Gateway.IsValid() {
			gw = "via " + e.Route.Gateway.String()
		}
		return fmt.Sprintf("%s default %s dev %s (%d) metric %d", e.Type, gw, e.Link.Name, e.Route.Index, e.Route.Metric)
	}
	return e.Type.String()
}

// State is a snapshot. Maps are keyed by interface index; slices are
// sorted. The caller owns it.
type State struct {
	Links         map[int]Link
	Addrs         map[int][]Addr
	DefaultRoutes map[int][]Route
}

// LinkByName finds a link by name.
func (s State) LinkByName(name string) (Link, bool) {
	for _, l := range s.Links {
		if l.Name == name {
			return l, true
		}
	}
	return Link{}, false
}

// Gateway returns the gateway of the best (lowest metric) default route of
// the main table through link index for the family of v6, and whether the
// link has a default route at all. A default route without gateway
// (on-link) returns the zero Addr and true.
func (s State) Gateway(index int, v6 bool) (netip.Addr, bool) {
	var best *Route
	for i, r := range s.DefaultRoutes[index] {
		if (r.Family == afInet6) != v6 {
			continue
		}
		if best == nil || r.Metric < best.Metric {
			best = &s.DefaultRoutes[index][i]
		}
	}
	if best == nil {
		return netip.Addr{}, false
	}
	return best.Gateway, true
}

const (
	afInet  = 2
	afInet6 = 10
)

// state is the Watcher's internal snapshot, keyed for de-duplication.
type state struct {
	links  map[int]Link
	addrs  map[Addr]bool
	routes map[Route]bool
}

func newState() *state {
	return &state{links: map[int]Link{}, addrs: map[Addr]bool{}, routes: map[Route]bool{}}
}

func (s *state) export() State {
	out := State{Links: map[int]Link{}, Addrs: map[int][]Addr{}, DefaultRoutes: map[int][]Route{}}
	for i, l := range s.links {
		out.Links[i] = l
	}
	for a := range s.addrs {
		out.Addrs[a.Index] = append(out.Addrs[a.Index], a)
	}
	for _, as := range out.Addrs {
		sort.Slice(as, func(i, j int) bool { return as[i].Prefix.Addr().Less(as[j].Prefix.Addr()) })
	}
	for r := range s.routes {
		out.DefaultRoutes[r.Index] = append(out.DefaultRoutes[r.Index], r)
	}
	for _, rs := range out.DefaultRoutes {
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].Metric != rs[j].Metric {
				return rs[i].Metric < rs[j].Metric
			}
			return rs[i].Gateway.Less(rs[j].Gateway)
		})
	}
	return out
}

// diff lists the events that turn s into n, in a stable order: links
// going down first, then address and route removals, then links coming
// up, then additions.
func (s *state) diff(n *state) []Event {
	var down, rm, up, add []Event
	for i, ol := range s.links {
		nl, ok := n.links[i]
		switch {
		case !ok:
			down = append(down, Event{Type: LinkDown, Link: ol, Removed: true})
		case ol.Up() && !nl.Up():
			down = append(down, Event{Type: LinkDown, Link: nl})
		}
	}
	for i, nl := range n.links {
		ol, ok := s.links[i]
		if nl.Up() && (!ok || !ol.Up() || ol.Name != nl.Name) {
			up = append(up, Event{Type: LinkUp, Link: nl})
		}
	}
	linkOf := func(i int) Link {
		if l, ok := n.links[i]; ok {
			return l
		}
		if l, ok := s.links[i]; ok {
			return l
		}
		return Link{Index: i}
	}
	for a := range s.addrs {
		if !n.addrs[a] {
			rm = append(rm, Event{Type: AddrRemoved, Addr: a, Link: linkOf(a.Index)})
		}
	}
	for r := range s.routes {
		if !n.routes[r] {
			rm = append(rm, Event{Type: RouteRemoved, Route: r, Link: linkOf(r.Index)})
		}
	}
	for a := range n.addrs {
		if !s.addrs[a] {
			add = append(add, Event{Type: AddrAdded, Addr: a, Link: linkOf(a.Index)})
		}
	}
	for r := range n.routes {
		if !s.routes[r] {
			add = append(add, Event{Type: RouteAdded, Route: r, Link: linkOf(r.Index)})
		}
	}
	for _, es := range [][]Event{down, rm, up, add} {
		sort.Slice(es, func(i, j int) bool { return eventLess(es[i], es[j]) })
	}
	out := append(down, rm...)
	out = append(out, up...)
	return append(out, add...)
}

func eventLess(a, b Event) bool {
	if a.Type != b.Type {
		return a.Type < b.Type
	}
	if a.Link.Index != b.Link.Index {
		return a.Link.Index < b.Link.Index
	}
	if a.Addr.Prefix != b.Addr.Prefix {
		return a.Addr.Prefix.Addr().Less(b.Addr.Prefix.Addr())
	}
	return a.Route.Gateway.Less(b.Route.Gateway)
}

func (s *state) clone() *state {
	n := newState()
	for k, v := range s.links {
		n.links[k] = v
	}
	for k := range s.addrs {
		n.addrs[k] = true
	}
	for k := range s.routes {
		n.routes[k] = true
	}
	return n
}

// usableAddr reports whether an address is reported, given its flags
// (IFA_F_*) and the configuration.
func usableAddr(a netip.Addr, flags uint32, includeLinkLocal bool) bool {
	const tentative, deprecated, dadfailed = 0x40, 0x20, 0x08 // IFA_F_* from linux/if_addr.h
	if !a.IsValid() || a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	if flags&(tentative|deprecated|dadfailed) != 0 {
		return false
	}
	if !includeLinkLocal && a.IsLinkLocalUnicast() {
		return false
	}
	return true
}

// netnsFile opens the namespace file named by name (see Config.NetNS), or
// returns nil for the current namespace.
func netnsFile(name string) (*os.File, error) {
	f, err := netns.Open(name)
	if err != nil {
		return nil, fmt.Errorf("netmon: %w", err)
	}
	return f, nil
}
