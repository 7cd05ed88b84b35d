// Package pathmgr is a client of the Linux kernel's MPTCP path manager, the
// generic netlink family "mptcp_pm": the in-kernel PM's endpoints and
// limits, the userspace PM's per-connection commands (announce, remove,
// subflow create/destroy, backup), the PM's events, and an inventory of live
// MPTCP connections from sock_diag.
//
// Every Client works in one network namespace, chosen by Config. Kernel
// refusals come back as *Error with the kernel's own message.
package pathmgr

import (
	"net/netip"
)

// Limits are the in-kernel PM's per-namespace limits (`ip mptcp limits`).
type Limits struct {
	// Subflows is the maximum number of additional subflows per connection.
	Subflows uint32 `json:"subflows"`
	// AddAddrAccepted is the maximum number of ADD_ADDR announcements from
	// the peer acted upon per connection.
	AddAddrAccepted uint32 `json:"add_addr_accepted"`
}

// LimitsUpdate sets some limits, leaving the others as they are (as
// `ip mptcp limits set subflow 4` does). Nil fields are not changed.
type LimitsUpdate struct {
	Subflows        *uint32
	AddAddrAccepted *uint32
}

// MaxLimit is the largest value the kernels this package knows accept for
// either limit (MPTCP_PM_ADDR_MAX).
const MaxLimit = maxLimitValue

// Subflow names one subflow of a userspace-PM connection by its two ends.
type Subflow struct {
	Local  netip.AddrPort
	Remote netip.AddrPort
}
