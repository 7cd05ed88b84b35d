package pathmgr

import "encoding/binary"

// nlaFNested marks an attribute whose value is attributes (NLA_F_NESTED).
const nlaFNested = 0x8000

// attrEncoder appends a request's netlink attributes to b: each a header
// (length, type) and its value in host byte order, padded to 4 bytes. b
// starts at a 4-byte boundary of the message. The client encodes into its
// own send buffer with it, so a request allocates nothing; netlink's
// AttributeEncoder allocates 22 times for a SUBFLOW_CREATE's attributes
// (BenchmarkEncodeCreate). Values are never longer than an IPv6 address,
// so no length can overflow the header's 16 bits.
type attrEncoder struct{ b []byte }

func (e *attrEncoder) header(typ uint16, n int) {
	e.b = binary.NativeEndian.AppendUint16(e.b, uint16(4+n))
	e.b = binary.NativeEndian.AppendUint16(e.b, typ)
}

func (e *attrEncoder) pad() {
	for len(e.b)%4 != 0 {
		e.b = append(e.b, 0)
	}
}

// Uint8 appends a one-byte attribute.
func (e *attrEncoder) Uint8(typ uint16, v uint8) {
	e.header(typ, 1)
	e.b = append(e.b, v)
	e.pad()
}

// Uint16 appends a two-byte attribute.
func (e *attrEncoder) Uint16(typ uint16, v uint16) {
	e.header(typ, 2)
	e.b = binary.NativeEndian.AppendUint16(e.b, v)
	e.pad()
}

// Uint32 appends a four-byte attribute.
func (e *attrEncoder) Uint32(typ uint16, v uint32) {
	e.header(typ, 4)
	e.b = binary.NativeEndian.AppendUint32(e.b, v)
}

// Int32 appends a signed four-byte attribute.
func (e *attrEncoder) Int32(typ uint16, v int32) { e.Uint32(typ, uint32(v)) }

// Bytes appends an attribute of v's bytes.
func (e *attrEncoder) Bytes(typ uint16, v []byte) {
	e.header(typ, len(v))
	e.b = append(e.b, v...)
	e.pad()
}

// Nested appends an attribute whose value is the attributes fn appends.
func (e *attrEncoder) Nested(typ uint16, fn func(*attrEncoder)) {
	start := len(e.b)
	e.header(typ|nlaFNested, 0)
	fn(e)
	binary.NativeEndian.PutUint16(e.b[start:], uint16(len(e.b)-start))
}
