package pathmgr

import (
	"encoding/binary"
	"fmt"
)

// nlMessage is one netlink message of a datagram: the header fields its
// readers look at, and its payload (what follows the header, up to the
// header's length).
type nlMessage struct {
	typ, flags uint16
	seq        uint32
	data       []byte
}

// nextMessage takes the first netlink message off b, the bytes of one
// datagram: the message, and what follows it past its padding to 4 bytes.
// b shorter than a header, or a header whose length is below a header's
// or past the end of b, is an error: the rest of the datagram cannot be
// walked. Every reader of this package's datagrams walks them with it:
// the events, the acknowledgements and the inventory's dumps.
func nextMessage(b []byte) (nlMessage, []byte, error) {
	if len(b) < nlmsgHdrLen {
		return nlMessage{}, nil, fmt.Errorf("%d trailing bytes, too short for a netlink header", len(b))
	}
	l := int(binary.NativeEndian.Uint32(b[0:4]))
	typ := binary.NativeEndian.Uint16(b[4:6])
	if l < nlmsgHdrLen || l > len(b) {
		return nlMessage{}, nil, fmt.Errorf("netlink message of type %d has bad length %d (%d bytes left)", typ, l, len(b))
	}
	m := nlMessage{
		typ:   typ,
		flags: binary.NativeEndian.Uint16(b[6:8]),
		seq:   binary.NativeEndian.Uint32(b[8:12]),
		data:  b[nlmsgHdrLen:l],
	}
	return m, b[min((l+3)&^3, len(b)):], nil
}
