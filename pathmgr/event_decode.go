package pathmgr

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// decodeEvent parses one event message: cmd is the generic netlink command
// (the event type) and data its attributes. It never panics, whatever the
// input (see FuzzDecodeEvent); malformed attributes are errors naming them.
func decodeEvent(cmd uint8, data []byte) (Event, error) {
	e := Event{Type: EventType(cmd)}
	var saddr, daddr netip.Addr
	var sport, dport uint16
	for len(data) > 0 {
		if len(data) < 4 {
			return e, fmt.Errorf("pathmgr: event %s: %d trailing bytes, too short for an attribute header", e.Type, len(data))
		}
		l := int(binary.NativeEndian.Uint16(data[0:2]))
		typ := binary.NativeEndian.Uint16(data[2:4]) & 0x3fff // strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
		if l < 4 || l > len(data) {
			return e, fmt.Errorf("pathmgr: event %s: attribute %d has bad length %d (%d bytes left)", e.Type, typ, l, len(data))
		}
		v := data[4:l]
		adv := (l + 3) &^ 3
		if adv > len(data) {
			adv = len(data)
		}
		data = data[adv:]
		if typ < 32 {
			e.present |= 1 << typ
		}
		var err error
		switch typ {
		case evAttrToken:
			e.Token, err = u32(v, "token")
		case evAttrFamily:
			e.Family, err = u16(v, "family")
		case evAttrLocID:
			e.LocalID, err = u8(v, "loc_id")
		case evAttrRemID:
			e.RemoteID, err = u8(v, "rem_id")
		case evAttrSaddr4:
			saddr, err = ip4(v, "saddr4")
		case evAttrSaddr6:
			saddr, err = ip6(v, "saddr6")
		case evAttrDaddr4:
			daddr, err = ip4(v, "daddr4")
		case evAttrDaddr6:
			daddr, err = ip6(v, "daddr6")
		case evAttrSport:
			sport, err = be16(v, "sport")
		case evAttrDport:
			dport, err = be16(v, "dport")
		case evAttrBackup:
			var b uint8
			b, err = u8(v, "backup")
			e.Backup = b != 0
		case evAttrError:
			e.Error, err = u8(v, "error")
		case evAttrFlags:
			e.Flags, err = u16(v, "flags")
			e.ServerSide = e.ServerSide || e.Flags&evFlagServerSide != 0
			e.DenyJoinID0 = e.Flags&evFlagDenyJoinID0 != 0
		case evAttrTimeout:
			e.Timeout, err = u32(v, "timeout")
		case evAttrIfIdx:
			var x uint32
			x, err = u32(v, "if_idx")
			e.IfIndex = int(int32(x))
		case evAttrResetReason:
			e.ResetReason, err = u32(v, "reset_reason")
		case evAttrResetFlags:
			e.ResetFlags, err = u32(v, "reset_flags")
		case evAttrServerSide:
			var b uint8
			b, err = u8(v, "server_side")
			e.ServerSide = e.ServerSide || b != 0
		}
		if err != nil {
			return e, fmt.Errorf("pathmgr: event %s: %w", e.Type, err)
		}
	}
	e.Local = netip.AddrPortFrom(saddr, sport)
	e.Remote = netip.AddrPortFrom(daddr, dport)
	return e, nil
}

func u8(v []byte, name string) (uint8, error) {
	if len(v) < 1 {
		return 0, fmt.Errorf("attribute %s has %d bytes, want 1", name, len(v))
	}
	return v[0], nil
}

func u16(v []byte, name string) (uint16, error) {
	if len(v) < 2 {
		return 0, fmt.Errorf("attribute %s has %d bytes, want 2", name, len(v))
	}
	return binary.NativeEndian.Uint16(v), nil
}

func be16(v []byte, name string) (uint16, error) {
	if len(v) < 2 {
		return 0, fmt.Errorf("attribute %s has %d bytes, want 2", name, len(v))
	}
	return binary.BigEndian.Uint16(v), nil
}

func u32(v []byte, name string) (uint32, error) {
	if len(v) < 4 {
		return 0, fmt.Errorf("attribute %s has %d bytes, want 4", name, len(v))
	}
	return binary.NativeEndian.Uint32(v), nil
}

func ip4(v []byte, name string) (netip.Addr, error) {
	if len(v) < 4 {
		return netip.Addr{}, fmt.Errorf("attribute %s has %d bytes, want 4", name, len(v))
	}
	return netip.AddrFrom4([4]byte(v[:4])), nil
}

func ip6(v []byte, name string) (netip.Addr, error) {
	if len(v) < 16 {
		return netip.Addr{}, fmt.Errorf("attribute %s has %d bytes, want 16", name, len(v))
	}
	return netip.AddrFrom16([16]byte(v[:16])), nil
}

// decodeDatagram appends the events of one datagram read from the events
// socket to out: netlink messages of the family with type id family, each
// a generic netlink header and the event's attributes. Messages of other
// types (NOOP, DONE, another family) are skipped; an error message or a
// malformed frame ends the datagram with an error, after the events before
// it. It never panics, whatever the input (FuzzDecodeDatagram).
func decodeDatagram(b []byte, family uint16, out []Event) ([]Event, error) {
	for len(b) > 0 {
		m, rest, err := nextMessage(b)
		if err != nil {
			return out, fmt.Errorf("pathmgr: events: %w", err)
		}
		b = rest
		switch m.typ {
		case family:
		case nlmsgError, nlmsgOverrun:
			return out, fmt.Errorf("pathmgr: events: netlink message of type %d on the events socket", m.typ)
		default: // NOOP, DONE, or not ours
			continue
		}
		msg := m.data
		if len(msg) < genlHdrLen {
			return out, fmt.Errorf("pathmgr: events: generic netlink message of %d bytes, too short for its header", len(msg))
		}
		e, err := decodeEvent(msg[0], msg[genlHdrLen:])
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
	return out, nil
}
