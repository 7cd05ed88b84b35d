package pathmgr

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestNextMessage(t *testing.T) {
	msg := func(l uint32, typ, flags uint16, seq uint32, payload ...byte) []byte {
		b := binary.NativeEndian.AppendUint32(nil, l)
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = binary.NativeEndian.AppendUint16(b, flags)
		b = binary.NativeEndian.AppendUint32(b, seq)
		b = binary.NativeEndian.AppendUint32(b, 0) // port id
		return append(b, payload...)
	}
	// Two messages: the first with 5 bytes of payload and 3 of padding.
	first := msg(21, 0x20, 0x4, 7, 1, 2, 3, 4, 5)
	second := msg(16, 3, 0, 8)
	dgram := append(append(append([]byte{}, first...), 0, 0, 0), second...)

	m, rest, err := nextMessage(dgram)
	if err != nil || m.typ != 0x20 || m.flags != 0x4 || m.seq != 7 || !bytes.Equal(m.data, []byte{1, 2, 3, 4, 5}) {
		t.Fatalf("first: %+v, %v", m, err)
	}
	if !bytes.Equal(rest, second) {
		t.Fatalf("after the first: % x, want the second message (past the padding)", rest)
	}
	m, rest, err = nextMessage(rest)
	if err != nil || m.typ != 3 || m.seq != 8 || len(m.data) != 0 || len(rest) != 0 {
		t.Fatalf("second: %+v, rest % x, %v", m, rest, err)
	}
	// The last message's padding may be missing.
	if _, rest, err := nextMessage(first); err != nil || len(rest) != 0 {
		t.Fatalf("unpadded last message: rest % x, %v", rest, err)
	}

	for _, tt := range []struct {
		name string
		b    []byte
		want string
	}{
		{"shorter than a header", first[:15], "15 trailing bytes"},
		{"length below a header", msg(15, 2, 0, 1), "type 2 has bad length 15"},
		{"length past the end", msg(40, 2, 0, 1, 1, 2, 3, 4), "type 2 has bad length 40 (20 bytes left)"},
		{"length of 4 GiB (negative as an int on 32 bits)", msg(0xffffffff, 2, 0, 1), "bad length"},
	} {
		if _, rest, err := nextMessage(tt.b); err == nil || !strings.Contains(err.Error(), tt.want) || rest != nil {
			t.Errorf("%s: rest % x, err %v, want one with %q", tt.name, rest, err, tt.want)
		}
	}
}
