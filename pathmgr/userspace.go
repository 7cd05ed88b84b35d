package pathmgr

import (
	"fmt"
	"net/netip"
)

// Commands of the userspace path manager (net.mptcp.path_manager=userspace;
// before Linux 6.15 net.mptcp.pm_type=1). Each acts on one connection,
// named by its token: from the created/established events, the inventory,
// or `ss -Mi` (which prints it in hex).

// Subflow names one subflow of a connection by its two ends.
type Subflow struct {
	Local  netip.AddrPort
	Remote netip.AddrPort
}

// Announce makes a userspace-PM connection send ADD_ADDR for a local
// address (`pm_nl_ctl ann`). e.ID must be 1..255 and may not already name
// another address of the connection ("did not match address and id"). With
// e.Port the kernel does not listen there: a join to a port other than the
// connection's is accepted only through an MPTCP socket listening on
// exactly that address and port, which the caller must keep open (the
// in-kernel PM opens one for a signal endpoint with a port; checked on
// 6.18).
func (c *Client) Announce(token uint32, e Endpoint) error {
	if err := checkAddr("announce", e.Addr); err != nil {
		return err
	}
	if e.ID == 0 {
		return fmt.Errorf("pathmgr: announce: local id must be 1..%d", maxEndpointID)
	}
	e.Flags |= FlagSignal
	_, err := c.request("announce", cmdAnnounce, false, func(ae *attrEncoder) {
		ae.Uint32(attrToken, token)
		encodeAddr(ae, attrAddr, e)
	})
	return err
}

// Remove makes a userspace-PM connection send RM_ADDR for the local
// address id (and close the subflows using it).
func (c *Client) Remove(token uint32, id uint8) error {
	_, err := c.request("remove", cmdRemove, false, func(ae *attrEncoder) {
		ae.Uint32(attrToken, token)
		ae.Uint8(attrLocID, id)
	})
	return err
}

// CreateSubflow opens a new subflow of a userspace-PM connection from
// local (address, optional id, optional interface, optional backup flag)
// to remote. The connection must be established (the "established" event,
// which an idle connection reaches only once data flows). The kernel picks
// the local port.
func (c *Client) CreateSubflow(token uint32, local Endpoint, remote netip.AddrPort) error {
	if err := checkPair("subflow create", local.Addr, remote); err != nil {
		return err
	}
	if remote.Port() == 0 {
		return fmt.Errorf("pathmgr: subflow create: remote port is required")
	}
	_, err := c.request("subflow create", cmdSubflowCreate, false, func(ae *attrEncoder) {
		ae.Uint32(attrToken, token)
		encodeAddr(ae, attrAddr, local)
		encodeRemote(ae, remote)
	})
	return err
}

// DestroySubflow closes the subflow of a userspace-PM connection with the
// given ends (both ports required: take them from the sub_established
// event or the inventory).
func (c *Client) DestroySubflow(token uint32, sf Subflow) error {
	if err := checkPair("subflow destroy", sf.Local.Addr(), sf.Remote); err != nil {
		return err
	}
	if sf.Local.Port() == 0 || sf.Remote.Port() == 0 {
		return fmt.Errorf("pathmgr: subflow destroy: local and remote ports are both required")
	}
	_, err := c.request("subflow destroy", cmdSubflowDestroy, false, func(ae *attrEncoder) {
		ae.Uint32(attrToken, token)
		encodeAddr(ae, attrAddr, Endpoint{Addr: sf.Local.Addr(), Port: sf.Local.Port()})
		encodeRemote(ae, sf.Remote)
	})
	return err
}

// SetSubflowBackup marks the subflow of a userspace-PM connection with the
// given ends as backup or not; the kernel tells the peer with MP_PRIO. A
// local port of 0 matches any subflow from the local address.
func (c *Client) SetSubflowBackup(token uint32, sf Subflow, backup bool) error {
	if err := checkPair("subflow set", sf.Local.Addr(), sf.Remote); err != nil {
		return err
	}
	if sf.Remote.Port() == 0 {
		return fmt.Errorf("pathmgr: subflow set: remote port is required")
	}
	var flags EndpointFlags
	if backup {
		flags = FlagBackup
	}
	_, err := c.request("subflow set", cmdSetFlags, false, func(ae *attrEncoder) {
		ae.Uint32(attrToken, token)
		encodeAddr(ae, attrAddr, Endpoint{Addr: sf.Local.Addr(), Port: sf.Local.Port(), Flags: flags})
		encodeRemote(ae, sf.Remote)
	})
	return err
}

// ConnectionAddrs dumps the local addresses a userspace-PM connection
// knows: those announced and those used by subflows it created (GET_ADDR
// with a token, Linux 6.7 and later). Older kernels ignore the token and
// would dump the in-kernel PM's endpoints instead, so on them this returns
// an error matching ErrNotSupported without asking the kernel.
func (c *Client) ConnectionAddrs(token uint32) ([]Endpoint, error) {
	if rel, ok := kernelAtLeast(6, 7); !ok {
		return nil, fmt.Errorf("pathmgr: connection addresses: dumping a userspace-PM connection's addresses needs Linux 6.7 or later; this kernel is %s: %w", rel, ErrNotSupported)
	}
	msgs, err := c.request("connection addresses", cmdGetAddr, true, func(ae *attrEncoder) {
		ae.Uint32(attrToken, token)
	})
	if err != nil {
		return nil, err
	}
	return parseEndpoints(msgs)
}

func checkPair(op string, local netip.Addr, remote netip.AddrPort) error {
	if err := checkAddr(op, local); err != nil {
		return err
	}
	if !remote.Addr().IsValid() {
		return fmt.Errorf("pathmgr: %s: a remote address is required", op)
	}
	if local.Unmap().Is4() != remote.Addr().Unmap().Is4() {
		return fmt.Errorf("pathmgr: %s: local %s and remote %s are of different address families", op, local, remote.Addr())
	}
	return nil
}

// kernelRelease is the running kernel's release string; a variable so that
// tests can pretend to be another kernel.
var kernelRelease = unameRelease

// kernelAtLeast reports whether the running kernel is at least major.minor,
// and its release. An unreadable release counts as new enough: the kernel
// then answers for itself.
func kernelAtLeast(major, minor int) (string, bool) {
	rel := kernelRelease()
	var maj, min int
	if n, _ := fmt.Sscanf(rel, "%d.%d", &maj, &min); n != 2 {
		return rel, true
	}
	return rel, maj > major || (maj == major && min >= minor)
}
