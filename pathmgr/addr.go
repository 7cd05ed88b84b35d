package pathmgr

// Address nests (MPTCP_PM_ATTR_ADDR, MPTCP_PM_ATTR_ADDR_REMOTE): encoding
// and decoding shared by the commands and the inventory.

import (
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
)

// family returns the Linux address family number of a.
func family(a netip.Addr) uint16 {
	if a.Is4() {
		return afInet
	}
	return afInet6
}

// encodeAddr writes an address nest: the local part of most commands.
// Zero fields (no id, no port, no flags, no interface) are left out, as
// the kernel treats a missing attribute as "not given".
func encodeAddr(ae *attrEncoder, typ uint16, e Endpoint) {
	ae.Nested(typ, func(nae *attrEncoder) {
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
	})
}

// encodeRemote writes the remote address nest (address and port).
func encodeRemote(ae *attrEncoder, ap netip.AddrPort) {
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
	if fam == afInet && e.Addr.Is6() {
		return e, fmt.Errorf("pathmgr: address family inet with an IPv6 address")
	}
	return e, nil
}
