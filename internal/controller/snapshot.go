package controller

import (
	"encoding/json"
	"os"
	"slices"

	"github.com/gigapath/gigapath/internal/buildinfo"
	"github.com/gigapath/gigapath/internal/status"
)

// snapshot builds the status reply.
func (c *Controller) snapshot() status.Snapshot {
	pj, _ := json.Marshal(c.pol)
	s := status.Snapshot{Time: c.now(), PID: os.Getpid(), Version: buildinfo.Version(), Started: processStart,
		NetNS: c.cfg.NetNS, Policy: pj, Summary: c.pol.Summary(), Creates: c.createsBy}
	var primary *iface
	if _, ok := c.strat.(*priority); ok {
		primary = primaryOf(c.available())
	}
	for _, i := range c.ifs {
		si := status.Interface{Index: i.index, Name: i.name, Role: string(i.pol.Role), Up: i.up, Backup: i.pol.Backup,
			Healthy: !i.health.unhealthy, Primary: primary == i, Addrs: i.addrs, Loss: i.health.loss}
		if i.health.rtt > 0 {
			si.RTT = i.health.rtt.String()
		}
		if i.health.rxRTT > 0 {
			si.RcvRTT = i.health.rxRTT.String()
		}
		si.Reorder = i.health.reorder
		si.BypassedByPeer = i.health.bypassed
		s.Interfaces = append(s.Interfaces, si)
	}
	slices.SortFunc(s.Interfaces, func(a, b status.Interface) int { return a.Index - b.Index })
	for _, cn := range c.conns {
		sc := status.Connection{Token: cn.token, Local: cn.local, Remote: cn.remote, ServerSide: cn.server, NoJoinRemote: cn.noJoinRemote}
		for _, x := range cn.subs {
			name := ""
			if l, ok := c.netSt.Links[x.ifindex]; ok {
				name = l.Name
			}
			sc.Subflows = append(sc.Subflows, status.Subflow{Local: x.sf.Local, Remote: x.sf.Remote, Interface: name, LocalID: x.localID, Backup: x.backup})
		}
		slices.SortFunc(sc.Subflows, func(a, b status.Subflow) int {
			if a.LocalID != b.LocalID {
				return int(a.LocalID) - int(b.LocalID)
			}
			return a.Remote.Compare(b.Remote)
		})
		for _, p := range cn.peers {
			sc.PeerAddrs = append(sc.PeerAddrs, status.PeerAddr{ID: p.key, Addr: p.val})
		}
		slices.SortFunc(sc.PeerAddrs, func(a, b status.PeerAddr) int { return int(a.ID) - int(b.ID) })
		s.Connections = append(s.Connections, sc)
	}
	slices.SortFunc(s.Connections, func(a, b status.Connection) int { return int(int64(a.Token) - int64(b.Token)) })
	return s
}
