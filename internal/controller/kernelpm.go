package controller

import (
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// applyKernelPM reconciles the in-kernel PM's endpoints and limits to the
// policy (path_manager: kernel). An endpoint is ours when it carries an
// interface index and the id the controller derives from it (localID);
// endpoints made by anyone else are never touched.
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
	want := map[uint8]pathmgr.Endpoint{}
	for _, i := range c.available() {
		for _, a := range i.addrs {
			id := localID(i.index, a.Is6())
			if _, dup := want[id]; dup {
				continue // one address per family and interface
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
	for _, e := range have {
		ours := e.IfIndex != 0 && e.ID == localID(e.IfIndex, e.Addr.Is6())
		if !ours {
			continue
		}
		w, ok := want[e.ID]
		if ok && w.Addr == e.Addr && w.Flags == e.Flags&^pathmgr.FlagImplicit {
			delete(want, e.ID)
			continue
		}
		c.m.Commands.WithLabelValues("del_addr").Inc()
		if err := c.kpm.DeleteEndpoint(e.ID, e.Addr); err != nil {
			c.m.CommandErrors.WithLabelValues("del_addr").Inc()
			c.log.Warn("endpoint delete", "id", e.ID, "addr", e.Addr, "err", err)
		}
	}
	for _, e := range want {
		c.m.Commands.WithLabelValues("add_addr").Inc()
		if err := c.kpm.AddEndpoint(e); err != nil {
			c.m.CommandErrors.WithLabelValues("add_addr").Inc()
			c.log.Warn("endpoint add", "id", e.ID, "addr", e.Addr, "err", err)
		}
	}
}

func ptr[T any](v T) *T { return &v }
