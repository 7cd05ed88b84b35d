package pathmgr

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// EndpointFlags are the MPTCP_PM_ADDR_FLAG_* bits of an endpoint.
type EndpointFlags uint32

// Endpoint flags. Implicit is set by the kernel only.
const (
	FlagSignal   EndpointFlags = flagSignal
	FlagSubflow  EndpointFlags = flagSubflow
	FlagBackup   EndpointFlags = flagBackup
	FlagFullmesh EndpointFlags = flagFullmesh
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

func (f EndpointFlags) String() string { return strings.Join(f.Strings(), " ") }

// MarshalJSON encodes the flags as an array of names.
func (f EndpointFlags) MarshalJSON() ([]byte, error) { return json.Marshal(f.Strings()) }

// Endpoint is an address known to a path manager: an endpoint of the
// in-kernel PM, or a local address of a userspace-PM connection.
type Endpoint struct {
	ID      uint8         `json:"id"`
	Addr    netip.Addr    `json:"address"`
	Port    uint16        `json:"port,omitempty"`
	Flags   EndpointFlags `json:"flags"`
	IfIndex int           `json:"if_idx,omitempty"`
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// encodeAddr writes an address nest: the local part of most commands.
// Zero fields (no id, no port, no flags, no interface) are left out, as
// the kernel treats a missing attribute as "not given".
func encodeAddr(ae *netlink.AttributeEncoder, typ uint16, e Endpoint) {
	ae.Nested(typ, func(nae *netlink.AttributeEncoder) error {
		if e.Addr.IsValid() {
			a := e.Addr.Unmap()
			nae.Uint16(addrAttrFamily, family(a))
			if a.Is4() {
				b := a.As4()
				nae.Bytes(addrAttrAddr4, b[:])
			} else {
				b := a.As16()
				nae.Bytes(addrAttrAddr6, b[:])
			}
		}
		if e.ID != 0 {
			nae.Uint8(addrAttrID, e.ID)
		}
		if e.Port != 0 {
			nae.Uint16(addrAttrPort, e.Port) // host byte order, see uapi.go
		}
		if e.Flags != 0 {
			nae.Uint32(addrAttrFlags, uint32(e.Flags))
		}
		if e.IfIndex != 0 {
			nae.Int32(addrAttrIfIdx, int32(e.IfIndex))
		}
		return nil
	})
}

// encodeRemote writes the remote address nest (address and port).
func encodeRemote(ae *netlink.AttributeEncoder, ap netip.AddrPort) {
	encodeAddr(ae, attrAddrRemote, Endpoint{Addr: ap.Addr(), Port: ap.Port()})
}

// decodeAddr reads an address nest.
func decodeAddr(ad *netlink.AttributeDecoder) (Endpoint, error) {
	var e Endpoint
	var fam uint16
	for ad.Next() {
		switch ad.Type() {
		case addrAttrFamily:
			fam = ad.Uint16()
		case addrAttrID:
			e.ID = ad.Uint8()
		case addrAttrAddr4:
			b := ad.Bytes()
			if len(b) != 4 {
				return e, fmt.Errorf("pathmgr: address attribute addr4 has %d bytes, want 4", len(b))
			}
			e.Addr = netip.AddrFrom4([4]byte(b))
		case addrAttrAddr6:
			b := ad.Bytes()
			if len(b) != 16 {
				return e, fmt.Errorf("pathmgr: address attribute addr6 has %d bytes, want 16", len(b))
			}
			e.Addr = netip.AddrFrom16([16]byte(b))
		case addrAttrPort:
			e.Port = ad.Uint16()
		case addrAttrFlags:
			e.Flags = EndpointFlags(ad.Uint32())
		case addrAttrIfIdx:
			e.IfIndex = int(ad.Int32())
		}
	}
	if err := ad.Err(); err != nil {
		return e, err
	}
	if fam == unix.AF_INET && e.Addr.Is6() {
		return e, fmt.Errorf("pathmgr: address family inet with an IPv6 address")
	}
	return e, nil
}
