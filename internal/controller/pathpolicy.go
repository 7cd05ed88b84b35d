package controller

import (
	"net/netip"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/policy"
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

// telemetrySubflows sizes the telemetry map on a client: 16,384
// connections of two subflows (208 bytes each, 6.8 MB of kernel memory,
// allocated at load); serverTelemetrySubflows on a server (side: server):
// 65,536 connections of two (27 MB). Beyond that health samples come from
// sock_diag (the sampler's coverage check).
const (
	telemetrySubflows       = 32768
	serverTelemetrySubflows = 131072
)

// syncPathPolicy makes the sockops program's per-address policies match
// the interfaces' addresses: set for new ones, removed for gone ones. The
// program is loaded (attached to the policy's path_cgroup) the first time
// an interface asks for congestion or mark, or the steering mode needs
// health samples: its telemetry map is then where they come from, when it
// covers every socket of the namespace (no path_cgroup). Failures are
// logged, not fatal: subflows then keep the host's settings, and health
// samples come from sock_diag.
func (c *Controller) syncPathPolicy() {
	c.publishTelemetryView()
	want := c.pathPolicies()
	if c.pp == nil {
		health := c.strat.thresholds() != nil && c.pol.PathCgroup == ""
		if (len(want) == 0 && !health) || c.ppFailed {
			return
		}
		if health && !needsCgroup(c.pol) {
			// The telemetry needs a cgroup v2 to attach to, which `ip
			// netns exec` hides: the daemon's own, best effort (without
			// one, samples come from sock_diag, below).
			_ = c.ensureCgroup2([]string{"health telemetry"})
		}
		size := uint32(telemetrySubflows)
		if c.pol.Side == policy.SideServer {
			size = serverTelemetrySubflows
		}
		opts := pathpolicy.Options{Cgroup: c.cgroupPath(c.pol.PathCgroup), NetNS: c.cfg.NetNS, MaxSubflows: size}
		if held := c.heldTelemetry(); held != nil {
			opts.Telemetry = held
			defer held.Map.Close() // Load cloned it
		}
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
			if len(want) > 0 {
				c.log.Warn("per-interface congestion/mark not applied: sockops program not loaded; subflows keep the host's settings", "err", err)
			} else {
				c.log.Info("health samples come from sock_diag: the sockops telemetry program did not load", "err", err)
			}
			return
		}
		c.pp = pp
		c.ppSet = map[netip.Addr]pathpolicy.Policy{}
		// Subflow telemetry and send share on /metrics.
		c.ppCollector = c.newPathPolicyCollector(pp)
		if err := c.m.Registry.Register(c.ppCollector); err != nil {
			c.log.Warn("path telemetry not exported", "err", err)
		}
		c.log.Info("sockops program attached (per-interface socket policy, subflow telemetry)", "cgroup", pp.Cgroup())
		if kept, why := pp.KeptTelemetry(); kept {
			c.log.Info("telemetry map kept from the previous binary: the subflows keep their entries")
		} else if why != nil {
			c.log.Info("telemetry map of the previous binary not kept: idle subflows have no entry until their next segment, and health samples come from sock_diag meanwhile", "why", why)
		}
	}
	if c.sampler != nil && c.pol.PathCgroup == "" && c.sampler.tel.Load() == nil {
		c.sampler.tel.Store(c.pp)
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

// newPathPolicyCollector is the collector of src's telemetry on /metrics,
// following the policy's metrics.subflow_series and the interfaces.
func (c *Controller) newPathPolicyCollector(src metrics.PathPolicySource) *metrics.PathPolicyCollector {
	return metrics.NewPathPolicyCollector(src, c.ppView)
}

// publishTelemetryView hands the scrapes the policy's
// metrics.subflow_series and the interface (name, policy role) of every
// address of the namespace, for the srtt histogram per interface: after
// every change of the policy or the interfaces, O(addresses).
func (c *Controller) publishTelemetryView() {
	c.ppView.SetSubflowSeries(c.pol.Metrics.SubflowSeries)
	paths := map[netip.Addr]metrics.PathLabels{}
	for idx, as := range c.netSt.Addrs {
		name, role := c.ifaceLabels(idx)
		for _, a := range as {
			paths[a.Prefix.Addr().Unmap()] = metrics.PathLabels{Interface: name, Role: role}
		}
	}
	c.ppView.SetPaths(paths)
}

// closePathPolicy detaches the sockops program (the sampler has stopped).
func (c *Controller) closePathPolicy() {
	if c.pp == nil {
		return
	}
	c.m.Registry.Unregister(c.ppCollector)
	if c.sampler != nil {
		c.sampler.tel.Store(nil)
	}
	if err := c.pp.Close(); err != nil {
		c.log.Warn("detach per-interface socket policy", "err", err)
	}
	c.pp, c.ppSet = nil, nil
}

// healthSourceName says where health samples come from now ("" when the
// steering mode takes none).
func (c *Controller) healthSourceName() string {
	switch {
	case c.strat.thresholds() == nil:
		return ""
	case c.sampler != nil && c.sampler.tel.Load() != nil:
		return sourceTelemetry
	default:
		return sourceSockDiag
	}
}
