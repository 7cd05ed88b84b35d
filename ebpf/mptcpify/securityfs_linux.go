//go:build linux

package mptcpify

import "golang.org/x/sys/unix"

// mountSecurityfs mounts securityfs read-only on dir.
func mountSecurityfs(dir string) (unmount func(), err error) {
	if err := unix.Mount("securityfs", dir, "securityfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, err
	}
	return func() { unix.Unmount(dir, unix.MNT_DETACH) }, nil
}
