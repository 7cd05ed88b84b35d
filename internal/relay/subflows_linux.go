//go:build linux

package relay

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gigapath/gigapath/internal/relay/socks5"
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

// originalDst returns the destination a connection redirected by nftables
// (or iptables) was addressed to: SO_ORIGINAL_DST (IPv4) or
// IP6T_SO_ORIGINAL_DST (IPv6), both from conntrack.
func originalDst(c net.Conn) (socks5.Addr, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return socks5.Addr{}, fmt.Errorf("original destination: not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return socks5.Addr{}, err
	}
	var a socks5.Addr
	var serr error
	v6 := tc.LocalAddr().(*net.TCPAddr).IP.To4() == nil
	rc.Control(func(fd uintptr) {
		if v6 {
			info, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSoOriginalDst)
			if err != nil {
				serr = err
				return
			}
			a.IP = netip.AddrFrom16(info.Addr.Addr).Unmap()
			a.Port = uint16(info.Addr.Port>>8 | info.Addr.Port<<8)
			return
		}
		mreq, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			serr = err
			return
		}
		// struct sockaddr_in: family (2), port (2, big endian), address (4).
		a.Port = uint16(mreq.Multiaddr[2])<<8 | uint16(mreq.Multiaddr[3])
		a.IP = netip.AddrFrom4([4]byte(mreq.Multiaddr[4:8]))
	})
	if serr != nil {
		return a, fmt.Errorf("original destination (SO_ORIGINAL_DST; was the connection redirected by nftables?): %w", serr)
	}
	return a, nil
}

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST of
// include/uapi/linux/netfilter_ipv6/ip6_tables.h (x/sys/unix lacks it).
const ip6tSoOriginalDst = 80
