package controller

import (
	"github.com/gigapath/gigapath/ebpf/mptcpify"
	"github.com/gigapath/gigapath/internal/policy"
)

// startMptcpify loads and attaches ebpf/mptcpify for the policy's
// `mptcpify:` cgroups. Where the kernel refuses the tracing program
// (lockdown, no update_socket_protocol, ...) one warning carries the
// library's error verbatim and the daemon runs on: the listed programs'
// TCP sockets then stay plain TCP. A cgroup that cannot be added is
// warned about and skipped. The returned value is nil if nothing is
// attached.
func (c *Controller) startMptcpify(entries []string) *mptcpify.Mptcpify {
	if len(entries) == 0 {
		return nil
	}
	m, err := mptcpify.Load()
	if err != nil {
		c.log.Warn("mptcpify not active: their TCP sockets stay plain TCP", "cgroups", entries, "err", err.Error())
		return nil
	}
	added := 0
	for _, e := range entries {
		if err := m.AddCgroup(c.cgroupPath(policy.MptcpifyCgroup(e))); err != nil {
			c.log.Warn("mptcpify: cgroup skipped", "entry", e, "err", err.Error())
			continue
		}
		added++
	}
	if added == 0 {
		m.Close()
		return nil
	}
	if err := m.Attach(); err != nil {
		c.log.Warn("mptcpify not active: their TCP sockets stay plain TCP", "cgroups", entries, "err", err.Error())
		m.Close()
		return nil
	}
	c.log.Info("mptcpify attached", "cgroups", entries)
	return m
}
