package pathmgr

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// EndpointFlags are the MPTCP_PM_ADDR_FLAG_* bits of an endpoint.
type EndpointFlags uint32

// Endpoint flags. Implicit is set by the kernel only (an address it learned
// from a subflow); Laminar is new in Linux 6.18.
const (
	FlagSignal   EndpointFlags = flagSignal   // announce to the peer (ADD_ADDR)
	FlagSubflow  EndpointFlags = flagSubflow  // open subflows from it
	FlagBackup   EndpointFlags = flagBackup   // subflows from it are backups
	FlagFullmesh EndpointFlags = flagFullmesh // one subflow to every peer address
	FlagImplicit EndpointFlags = flagImplicit
	FlagLaminar  EndpointFlags = flagLaminar
)

var flagNames = []struct {
	f    EndpointFlags
	name string
}{
	{FlagSignal, "signal"},
	{FlagSubflow, "subflow"},
	{FlagBackup, "backup"},
	{FlagFullmesh, "fullmesh"},
	{FlagImplicit, "implicit"},
	{FlagLaminar, "laminar"},
}

// EndpointFlagNames lists the flag names ParseEndpointFlag accepts.
func EndpointFlagNames() []string {
	var s []string
	for _, n := range flagNames {
		s = append(s, n.name)
	}
	return s
}

// ParseEndpointFlag returns the flag named s (as printed by `ip mptcp`).
func ParseEndpointFlag(s string) (EndpointFlags, bool) {
	for _, n := range flagNames {
		if n.name == s {
			return n.f, true
		}
	}
	return 0, false
}

// Strings returns the names of the set flags, unknown bits as hex.
func (f EndpointFlags) Strings() []string {
	s := []string{}
	for _, n := range flagNames {
		if f&n.f != 0 {
			s = append(s, n.name)
			f &^= n.f
		}
	}
	if f != 0 {
		s = append(s, fmt.Sprintf("0x%x", uint32(f)))
	}
	return s
}

// String returns the names separated by spaces ("subflow backup").
func (f EndpointFlags) String() string { return strings.Join(f.Strings(), " ") }

// MarshalJSON encodes the flags as an array of names.
func (f EndpointFlags) MarshalJSON() ([]byte, error) { return json.Marshal(f.Strings()) }

// UnmarshalJSON decodes an array of names (and "0x.." for bits without a
// name), the inverse of MarshalJSON.
func (f *EndpointFlags) UnmarshalJSON(b []byte) error {
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return fmt.Errorf("pathmgr: endpoint flags: want an array of names: %w", err)
	}
	var out EndpointFlags
	for _, n := range names {
		if v, ok := ParseEndpointFlag(n); ok {
			out |= v
			continue
		}
		var raw uint32
		if _, err := fmt.Sscanf(n, "0x%x", &raw); err == nil && fmt.Sprintf("0x%x", raw) == n {
			out |= EndpointFlags(raw)
			continue
		}
		return fmt.Errorf("pathmgr: unknown endpoint flag %q (known: %s)", n, strings.Join(EndpointFlagNames(), ", "))
	}
	*f = out
	return nil
}

// Endpoint is an address known to a path manager: an endpoint of the
// in-kernel PM, or a local address of a userspace-PM connection.
type Endpoint struct {
	ID      uint8         `json:"id"`             // 1..255; 0 = let the kernel choose (add)
	Addr    netip.Addr    `json:"address"`        // IPv4 or IPv6
	Port    uint16        `json:"port,omitempty"` // signal endpoints only
	Flags   EndpointFlags `json:"flags"`
	IfIndex int           `json:"if_idx,omitempty"` // the interface subflows from it use
}

// AddEndpoint adds an endpoint to the in-kernel PM, like `ip mptcp
// endpoint add`. With ID 0 the kernel picks the id; the kernel does not
// return the stored endpoint: read it back with Endpoints. A Port needs
// FlagSignal and an address that exists locally (the kernel listens there).
//
// Kernels older than a flag store the endpoint without it and say nothing
// (laminar before Linux 6.18). When e asks for such a flag, AddEndpoint
// reads the endpoint back; if a requested flag is missing it deletes the
// endpoint again and returns an error wrapping ErrNotSupported that names
// the flag and the Linux version it needs.
func (c *Client) AddEndpoint(e Endpoint) error {
	if err := checkAddr("endpoint add", e.Addr); err != nil {
		return err
	}
	_, err := c.request("endpoint add", cmdAddAddr, false, func(ae *attrEncoder) {
		encodeAddr(ae, attrAddr, e)
	})
	if err != nil || e.Flags&^verifiedFlags == 0 {
		return err
	}
	return c.checkAddedFlags(e)
}

// verifiedFlags are the endpoint flags every kernel with the mptcp_pm
// family honours; AddEndpoint reads back endpoints asking for any other.
const verifiedFlags = FlagSignal | FlagSubflow | FlagBackup

// flagSince is the first Linux version that keeps each newer flag.
var flagSince = map[EndpointFlags]string{FlagFullmesh: "5.18", FlagLaminar: "6.18"}

