//go:build linux

package pathmgr

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Client talks to the kernel's MPTCP path manager in one network namespace.
// It is safe for concurrent use.
type Client struct {
	mu     sync.Mutex
	c      *genetlink.Conn
	family genetlink.Family
}

// dialNetlink opens a generic netlink socket in the namespace cfg names,
// with strict checking and extended acknowledgements.
func dialNetlink(cfg *Config) (*genetlink.Conn, error) {
	ns, err := cfg.netnsFile()
	if err != nil {
		return nil, err
	}
	nlcfg := &netlink.Config{Strict: true}
	if ns != nil {
		defer ns.Close()
		nlcfg.NetNS = int(ns.Fd())
	}
	c, err := genetlink.Dial(nlcfg)
	if err != nil {
		return nil, fmt.Errorf("pathmgr: open generic netlink socket: %w", err)
	}
	return c, nil
}

// resolveFamily looks up mptcp_pm, with a plain message when it is absent.
func resolveFamily(c *genetlink.Conn) (genetlink.Family, error) {
	f, err := c.GetFamily(familyName)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return f, fmt.Errorf("pathmgr: MPTCP path manager (generic netlink family %s) not available: kernel without CONFIG_MPTCP or MPTCP disabled: %w", familyName, err)
		}
		return f, fmt.Errorf("pathmgr: resolve generic netlink family %s: %w", familyName, err)
	}
	return f, nil
}

// Dial opens a Client in the namespace cfg names (nil: the current one).
func Dial(cfg *Config) (*Client, error) {
	c, err := dialNetlink(cfg)
	if err != nil {
		return nil, err
	}
	return initClient(c)
}

// initClient resolves the family on an open connection; it closes the
// connection on failure. Tests call it with a genltest connection.
func initClient(c *genetlink.Conn) (*Client, error) {
	f, err := resolveFamily(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Client{c: c, family: f}, nil
}

// Close releases the netlink socket.
func (c *Client) Close() error { return c.c.Close() }

// FamilyVersion is the version the kernel reports for mptcp_pm.
func (c *Client) FamilyVersion() uint8 { return c.family.Version }

// execute sends one request and returns the replies. op names the command
// in errors.
func (c *Client) execute(op string, cmd uint8, flags netlink.HeaderFlags, encode func(*netlink.AttributeEncoder)) ([]genetlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	if encode != nil {
		encode(ae)
	}
	b, err := ae.Encode()
	if err != nil {
		return nil, fmt.Errorf("pathmgr: %s: encode: %w", op, err)
	}
	req := genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: familyVersion},
		Data:   b,
	}
	c.mu.Lock()
	if flags&netlink.Dump == 0 && !replies[cmd] {
		// Commands that change state send no reply unless asked for an
		// acknowledgement; without one Execute would wait forever.
		flags |= netlink.Acknowledge
	}
	msgs, err := c.c.Execute(req, c.family.ID, netlink.Request|flags)
	c.mu.Unlock()
	if err != nil {
		return nil, opError(op, err)
	}
	return msgs, nil
}

// replies lists the commands whose "do" form answers with a message.
var replies = map[uint8]bool{cmdGetAddr: true, cmdGetLimits: true}

// opError turns a netlink error into *Error, keeping the extack message.
func opError(op string, err error) error {
	var oe *netlink.OpError
	if errors.As(err, &oe) {
		e := &Error{Op: op, Message: oe.Message, Err: oe.Err}
		if e.Message == "" {
			// The kernel gave no reason: say what the errno means here.
			switch {
			case errors.Is(oe.Err, unix.EOPNOTSUPP):
				e.Message = "command not supported by this kernel's MPTCP path manager"
			case errors.Is(oe.Err, unix.EPERM):
				e.Message = "needs CAP_NET_ADMIN in the network namespace"
			}
		}
		return e
	}
	return &Error{Op: op, Err: err}
}

