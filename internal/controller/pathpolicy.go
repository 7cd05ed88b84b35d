package controller

import (
	"net/netip"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/metrics"
)

// pathPolicies is the per-address socket policy the interfaces' congestion
// and mark keys ask for.
func (c *Controller) pathPolicies() map[netip.Addr]pathpolicy.Policy {
	want := map[netip.Addr]pathpolicy.Policy{}
	for _, i := range c.ifs {
		if i.pol.Congestion == "" && i.pol.Mark == 0 {
			continue
		}
		for _, a := range i.addrs {
			want[a] = pathpolicy.Policy{Congestion: i.pol.Congestion, Mark: i.pol.Mark}
		}
	}
	return want
}

// syncPathPolicy makes the sockops program's per-address policies match
// the interfaces' addresses: set for new ones, removed for gone ones. The
// program is loaded (attached to the policy's path_cgroup) the first time
// an interface asks for congestion or mark. Failures are logged, not
// fatal: subflows then keep the host's settings.
func (c *Controller) syncPathPolicy() {
	want := c.pathPolicies()
	if c.pp == nil {
		if len(want) == 0 || c.ppFailed {
			return
		}
		opts := pathpolicy.Options{Cgroup: c.pol.PathCgroup, NetNS: c.cfg.NetNS}
		pp, err := pathpolicy.Load(opts)
		if err != nil {
			// The send share (a raw tracepoint) is telemetry only:
			// the policy applies without it.
			opts.NoSendShare = true
			var err2 error
			if pp, err2 = pathpolicy.Load(opts); err2 == nil {
				c.log.Warn("send share per path not exported", "err", err)
			}
			err = err2
		}
		if err != nil {
			c.ppFailed = true
			c.log.Warn("per-interface congestion/mark not applied: sockops program not loaded; subflows keep the host's settings", "err", err)
			return
		}
		c.pp = pp
		c.ppSet = map[netip.Addr]pathpolicy.Policy{}
		// Subflow telemetry and send share on /metrics.
		c.ppCollector = metrics.NewPathPolicyCollector(pp)
		if err := c.m.Registry.Register(c.ppCollector); err != nil {
			c.log.Warn("path telemetry not exported", "err", err)
		}
		c.log.Info("per-interface socket policy attached", "cgroup", pp.Cgroup())
	}
	for a, pol := range want {
		if old, ok := c.ppSet[a]; ok && old == pol {
			continue
		}
		if err := c.pp.SetInterfacePolicy(a, pol); err != nil {
			c.log.Warn("per-interface socket policy", "addr", a, "err", err)
			continue
		}
		c.ppSet[a] = pol
		c.log.Debug("per-interface socket policy set", "addr", a, "congestion", pol.Congestion, "mark", pol.Mark)
	}
	for a := range c.ppSet {
		if _, ok := want[a]; ok {
			continue
		}
		if err := c.pp.DeleteInterfacePolicy(a); err != nil {
			c.log.Warn("per-interface socket policy", "addr", a, "err", err)
			continue
		}
		delete(c.ppSet, a)
		c.log.Debug("per-interface socket policy removed", "addr", a)
	}
}

// closePathPolicy detaches the sockops program.
func (c *Controller) closePathPolicy() {
	if c.pp == nil {
		return
	}
	c.m.Registry.Unregister(c.ppCollector)
	if err := c.pp.Close(); err != nil {
		c.log.Warn("detach per-interface socket policy", "err", err)
	}
	c.pp, c.ppSet = nil, nil
}
