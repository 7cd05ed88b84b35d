package controller

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// applyKernelPM reconciles the in-kernel PM's endpoints and limits to the
// policy (path_manager: kernel): kernelEndpointsWant. An endpoint that
// cannot be added (an announced address not on the host yet) is tried
// again every tick. An endpoint is the daemon's when the
// allocator recorded that the daemon made it (idAlloc.own: kept across
// restarts in the record and across upgrades in the handoff), never
// because its id or interface look like it: endpoints made by anyone else
// are never touched, their ids are never used, and an address one of them
// has gets no endpoint of the daemon's.
func (c *Controller) applyKernelPM() {
	if c.pol.PathManager != policy.PMKernel || c.kpm == nil {
		return
	}
	p := c.pol
	if err := c.kpm.SetLimits(pathmgr.LimitsUpdate{Subflows: ptr(uint32(p.Limits.Subflows)), AddAddrAccepted: ptr(uint32(p.Limits.AddAddrAccepted))}); err != nil {
		c.m.CommandErrors.WithLabelValues("set_limits").Inc()
		c.log.Warn("limits", "err", err)
	}
	have, err := c.kpm.Endpoints()
	if err != nil {
		c.log.Warn("endpoints", "err", err)
		return
	}
	ours := map[uint8]pathmgr.Endpoint{}
	var foreign []uint8
	foreignAddr := map[netip.Addr]uint8{}
	for _, e := range have {
		if c.ids.ours(e.ID, e.Addr) {
			ours[e.ID] = e
			continue
		}
		foreign = append(foreign, e.ID)
		foreignAddr[e.Addr.Unmap()] = e.ID
	}
	// An endpoint recorded as ours that is gone was deleted by someone
	// else (ip mptcp endpoint flush): it is made again below.
	for id := range c.ids.owned {
		if _, ok := ours[id]; !ok {
			c.ids.disown(id)
		}
	}
	c.ids.setForeign(foreign)

	want := c.kernelEndpointsWant(foreignAddr)
	for id, e := range ours {
		w, ok := want[id]
		if ok && w.Addr == e.Addr && w.Port == e.Port && w.IfIndex == e.IfIndex && w.Flags == e.Flags&^pathmgr.FlagImplicit {
			delete(want, id)
			continue
		}
		c.sent("del_addr")
		if err := c.kpm.DeleteEndpoint(e.ID, e.Addr); err != nil {
			c.m.CommandErrors.WithLabelValues("del_addr").Inc()
			c.log.Warn("endpoint delete", "id", e.ID, "addr", e.Addr, "err", err)
			continue
		}
		c.ids.disown(id)
	}
	failed := map[netip.AddrPort]string{}
	for id, e := range want {
		c.sent("add_addr")
		if err := c.kpm.AddEndpoint(e); err != nil {
			c.m.CommandErrors.WithLabelValues("add_addr").Inc()
			k := netip.AddrPortFrom(e.Addr, e.Port)
			lvl := slog.LevelWarn
			if c.kpmFailed[k] == err.Error() {
				lvl = slog.LevelDebug // retried every tick: said once
			}
			c.log.Log(context.Background(), lvl, "endpoint add", "id", e.ID, "addr", e.Addr, "port", e.Port, "err", err)
			failed[k] = err.Error()
			continue
		}
		c.ids.own(id, e.Addr)
	}
	c.kpmFailed = failed
	if c.ids.changed {
		c.saveIDs()
	}
}

// kernelEndpointsWant is the in-kernel PM's endpoints the policy wants, by
// id: one per available interface and family (subflow on the client,
// signal on the server, backup per policy), or on the server with
// announce: entries, a signal endpoint for each of them instead (an
// address, with its port; an interface's address per family while it is
// available). A signal endpoint with a port makes the kernel listen there
// itself. Addresses that have an endpoint of someone else's (foreign) get
// none.
func (c *Controller) kernelEndpointsWant(foreign map[netip.Addr]uint8) map[uint8]pathmgr.Endpoint {
	p := c.pol
	want := map[uint8]pathmgr.Endpoint{}
	add := func(what string, a netip.Addr, port uint16, ifindex int, f pathmgr.EndpointFlags) {
		if id, taken := foreign[a.Unmap()]; taken {
			c.log.Debug("endpoint left to its maker", "for", what, "addr", a, "id", id)
			return
		}
		id, ok := c.ids.get(netip.AddrPortFrom(a, port), c.addrLive)
		if !ok {
			c.log.Warn("endpoint: no free address id", "for", what, "addr", a)
			return
		}
		want[id] = pathmgr.Endpoint{ID: id, Addr: a, Port: port, IfIndex: ifindex, Flags: f}
	}
	if p.Side == policy.SideServer && len(p.Announce) > 0 {
		for _, a := range p.Announce {
			if a.Address.IsValid() {
				add("announce", a.Address, a.Port, c.ifindexOf(a.Address, 0), pathmgr.FlagSignal)
				continue
			}
			for _, i := range c.available() {
				if i.name != a.Interface {
					continue
				}
				for _, x := range firstPerFamily(i.addrs) {
					add(i.name, x, a.Port, i.index, pathmgr.FlagSignal)
				}
			}
		}
		return want
	}
	for _, i := range c.available() {
		f := pathmgr.FlagSubflow
		if p.Side == policy.SideServer {
			f = pathmgr.FlagSignal
		}
		if i.pol.Backup {
			f |= pathmgr.FlagBackup
		}
		for _, a := range firstPerFamily(i.addrs) {
			add(i.name, a, 0, i.index, f)
		}
	}
	return want
}

// firstPerFamily is the first address of each family in addrs (IPv4
// first): one endpoint per family and interface.
func firstPerFamily(addrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	var fams [2]bool
	for _, a := range addrs {
		v6 := a.Unmap().Is6()
		if !fams[b2i(v6)] {
			fams[b2i(v6)] = true
			out = append(out, a)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }
