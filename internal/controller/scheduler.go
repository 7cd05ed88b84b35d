package controller

import (
	"errors"
	"fmt"

	"github.com/gigapath/gigapath/ebpf/sched"
)

// applyScheduler selects the policy's MPTCP packet scheduler
// (net.mptcp.scheduler) in the managed namespace. A kernel that cannot
// run the named scheduler (no BPF MPTCP schedulers, or no scheduler
// sysctl) is not fatal: one warning names the missing kernel feature and
// the kernel's current scheduler plus the steering mode keep deciding.
// Any other failure is returned.
func (c *Controller) applyScheduler(name string) error {
	if name == "" {
		return nil
	}
	err := c.useScheduler(c.cfg.NetNS, name)
	switch {
	case err == nil:
		c.log.Info("scheduler selected", "scheduler", name, "netns", c.cfg.NetNS)
		return nil
	case errors.Is(err, sched.ErrUnsupported), errors.Is(err, sched.ErrNoSchedulerSysctl):
		c.log.Warn("scheduler not selected: the kernel lacks the feature it needs; net.mptcp.scheduler is left as it is, steering mode stays in charge",
			"scheduler", name, "steering", string(c.pol.Steering), "err", err)
		return nil
	default:
		return fmt.Errorf("scheduler %q: %w", name, err)
	}
}
