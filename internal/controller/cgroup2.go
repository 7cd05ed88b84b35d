package controller

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/ebpf/cgroup"
	"github.com/gigapath/gigapath/internal/policy"
)

// cgroupUsers names the keys of the policy that ask for per-path socket
// settings, which eBPF programs attached to a cgroup v2 apply: an
// interface's congestion or mark, and mptcpify.
func cgroupUsers(p *policy.Policy) []string {
	var out []string
	for i, it := range p.Interfaces {
		if it.Congestion != "" {
			out = append(out, fmt.Sprintf("interfaces[%d].congestion", i))
		}
		if it.Mark != 0 {
			out = append(out, fmt.Sprintf("interfaces[%d].mark", i))
		}
	}
	if len(p.Mptcpify) > 0 {
		out = append(out, "mptcpify")
	}
	return out
}

func needsCgroup(p *policy.Policy) bool { return len(cgroupUsers(p)) > 0 }

// cgroup2Dir is where ensureCgroup2 mounts one: the standard place, which
// a fresh sysfs (ip netns exec's) has as an empty directory.
const cgroup2Dir = "/sys/fs/cgroup"

// ensureCgroup2 makes a cgroup v2 hierarchy visible to the daemon, for the
// keys in users. `ip netns exec` runs its command in a mount namespace of
// its own with a fresh /sys, in which no cgroup v2 is mounted: there the
// daemon mounts one for its own use (nobody else sees that mount
// namespace). In the host's mount namespace (the init process's) it mounts
// nothing, and fails instead, naming the keys and what to do.
func ensureCgroup2(log *slog.Logger, users []string) error {
	if _, err := cgroup.Mount(); err == nil {
		return nil
	}
	need := strings.Join(users, ", ")
	private, err := privateMountNS()
	if err != nil {
		return fmt.Errorf("%s need a cgroup v2, and none is mounted here: %w", need, err)
	}
	if !private {
		return fmt.Errorf("%s need a cgroup v2 (the eBPF programs that apply them attach to one), and none is mounted in this mount namespace, which is the host's: mount one (mount -t cgroup2 none %s)", need, cgroup2Dir)
	}
	if st, err := os.Stat(cgroup2Dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%s need a cgroup v2 and none is visible in the daemon's mount namespace (ip netns exec mounts a fresh /sys without one), and %s is not a directory to mount one on: run the daemon with --netns NAME instead of under ip netns exec", need, cgroup2Dir)
	}
	if err := unix.Mount("cgroup2", cgroup2Dir, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("%s need a cgroup v2 and none is visible in the daemon's mount namespace (ip netns exec mounts a fresh /sys without one); mounting one at %s failed: %w; run the daemon with --netns NAME instead of under ip netns exec", need, cgroup2Dir, err)
	}
	log.Info("mounted a cgroup v2 for the daemon's own use: none was visible in its mount namespace (ip netns exec mounts a fresh /sys)", "at", cgroup2Dir, "for", need)
	return nil
}

// privateMountNS reports whether this process runs in a mount namespace
// other than the init process's (ip netns exec, a unit with private
// mounts), where a mount it makes is seen by nobody else.
func privateMountNS() (bool, error) {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return false, err
	}
	init, err := os.Readlink("/proc/1/ns/mnt")
	if err != nil {
		return false, fmt.Errorf("cannot tell whether this is the host's mount namespace: %w", err)
	}
	return self != init, nil
}
