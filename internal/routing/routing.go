// Package routing keeps the routing state gigapath owns in the kernel with
// `routing: managed`: per policy interface a routing table holding the
// interface's connected subnets and a default route (via its gateway, or
// on-link when it has none), and one source rule per address,
// `from ADDR lookup TABLE`, so that a subflow bound to the lte address
// really leaves by lte.
//
// Everything the Manager creates carries its own protocol number
// (Protocol, the RTPROT field of routes and the FRA_PROTOCOL attribute of
// rules). That marker is how a restarted daemon finds its leftovers, and
// the Manager never deletes a rule or route without it: rules and routes
// made by hand or by other daemons are never touched.
//
// The daemon's use, with a netmon.Watcher:
//
//   - start: Ensure(PathFor(state, i)) for every link i that matches a
//     policy interface, then Prune(those indexes): a killed predecessor's
//     leftovers go, live rules never disappear;
//   - every netmon event of link i (and every policy interface on Resync):
//     Ensure(PathFor(state, i)) — idempotent, about 50 µs when nothing
//     changed;
//   - reload: Remove(i) for interfaces no longer in the policy, Cleanup
//     when routing becomes off;
//   - stop: Cleanup.
package routing

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/gigapath/gigapath/pathmgr/netns"
)

// Protocol marks gigapath's rules and routes (`ip rule` and `ip route`
// show it as "proto 201"). Values 0-4 belong to the kernel; the others in
// /etc/iproute2/rt_protos are taken by routing daemons; 201 is not.
const Protocol uint8 = 201

// Defaults for Config.
const (
	DefaultTableBase    = 1000
	DefaultRulePriority = 1000
)

// Config says where and how the Manager works.
type Config struct {
	// NetNS is a name from `ip netns list` or an absolute path to a
	// namespace file; empty is the current namespace.
	NetNS string
	// TableBase: the table of interface index i is TableBase+i.
	TableBase uint32
	// RulePriority is the priority of the source rules (below 32766, the
	// main table's).
	RulePriority uint32
	// Protocol overrides the marker (tests, or two daemons in one
	// namespace); 0 means Protocol.
	Protocol uint8
}

func (c Config) withDefaults() Config {
	if c.TableBase == 0 {
		c.TableBase = DefaultTableBase
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	if c.Protocol == 0 {
		c.Protocol = Protocol
	}
	return c
}

// Path is what the Manager needs to know about one interface.
type Path struct {
	Index int    // interface index
	Name  string // for messages
	// Addrs are the interface's usable addresses with their prefix length
	// (10.0.2.2/24). Each gets a source rule; each subnet a connected route.
	Addrs []netip.Prefix
	// Gateway4 and Gateway6 are the next hops of the default routes; the
	// zero Addr makes an on-link (dev-only) default route.
	Gateway4, Gateway6 netip.Addr
}

// Rule is a source rule the Manager keeps.
type Rule struct {
	From     netip.Prefix // single address (/32 or /128)
	Table    uint32
	Priority uint32
}

func (r Rule) String() string {
	return fmt.Sprintf("from %s lookup %d pref %d", r.From.Addr(), r.Table, r.Priority)
}

// Route is a route the Manager keeps in an interface's table.
type Route struct {
	Dst     netip.Prefix // 0.0.0.0/0 or ::/0 for the default route
	Gateway netip.Addr   // zero: on-link
	Src     netip.Addr   // preferred source, for connected routes
	Index   int          // outgoing interface
	Table   uint32
}

func (r Route) String() string {
	var b strings.Builder
	if r.Dst.Bits() == 0 {
		b.WriteString("default")
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Gateway.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gateway)
	}
	fmt.Fprintf(&b, " dev #%d", r.Index)
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %s", r.Src)
	}
	fmt.Fprintf(&b, " table %d", r.Table)
	return b.String()
}

// Table returns the table number of interface index.
func (c Config) Table(index int) uint32 { return c.withDefaults().TableBase + uint32(index) }

// desired computes the rules and routes for p, connected routes first so a
// default route's gateway is reachable when it is added.
func (c Config) desired(p Path) ([]Rule, []Route) {
	c = c.withDefaults()
	t := c.TableBase + uint32(p.Index)
	var rules []Rule
	var conn, defs []Route
	has4, has6 := false, false
	seenNet := map[netip.Prefix]bool{}
	for _, a := range p.Addrs {
		addr := a.Addr().Unmap()
		rules = append(rules, Rule{From: netip.PrefixFrom(addr, addr.BitLen()), Table: t, Priority: c.RulePriority})
		if addr.Is4() {
			has4 = true
		} else {
			has6 = true
		}
		n := netip.PrefixFrom(addr, a.Bits()).Masked()
		if a.Bits() < addr.BitLen() && !seenNet[n] {
			seenNet[n] = true
			r := Route{Dst: n, Index: p.Index, Table: t}
			if addr.Is4() {
				r.Src = addr
			}
			conn = append(conn, r)
		}
	}
	if has4 {
		r := Route{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Index: p.Index, Table: t}
		if p.Gateway4.Is4() {
			r.Gateway = p.Gateway4
		}
		defs = append(defs, r)
	}
	if has6 {
		r := Route{Dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0), Index: p.Index, Table: t}
		if p.Gateway6.Is6() && !p.Gateway6.Is4In6() {
			r.Gateway = p.Gateway6
		}
		defs = append(defs, r)
	}
	return rules, append(conn, defs...)
}

// netnsFile opens the namespace file named by name, or returns nil for the
// current namespace.
func netnsFile(name string) (*os.File, error) {
	f, err := netns.Open(name)
	if err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	return f, nil
}