// AddEndpoint adds an endpoint to the in-kernel PM (`ip mptcp endpoint add`).
// With ID 0 the kernel picks the id; the endpoint as stored is not returned
// by the kernel: read it back with Endpoints.
func (c *Client) AddEndpoint(e Endpoint) error {
	if err := checkAddr("endpoint add", e.Addr); err != nil {
		return err
	}
	_, err := c.execute("endpoint add", cmdAddAddr, 0, func(ae *netlink.AttributeEncoder) {
		encodeAddr(ae, attrAddr, e)
	})
	return err
}

// DeleteEndpoint removes the endpoint with the given id. Id 0 (the address
// of the initial subflow) needs addr as well; otherwise addr may be invalid.
func (c *Client) DeleteEndpoint(id uint8, addr netip.Addr) error {
	if id == 0 && !addr.IsValid() {
		return fmt.Errorf("pathmgr: endpoint delete: id 0 needs the address as well")
	}
	_, err := c.execute("endpoint delete", cmdDelAddr, 0, func(ae *netlink.AttributeEncoder) {
		encodeAddr(ae, attrAddr, Endpoint{ID: id, Addr: addr})
	})
	return err
}

// Endpoint returns the endpoint with the given id.
func (c *Client) Endpoint(id uint8) (Endpoint, error) {
	if id == 0 {
		return Endpoint{}, fmt.Errorf("pathmgr: endpoint get: id must be 1..%d", maxEndpointID)
	}
	msgs, err := c.execute("endpoint get", cmdGetAddr, 0, func(ae *netlink.AttributeEncoder) {
		encodeAddr(ae, attrAddr, Endpoint{ID: id})
	})
	if err != nil {
		return Endpoint{}, err
	}
	eps, err := parseEndpoints(msgs)
	if err != nil {
		return Endpoint{}, err
	}
	if len(eps) != 1 {
		return Endpoint{}, fmt.Errorf("pathmgr: endpoint get %d: kernel sent %d endpoints, want 1", id, len(eps))
	}
	return eps[0], nil
}

// Endpoints dumps the in-kernel PM's endpoints (`ip mptcp endpoint show`).
func (c *Client) Endpoints() ([]Endpoint, error) {
	msgs, err := c.execute("endpoint dump", cmdGetAddr, netlink.Dump, nil)
	if err != nil {
		return nil, err
	}
	return parseEndpoints(msgs)
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
	msgs, err := c.execute("connection addresses", cmdGetAddr, netlink.Dump, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(attrToken, token)
	})
	if err != nil {
		return nil, err
	}
	return parseEndpoints(msgs)
}

func parseEndpoints(msgs []genetlink.Message) ([]Endpoint, error) {
	eps := make([]Endpoint, 0, len(msgs))
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data)
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			if ad.Type() != attrAddr {
				continue
			}
			var e Endpoint
			var derr error
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				e, derr = decodeAddr(nad)
				return derr
			})
			if derr != nil {
				return nil, derr
			}
			eps = append(eps, e)
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
	}
	return eps, nil
}

// FlushEndpoints removes every endpoint (`ip mptcp endpoint flush`).
func (c *Client) FlushEndpoints() error {
	_, err := c.execute("endpoint flush", cmdFlushAddrs, 0, nil)
	return err
}

// SetEndpointFlags changes the backup and fullmesh flags of an endpoint of
// the in-kernel PM, found by id (addr invalid) or by address (id 0), as
// `ip mptcp endpoint change` does. Flags holds the new state of backup and
// fullmesh; the kernel sends MP_PRIO on existing subflows when backup
// changes.
func (c *Client) SetEndpointFlags(id uint8, addr netip.Addr, flags EndpointFlags) error {
	if id == 0 && !addr.IsValid() {
		return fmt.Errorf("pathmgr: endpoint change: give an id (1..%d) or an address", maxEndpointID)
	}
	_, err := c.execute("endpoint change", cmdSetFlags, 0, func(ae *netlink.AttributeEncoder) {
		encodeAddr(ae, attrAddr, Endpoint{ID: id, Addr: addr, Flags: flags})
	})
	return err
}

