package controller

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gigapath/gigapath/internal/policy"
)

// reload applies a new policy as a diff: every changed key takes effect or
// the reload is refused, naming the keys, and the old policy stays (see
// policy.Fate). The steps that can fail (the scheduler, a new routing
// manager, a cgroup v2 for new per-path settings) run before anything of
// the old policy is given up.
func (c *Controller) reload(p *policy.Policy) error {
	d := c.pol.Diff(p)
	restart := slices.Clone(d.NeedsRestart)
	logChanged := slices.Contains(d.Keys, "log.level") || slices.Contains(d.Keys, "log.format")
	if logChanged && !switchable(c.log) {
		restart = append(restart, "log (this logger was not made by controller.NewLogger)")
	}
	if len(restart) > 0 {
		return fmt.Errorf("reload refused, keeping the old policy: %s changed, which needs a restart", strings.Join(restart, ", "))
	}
	if len(d.Keys) == 0 {
		c.log.Info("reload: nothing changed")
		return nil
	}
	old := c.pol
	changed := func(prefix string) bool {
		for _, k := range d.Keys {
			if k == prefix || strings.HasPrefix(k, prefix+".") || strings.HasPrefix(k, prefix+"[]") {
				return true
			}
		}
		return false
	}

	// What can fail.
	if needsCgroup(p) && !needsCgroup(old) {
		if err := c.ensureCgroup2(cgroupUsers(p)); err != nil {
			return fmt.Errorf("reload refused, keeping the old policy: %w", err)
		}
	}
	if changed("scheduler") {
		if err := c.applyScheduler(p.Scheduler); err != nil {
			return fmt.Errorf("reload refused, keeping the old policy: %w", err)
		}
	}
	var newRT router
	rebuildRT := changed("routing") && (old.Routing.Mode == policy.RoutingManaged || p.Routing.Mode == policy.RoutingManaged)
	if rebuildRT && p.Routing.Mode == policy.RoutingManaged && c.newRouter != nil {
		rt, err := c.newRouter(p.Routing)
		if err != nil {
			if changed("scheduler") {
				c.applyScheduler(old.Scheduler)
			}
			return fmt.Errorf("reload refused, keeping the old policy: routing: %w", err)
		}
		newRT = rt
	}
	if changed("initial_address_joins") {
		c.pol = p
		err := c.applyInitialJoins()
		c.pol = old
		if err != nil {
			if changed("scheduler") {
				c.applyScheduler(old.Scheduler)
			}
			if newRT != nil {
				newRT.Close()
			}
			return fmt.Errorf("reload refused, keeping the old policy: %w", err)
		}
	}

	// The new policy.
	if logChanged {
		applyLog(c.log, p.Log)
	}
	for _, line := range policy.Describe(old, p) {
		c.log.Info("reload", "change", line)
	}
	c.pol = p
	if changed("steering") || changed("priority") || changed("handover") {
		next := strategyFor(p)
		if op, ok := c.strat.(*priority); ok {
			if np, ok := next.(*priority); ok {
				np.primary = op.primary
			}
		}
		c.strat = next
		c.publishPrimary()
		if c.sampler != nil {
			c.sampler.setEvery(c.sampleEvery())
		}
	}
	if rebuildRT {
		if c.rt != nil {
			if err := c.rt.Cleanup(); err != nil {
				c.log.Warn("routing cleanup", "err", err)
			}
			c.rt.Close()
		}
		c.rt = newRT
		clear(c.nextHops)
	}
	if c.netRaw != nil {
		c.netSt = c.view(c.netRaw()) // skip_link_local
		c.publishAddrs()
	}
	c.ifs = buildIfaces(p, c.netSt, c.ifs, c.now())
	c.syncPathPolicy()
	if d.RelayChanged {
		c.log.Info("reload: the relay: section changed; gigapath relay --config reads it when it starts, so restart the relay to apply it (the daemon does not use it)")
	}
	c.ensureRouting(true)
	c.applyKernelPM()
	c.syncListeners()
	c.requestResync("reload")
	return nil
}