// checkAddedFlags reads back the endpoint just added as e and, if the
// kernel dropped requested flags, removes it and says which.
func (c *Client) checkAddedFlags(e Endpoint) error {
	var got Endpoint
	if e.ID != 0 {
		ep, err := c.Endpoint(e.ID)
		if err != nil {
			return fmt.Errorf("pathmgr: endpoint add %s: reading it back: %w", e.Addr, err)
		}
		got = ep
	} else {
		eps, err := c.Endpoints()
		if err != nil {
			return fmt.Errorf("pathmgr: endpoint add %s: reading it back: %w", e.Addr, err)
		}
		found := false
		for _, ep := range eps {
			if ep.Addr == e.Addr && ep.Port == e.Port {
				got, found = ep, true
				break
			}
		}
		if !found {
			return fmt.Errorf("pathmgr: endpoint add %s: added, but not in the kernel's endpoint list", e.Addr)
		}
	}
	missing := e.Flags &^ got.Flags
	if missing == 0 {
		return nil
	}
	var why []string
	for _, n := range flagNames {
		if missing&n.f == 0 {
			continue
		}
		missing &^= n.f
		if v := flagSince[n.f]; v != "" {
			why = append(why, fmt.Sprintf("%q (needs Linux %s+)", n.name, v))
		} else {
			why = append(why, fmt.Sprintf("%q", n.name))
		}
	}
	if missing != 0 {
		why = append(why, fmt.Sprintf("0x%x", uint32(missing)))
	}
	msg := fmt.Sprintf("pathmgr: endpoint add %s: the kernel dropped flag %s", e.Addr, strings.Join(why, ", "))
	if derr := c.DeleteEndpoint(got.ID, got.Addr); derr != nil {
		return fmt.Errorf("%s, and removing the endpoint again failed: %v: %w", msg, derr, ErrNotSupported)
	}
	return fmt.Errorf("%s; the endpoint was not kept: %w", msg, ErrNotSupported)
}

// DeleteEndpoint removes the endpoint with the given id, like `ip mptcp
// endpoint delete id N`. Id 0 (the address of connections' initial
// subflows) needs addr as well; otherwise addr may be the zero Addr.
func (c *Client) DeleteEndpoint(id uint8, addr netip.Addr) error {
	if id == 0 && !addr.IsValid() {
		return fmt.Errorf("pathmgr: endpoint delete: id 0 needs the address as well")
	}
	_, err := c.request("endpoint delete", cmdDelAddr, false, func(ae *attrEncoder) {
		encodeAddr(ae, attrAddr, Endpoint{ID: id, Addr: addr})
	})
	return err
}

// Endpoint returns the in-kernel PM's endpoint with the given id (1..255).
// The kernel refuses an unknown id with "address not found" (EINVAL).
func (c *Client) Endpoint(id uint8) (Endpoint, error) {
	if id == 0 {
		return Endpoint{}, fmt.Errorf("pathmgr: endpoint get: id must be 1..%d", maxEndpointID)
	}
	msgs, err := c.request("endpoint get", cmdGetAddr, false, func(ae *attrEncoder) {
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

// Endpoints dumps the in-kernel PM's endpoints, like `ip mptcp endpoint
// show`.
func (c *Client) Endpoints() ([]Endpoint, error) {
	msgs, err := c.request("endpoint dump", cmdGetAddr, true, nil)
	if err != nil {
		return nil, err
	}
	return parseEndpoints(msgs)
}

// FlushEndpoints removes every endpoint of the in-kernel PM, like `ip mptcp
// endpoint flush`.
func (c *Client) FlushEndpoints() error {
	_, err := c.request("endpoint flush", cmdFlushAddrs, false, nil)
	return err
}

// SetEndpointFlags changes the backup and fullmesh flags of an endpoint of
// the in-kernel PM, found by id (addr the zero Addr) or by address (id 0),
// as `ip mptcp endpoint change` does. flags is the new state of both
// backup and fullmesh: the kernel takes both from the request, so read the
// endpoint first to change only one. The kernel sends MP_PRIO on existing
// subflows when backup changes; fullmesh cannot be set on a signal
// endpoint.
func (c *Client) SetEndpointFlags(id uint8, addr netip.Addr, flags EndpointFlags) error {
	if id == 0 && !addr.IsValid() {
		return fmt.Errorf("pathmgr: endpoint change: give an id (1..%d) or an address", maxEndpointID)
	}
	_, err := c.request("endpoint change", cmdSetFlags, false, func(ae *attrEncoder) {
		encodeAddr(ae, attrAddr, Endpoint{ID: id, Addr: addr, Flags: flags})
	})
	return err
}

// parseEndpoints decodes GET_ADDR replies: one address nest per message.
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

func checkAddr(op string, a netip.Addr) error {
	if !a.IsValid() {
		return fmt.Errorf("pathmgr: %s: an IPv4 or IPv6 address is required", op)
	}
	return nil
}
