package relay

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// congestionControl returns a net.Dialer / net.ListenConfig Control hook
// that sets TCP_CONGESTION on the socket before it connects or listens. On
// an MPTCP socket the kernel passes the setting on to every subflow, and
// accepted connections inherit the listener's. It first checks that the
// kernel can set name, so a typo fails at start, not per connection.
func congestionControl(name string) (func(network, address string, c syscall.RawConn) error, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("congestion %q: %w", name, err)
	}
	err = unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
	unix.Close(fd)
	if err != nil {
		avail, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
		why := err.Error()
		switch {
		case errors.Is(err, unix.ENOENT):
			why = "not available in this kernel"
		case errors.Is(err, unix.EPERM):
			why = "not in net.ipv4.tcp_allowed_congestion_control and no CAP_NET_ADMIN"
		}
		return nil, fmt.Errorf("congestion %q: %s; available: %s", name, why, strings.TrimSpace(string(avail)))
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("congestion %q: %w", name, serr)
		}
		return nil
	}, nil
}