// Limits returns the in-kernel PM's limits.
func (c *Client) Limits() (Limits, error) {
	msgs, err := c.execute("limits get", cmdGetLimits, 0, nil)
	if err != nil {
		return Limits{}, err
	}
	var l Limits
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data)
		if err != nil {
			return l, err
		}
		for ad.Next() {
			switch ad.Type() {
			case attrRcvAddAddrs:
				l.AddAddrAccepted = ad.Uint32()
			case attrSubflows:
				l.Subflows = ad.Uint32()
			}
		}
		if err := ad.Err(); err != nil {
			return l, err
		}
	}
	return l, nil
}

// SetLimits changes the limits given in u and keeps the others.
func (c *Client) SetLimits(u LimitsUpdate) error {
	for _, v := range []struct {
		name string
		p    *uint32
	}{{"subflow", u.Subflows}, {"add_addr_accepted", u.AddAddrAccepted}} {
		if v.p != nil && *v.p > MaxLimit {
			return fmt.Errorf("pathmgr: limits set: %s %d is out of range 0..%d", v.name, *v.p, MaxLimit)
		}
	}
	_, err := c.execute("limits set", cmdSetLimits, 0, func(ae *netlink.AttributeEncoder) {
		if u.AddAddrAccepted != nil {
			ae.Uint32(attrRcvAddAddrs, *u.AddAddrAccepted)
		}
		if u.Subflows != nil {
			ae.Uint32(attrSubflows, *u.Subflows)
		}
	})
	return err
}

// Announce makes a userspace-PM connection send ADD_ADDR for a local
// address (`pm_nl_ctl ann`). e.ID must be 1..255; e.Port, when set, also
// makes the kernel open a listener on that port for joins.
func (c *Client) Announce(token uint32, e Endpoint) error {
	if err := checkAddr("announce", e.Addr); err != nil {
		return err
	}
	if e.ID == 0 {
		return fmt.Errorf("pathmgr: announce: local id must be 1..%d", maxEndpointID)
	}
	e.Flags |= FlagSignal
	_, err := c.execute("announce", cmdAnnounce, 0, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(attrToken, token)
		encodeAddr(ae, attrAddr, e)
	})
	return err
}

// Remove makes a userspace-PM connection send RM_ADDR for the local
// address id (and close the subflows using it).
func (c *Client) Remove(token uint32, id uint8) error {
	_, err := c.execute("remove", cmdRemove, 0, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(attrToken, token)
		ae.Uint8(attrLocID, id)
	})
	return err
}

// CreateSubflow opens a new subflow of a userspace-PM connection from
// local (address, optional id, optional interface, optional backup flag)
// to remote. The connection must be established (event "established").
func (c *Client) CreateSubflow(token uint32, local Endpoint, remote netip.AddrPort) error {
	if err := checkPair("subflow create", local.Addr, remote); err != nil {
		return err
	}
	if remote.Port() == 0 {
		return fmt.Errorf("pathmgr: subflow create: remote port is required")
	}
	_, err := c.execute("subflow create", cmdSubflowCreate, 0, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(attrToken, token)
		encodeAddr(ae, attrAddr, local)
		encodeRemote(ae, remote)
	})
	return err
}

// DestroySubflow closes the subflow of a userspace-PM connection with the
// given ends (both ports required).
func (c *Client) DestroySubflow(token uint32, sf Subflow) error {
	if err := checkPair("subflow destroy", sf.Local.Addr(), sf.Remote); err != nil {
		return err
	}
	if sf.Local.Port() == 0 || sf.Remote.Port() == 0 {
		return fmt.Errorf("pathmgr: subflow destroy: local and remote ports are both required")
	}
	_, err := c.execute("subflow destroy", cmdSubflowDestroy, 0, func(ae *netlink.AttributeEncoder) {
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
	_, err := c.execute("subflow set", cmdSetFlags, 0, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(attrToken, token)
		encodeAddr(ae, attrAddr, Endpoint{Addr: sf.Local.Addr(), Port: sf.Local.Port(), Flags: flags})
		encodeRemote(ae, sf.Remote)
	})
	return err
}

func checkAddr(op string, a netip.Addr) error {
	if !a.IsValid() {
		return fmt.Errorf("pathmgr: %s: an IPv4 or IPv6 address is required", op)
	}
	return nil
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
var kernelRelease = func() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

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
