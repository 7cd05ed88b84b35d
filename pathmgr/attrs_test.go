package pathmgr

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
)

// createAttrs are a SUBFLOW_CREATE's attributes, through either encoder.
func createAttrs(ae interface {
	Uint32(uint16, uint32)
}, addr func(typ uint16, e Endpoint)) {
	ae.Uint32(attrToken, 0xdeadbeef)
	addr(attrAddr, Endpoint{Addr: netip.MustParseAddr("10.1.1.1"), ID: 3, IfIndex: 4, Flags: FlagBackup})
	addr(attrAddrRemote, Endpoint{Addr: netip.MustParseAddr("2001:db8::2"), Port: 443})
}

// TestAttrEncoderMatchesNetlink: the client's encoder writes the bytes
// netlink's AttributeEncoder writes, for every kind of attribute the
// requests use (a nest of each width, odd lengths padded).
func TestAttrEncoderMatchesNetlink(t *testing.T) {
	var ours attrEncoder
	ours.Uint8(1, 7)
	ours.Uint16(2, 0x1234)
	ours.Int32(3, -5)
	ours.Bytes(4, []byte{1, 2, 3})
	createAttrs(&ours, func(typ uint16, e Endpoint) { encodeAddr(&ours, typ, e) })

	ref := netlink.NewAttributeEncoder()
	ref.Uint8(1, 7)
	ref.Uint16(2, 0x1234)
	ref.Int32(3, -5)
	ref.Bytes(4, []byte{1, 2, 3})
	refAddr := func(typ uint16, e Endpoint) {
		ref.Nested(typ, func(nae *netlink.AttributeEncoder) error {
			var in attrEncoder
			encodeAddr(&in, typ, e)
			// The nest's attributes, decoded from ours and encoded again
			// by netlink's encoder.
			ad, err := netlink.NewAttributeDecoder(in.b[4:])
			if err != nil {
				return err
			}
			for ad.Next() {
				nae.Bytes(ad.Type(), ad.Bytes())
			}
			return ad.Err()
		})
	}
	createAttrs(ref, refAddr)
	want, err := ref.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours.b, want) {
		t.Fatalf("attributes differ:\n ours %x\n want %x", ours.b, want)
	}
	// And a create's address nests decode to what was encoded.
	var create attrEncoder
	createAttrs(&create, func(typ uint16, e Endpoint) { encodeAddr(&create, typ, e) })
	ad, err := netlink.NewAttributeDecoder(create.b)
	if err != nil {
		t.Fatal(err)
	}
	var got []Endpoint
	for ad.Next() {
		if ad.Type() == attrAddr || ad.Type() == attrAddrRemote {
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				e, err := decodeAddr(nad)
				got = append(got, e)
				return err
			})
		}
	}
	want0 := Endpoint{Addr: netip.MustParseAddr("10.1.1.1"), ID: 3, IfIndex: 4, Flags: FlagBackup}
	want1 := Endpoint{Addr: netip.MustParseAddr("2001:db8::2"), Port: 443}
	if err := ad.Err(); err != nil || len(got) != 2 || got[0] != want0 || got[1] != want1 {
		t.Fatalf("decoded %+v, %v; want %+v and %+v", got, err, want0, want1)
	}
}

// BenchmarkEncodeCreate encodes a SUBFLOW_CREATE's attributes, side by
// side: with the client's encoder into a reused buffer (what a request
// does), and with netlink's AttributeEncoder (what it did).
//
//	go test -run '^$' -bench EncodeCreate -benchmem ./pathmgr
func BenchmarkEncodeCreate(b *testing.B) {
	local := Endpoint{Addr: netip.MustParseAddr("10.1.1.1"), ID: 3, IfIndex: 4}
	remote := netip.MustParseAddrPort("10.2.2.2:80")
	b.Run("attrEncoder", func(b *testing.B) {
		b.ReportAllocs()
		var ae attrEncoder
		for b.Loop() {
			ae.b = ae.b[:0]
			ae.Uint32(attrToken, 1234)
			encodeAddr(&ae, attrAddr, local)
			encodeRemote(&ae, remote)
		}
	})
	b.Run("netlink", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ae := netlink.NewAttributeEncoder()
			ae.Uint32(attrToken, 1234)
			ae.Nested(attrAddr, func(nae *netlink.AttributeEncoder) error {
				a := local.Addr.As4()
				nae.Uint16(addrAttrFamily, afInet)
				nae.Bytes(addrAttrAddr4, a[:])
				nae.Uint8(addrAttrID, local.ID)
				nae.Int32(addrAttrIfIdx, int32(local.IfIndex))
				return nil
			})
			ae.Nested(attrAddrRemote, func(nae *netlink.AttributeEncoder) error {
				a := remote.Addr().As4()
				nae.Uint16(addrAttrFamily, afInet)
				nae.Bytes(addrAttrAddr4, a[:])
				nae.Uint16(addrAttrPort, remote.Port())
				return nil
			})
			if _, err := ae.Encode(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
