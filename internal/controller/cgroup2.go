package controller

import (
	"fmt"
	"os"
	"path/filepath"
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

// ensureCgroup2 makes a cgroup v2 hierarchy reachable for the keys in
// users. Where none is mounted in the daemon's mount namespace — `ip
// netns exec` runs its command with a fresh /sys that has none — it mounts
// one for its own use only: a detached mount (fsopen, fsmount) attached to
// no directory, which no other process sees, in this mount namespace or
// any other, reached through its descriptor; cgroup paths are then taken
// relative to it (cgroupPath). Where that is not possible (no
// CAP_SYS_ADMIN, a kernel before 5.2) the start fails, naming the keys.
func (c *Controller) ensureCgroup2(users []string) error {
	if c.cgroupRoot != nil {
		return nil
	}
	if _, err := cgroup.Mount(); err == nil {
		return nil
	}
	root, err := detachedCgroup2()
	if err != nil {
		return fmt.Errorf("%s need a cgroup v2 (the eBPF programs that apply them attach to one) and none is mounted in the daemon's mount namespace (ip netns exec mounts a fresh /sys without one); mounting one for the daemon's own use failed: %w; run the daemon with --netns NAME instead of under ip netns exec, or mount one (mount -t cgroup2 none /sys/fs/cgroup)",
			strings.Join(users, ", "), err)
	}
	c.cgroupRoot = root
	c.log.Info("mounted a cgroup v2 for the daemon's own use: none was visible in its mount namespace (ip netns exec mounts a fresh /sys); the mount is attached nowhere, no other process sees it",
		"root", root.Name(), "for", strings.Join(users, ", "))
	return nil
}

// detachedCgroup2 mounts the cgroup v2 hierarchy on no directory and
// returns the mount's root; /proc/self/fd/N (its Name) is a path to it
// for this process only.
func detachedCgroup2() (*os.File, error) {
	fsfd, err := unix.Fsopen("cgroup2", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsopen cgroup2: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, fmt.Errorf("fsconfig cgroup2: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsmount cgroup2: %w", err)
	}
	return os.NewFile(uintptr(mfd), fmt.Sprintf("/proc/self/fd/%d", mfd)), nil
}

// cgroupPath is the path the eBPF packages get for a cgroup of the policy
// (relative to the cgroup v2 root, or absolute): unchanged where the
// hierarchy is mounted; under the daemon's own detached mount otherwise,
// where every path, absolute ones too, is taken relative to the root of
// the hierarchy ("" is the root itself).
func (c *Controller) cgroupPath(p string) string {
	if c.cgroupRoot == nil {
		return p
	}
	return filepath.Join(c.cgroupRoot.Name(), strings.TrimPrefix(p, "/"))
}
