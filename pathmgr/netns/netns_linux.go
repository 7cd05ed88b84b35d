//go:build linux

package netns

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// setnsNet moves the calling thread into the network namespace f.
func setnsNet(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }

// cookie asks a throwaway socket of the calling thread's namespace.
func cookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: socket: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: getsockopt SO_NETNS_COOKIE (Linux 5.14 or newer): %w", err)
	}
	return c, nil
}
