package controller

import (
	"net/netip"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// applyKernelPM reconciles the in-kernel PM's endpoints and limits to the
// policy (path_manager: kernel): one endpoint per interface and family
// while the interface is available (subflow on the client, signal on the
// server, backup per policy). An endpoint is the daemon's when the
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

	want := map[uint8]pathmgr.Endpoint{}
	for _, i := range c.available() {
		var fams [2]bool
		for _, a := range i.addrs {
			v6 := a.Unmap().Is6()
			if fams[b2i(v6)] {
				continue // one address per family and interface
			}
			fams[b2i(v6)] = true
			if id, taken := foreignAddr[a.Unmap()]; taken {
				c.log.Debug("endpoint left to its maker", "interface", i.name, "addr", a, "id", id)
				continue
			}
			id, ok := c.ids.get(netip.AddrPortFrom(a, 0), c.addrLive)
			if !ok {
				c.log.Warn("endpoint: no free address id", "interface", i.name, "addr", a)
				continue
			}
			f := pathmgr.FlagSubflow
			if p.Side == policy.SideServer {
				f = pathmgr.FlagSignal
			}
			if i.pol.Backup {
				f |= pathmgr.FlagBackup
			}
			want[id] = pathmgr.Endpoint{ID: id, Addr: a, IfIndex: i.index, Flags: f}
		}
	}
	for id, e := range ours {
		w, ok := want[id]
		if ok && w.Addr == e.Addr && w.IfIndex == e.IfIndex && w.Flags == e.Flags&^pathmgr.FlagImplicit {
			delete(want, id)
			continue
		}
		c.m.Commands.WithLabelValues("del_addr").Inc()
		if err := c.kpm.DeleteEndpoint(e.ID, e.Addr); err != nil {
			c.m.CommandErrors.WithLabelValues("del_addr").Inc()
			c.log.Warn("endpoint delete", "id", e.ID, "addr", e.Addr, "err", err)
			continue
		}
		c.ids.disown(id)
	}
	for id, e := range want {
		c.m.Commands.WithLabelValues("add_addr").Inc()
		if err := c.kpm.AddEndpoint(e); err != nil {
			c.m.CommandErrors.WithLabelValues("add_addr").Inc()
			c.log.Warn("endpoint add", "id", e.ID, "addr", e.Addr, "err", err)
			continue
		}
		c.ids.own(id, e.Addr)
	}
	if c.ids.changed {
		c.saveIDs()
	}
}

func ptr[T any](v T) *T { return &v }
