package controller

import (
	"net/netip"
	"slices"
	"time"

	"github.com/gigapath/gigapath/internal/routing"
)

// ensureRouting makes the routing tables match the interfaces (all of
// them, pruning leftovers, when all is set).
func (c *Controller) ensureRouting(all bool, only ...int) {
	if c.rt == nil {
		return
	}
	var keep []int
	for idx, i := range c.ifs {
		if !all && !slices.Contains(only, idx) {
			continue
		}
		keep = append(keep, idx)
		p := c.pathFor(idx)
		if err := c.rt.Ensure(p); err != nil {
			c.log.Warn("routing", "interface", i.name, "err", err)
			continue
		}
		c.noteNextHops(i, p)
	}
	if all {
		if err := c.rt.Prune(keep); err != nil {
			c.log.Warn("routing prune", "err", err)
		}
	}
}

// pathFor is the routing.Path of interface idx: its addresses, and the
// next hops of its table's default routes: the policy's gateway for the
// family, else the gateway of its default route in the main table, else
// none (an on-link default route).
func (c *Controller) pathFor(idx int) routing.Path {
	p := routing.PathFor(c.netSt, idx)
	if i, ok := c.ifs[idx]; ok && len(p.Addrs) > 0 {
		if gw, ok := i.pol.Gateway.For(false); ok {
			p.Gateway4 = gw
		}
		if gw, ok := i.pol.Gateway.For(true); ok {
			p.Gateway6 = gw
		}
	}
	return p
}

// Why a table's default route has its next hop.
const (
	hopPolicy = "interfaces[].gateway"
	hopMain   = "the interface's default route in the main table"
	hopOnLink = "no interfaces[].gateway and no default route through the interface in the main table: every destination must answer ARP/ND on the link (a router that answers only for its own addresses needs interfaces[].gateway)"
)

// nextHop is the next hop of an interface's table for one family, and why.
type nextHop struct{ hop, why string }

// hopKey keys nextHops: an interface and a family.
func hopKey(idx int, v6 bool) int { return idx*2 + b2i(v6) }

// noteNextHops logs, once per change, which next hop each family of the
// interface's table uses and why, and remembers it for the failure
// warnings.
func (c *Controller) noteNextHops(i *iface, p routing.Path) {
	var has [2]bool
	for _, a := range p.Addrs {
		has[b2i(a.Addr().Unmap().Is6())] = true
	}
	for _, v6 := range []bool{false, true} {
		k := hopKey(i.index, v6)
		if !has[b2i(v6)] {
			delete(c.nextHops, k)
			continue
		}
		gw := p.Gateway4
		if v6 {
			gw = p.Gateway6
		}
		nh := nextHop{"on-link", hopOnLink}
		if gw.IsValid() {
			nh = nextHop{"via " + gw.String(), hopMain}
			if g, ok := i.pol.Gateway.For(v6); ok && g == gw {
				nh.why = hopPolicy
			}
		}
		if c.nextHops[k] == nh {
			continue
		}
		c.nextHops[k] = nh
		family := "ipv4"
		if v6 {
			family = "ipv6"
		}
		c.log.Info("next hop", "interface", i.name, "table", c.pol.Routing.TableBase+uint32(i.index), "family", family, "next_hop", nh.hop, "why", nh.why)
	}
}

// nextHopOf says which next hop the table of interface idx uses for the
// family of addr ("" when unknown or routing is off).
func (c *Controller) nextHopOf(idx int, addr netip.Addr) string {
	if c.rt == nil {
		return ""
	}
	return c.nextHops[hopKey(idx, addr.Unmap().Is6())].hop
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// failureLog paces the warnings about subflows of one interface that fail
// to establish.
type failureLog struct {
	last       time.Time
	suppressed int
}

// failureWarnEvery: at most one warning per interface this often; the
// others go to the debug log and are counted in the next warning.
const failureWarnEvery = 10 * time.Second

// subflowFailed counts a subflow the controller created that did not get
// established (the kernel refused the create, or the join closed before
// it was established, with the kernel's error why), per interface, and
// warns with the kernel's error and the next hop the interface's table
// uses.
func (c *Controller) subflowFailed(idx int, token uint32, local netip.Addr, remote netip.AddrPort, why string, at time.Time) {
	name, _ := c.ifaceLabels(idx)
	c.m.SubflowFailures.WithLabelValues(name).Inc()
	f := c.failures[idx]
	if f == nil {
		f = &failureLog{}
		c.failures[idx] = f
	}
	attrs := []any{"interface", name, "token", token, "local", local, "remote", remote, "err", why}
	if !f.last.IsZero() && at.Sub(f.last) < failureWarnEvery {
		f.suppressed++
		c.log.Debug("subflow failed to establish", attrs...)
		return
	}
	if f.suppressed > 0 {
		attrs = append(attrs, "more_since_last_warning", f.suppressed)
	}
	if hop := c.nextHopOf(idx, local); hop != "" {
		attrs = append(attrs, "next_hop", hop)
	}
	c.log.Warn("subflow failed to establish", attrs...)
	f.last, f.suppressed = at, 0
}
