//go:build linux

package relay

import (
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mptcpInfo is MPTCP_INFO of include/uapi/linux/mptcp.h, an option of
// level SOL_MPTCP; the first byte of struct mptcp_info is mptcpi_subflows
// (the subflows added by the path manager, not counting the initial one).
const mptcpInfo = 1

// subflows returns the number of subflows of an MPTCP connection (added
// ones + the initial one), or false when c is not MPTCP or the kernel
// cannot say.
func subflows(c net.Conn) (int, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	if m, _ := tc.MultipathTCP(); !m {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int
	var got bool
	rc.Control(func(fd uintptr) {
		var buf [64]byte
		l := uint32(len(buf))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_MPTCP, mptcpInfo,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 || l == 0 {
			return
		}
		n, got = int(buf[0])+1, true
	})
	return n, got
}

func (c *conn) sampleSubflows(dst net.Conn) {
	if n, ok := subflows(c.c); ok {
		c.s.m.subflows.WithLabelValues("client").Observe(float64(n))
	}
	if n, ok := subflows(dst); ok {
		c.s.m.subflows.WithLabelValues("upstream").Observe(float64(n))
	}
}

// waitReadable blocks until c has data, EOF or an error to read (honouring
// its read deadline) without consuming anything.
func waitReadable(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var b [1]byte
	rerr := rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN
	})
	return rerr
}
