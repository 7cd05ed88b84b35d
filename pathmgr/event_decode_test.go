//go:build linux

package pathmgr

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// kernelEvent encodes an event the way the kernel's pm_netlink.c does:
// addresses as raw bytes, ports big-endian, everything else host order,
// and only the attributes listed in attrs (taken from e).
func kernelEvent(t testing.TB, e Event, attrs ...uint16) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	be16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	for _, a := range attrs {
		switch a {
		case evAttrToken:
			ae.Uint32(a, e.Token)
		case evAttrFamily:
			ae.Uint16(a, e.Family)
		case evAttrLocID:
			ae.Uint8(a, e.LocalID)
		case evAttrRemID:
			ae.Uint8(a, e.RemoteID)
		case evAttrSaddr4:
			b := e.Local.Addr().As4()
			ae.Bytes(a, b[:])
		case evAttrSaddr6:
			b := e.Local.Addr().As16()
			ae.Bytes(a, b[:])
		case evAttrDaddr4:
			b := e.Remote.Addr().As4()
			ae.Bytes(a, b[:])
		case evAttrDaddr6:
			b := e.Remote.Addr().As16()
			ae.Bytes(a, b[:])
		case evAttrSport:
			ae.Bytes(a, be16(e.Local.Port()))
		case evAttrDport:
			ae.Bytes(a, be16(e.Remote.Port()))
		case evAttrBackup:
			ae.Uint8(a, uint8(b2i(e.Backup)))
		case evAttrError:
			ae.Uint8(a, e.Error)
		case evAttrFlags:
			ae.Uint16(a, e.Flags)
		case evAttrTimeout:
			ae.Uint32(a, e.Timeout)
		case evAttrIfIdx:
			ae.Int32(a, int32(e.IfIndex))
		case evAttrResetReason:
			ae.Uint32(a, e.ResetReason)
		case evAttrResetFlags:
			ae.Uint32(a, e.ResetFlags)
		case evAttrServerSide:
			ae.Uint8(a, uint8(b2i(e.ServerSide)))
		default:
			t.Fatalf("kernelEvent: unknown attribute %d", a)
		}
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func withPresent(e Event, attrs ...uint16) Event {
	for _, a := range attrs {
		e.set(a)
	}
	return e
}

var (
	v4l = netip.MustParseAddrPort("10.0.1.1:40001")
	v4r = netip.MustParseAddrPort("10.0.1.2:8080")
	v6l = netip.MustParseAddrPort("[fd00:2::1]:40002")
	v6r = netip.MustParseAddrPort("[fd00:1::2]:443")
)

// eventCase is one event as the kernel sends it: the decoded value and
// the attributes it carries.
type eventCase struct {
	name  string
	e     Event
	attrs []uint16
}

// Attribute sets per type, from the kernel's pm_netlink.c
// (mptcp_event_created, mptcp_event_put_token_and_ssk, mptcp_event_addr_*,
// mptcp_event_pm_listener, mptcp_event_sub_closed).
var (
	connAttrs4 = []uint16{evAttrToken, evAttrFlags, evAttrLocID, evAttrRemID, evAttrFamily, evAttrSaddr4, evAttrDaddr4, evAttrSport, evAttrDport}
	sfAttrs4   = []uint16{evAttrToken, evAttrLocID, evAttrRemID, evAttrFamily, evAttrSaddr4, evAttrDaddr4, evAttrSport, evAttrDport, evAttrBackup, evAttrIfIdx}
	sfAttrs6   = []uint16{evAttrToken, evAttrLocID, evAttrRemID, evAttrFamily, evAttrSaddr6, evAttrDaddr6, evAttrSport, evAttrDport, evAttrBackup, evAttrIfIdx, evAttrError}
)

func eventCases() []eventCase {
	return []eventCase{
		{"created server side, 6.18 flag + deprecated attr", Event{Type: EventCreated, Token: 0xdeadbeef, Family: unix.AF_INET, Local: v4l, Remote: v4r, Flags: evFlagServerSide, ServerSide: true},
			append([]uint16{evAttrServerSide}, connAttrs4...)},
		{"created client", Event{Type: EventCreated, Token: 1, Family: unix.AF_INET, Local: v4l, Remote: v4r},
			[]uint16{evAttrToken, evAttrLocID, evAttrRemID, evAttrFamily, evAttrSaddr4, evAttrDaddr4, evAttrSport, evAttrDport}},
		{"established deny join id0", Event{Type: EventEstablished, Token: 2, Family: unix.AF_INET, Local: v4l, Remote: v4r, Flags: evFlagDenyJoinID0, DenyJoinID0: true},
			connAttrs4},
		{"established v6", Event{Type: EventEstablished, Token: 3, Family: unix.AF_INET6, Local: v6l, Remote: v6r},
			[]uint16{evAttrToken, evAttrLocID, evAttrRemID, evAttrFamily, evAttrSaddr6, evAttrDaddr6, evAttrSport, evAttrDport}},
		{"closed", Event{Type: EventClosed, Token: 4}, []uint16{evAttrToken}},
		{"announced", Event{Type: EventAnnounced, Token: 5, RemoteID: 3, Family: unix.AF_INET, Remote: netip.MustParseAddrPort("10.0.2.2:0")},
			[]uint16{evAttrToken, evAttrRemID, evAttrFamily, evAttrDaddr4}},
		{"announced with port", Event{Type: EventAnnounced, Token: 5, RemoteID: 4, Family: unix.AF_INET6, Remote: v6r},
			[]uint16{evAttrToken, evAttrRemID, evAttrFamily, evAttrDaddr6, evAttrDport}},
		{"removed", Event{Type: EventRemoved, Token: 6, RemoteID: 3}, []uint16{evAttrToken, evAttrRemID}},
		{"sub_established", Event{Type: EventSubEstablished, Token: 7, Family: unix.AF_INET, LocalID: 2, Local: v4l, Remote: v4r, IfIndex: 3},
			sfAttrs4},
		{"sub_established backup v6 with error", Event{Type: EventSubEstablished, Token: 7, Family: unix.AF_INET6, LocalID: 1, RemoteID: 5, Local: v6l, Remote: v6r, Backup: true, IfIndex: 12, Error: uint8(unix.ECONNRESET)},
			sfAttrs6},
		{"sub_closed with reset", Event{Type: EventSubClosed, Token: 8, Family: unix.AF_INET, LocalID: 2, Local: v4l, Remote: v4r, IfIndex: 3, Error: uint8(unix.ECONNRESET), ResetReason: 1, ResetFlags: 1},
			append(append([]uint16{}, sfAttrs4...), evAttrError, evAttrResetReason, evAttrResetFlags)},
		{"sub_priority", Event{Type: EventSubPriority, Token: 9, Family: unix.AF_INET, LocalID: 2, Local: v4l, Remote: v4r, Backup: true, IfIndex: 3},
			sfAttrs4},
		{"listener_created", Event{Type: EventListenerCreated, Family: unix.AF_INET, Local: netip.MustParseAddrPort("10.0.2.1:20006")},
			[]uint16{evAttrFamily, evAttrSport, evAttrSaddr4}},
		{"listener_closed v6", Event{Type: EventListenerClosed, Family: unix.AF_INET6, Local: v6l},
			[]uint16{evAttrFamily, evAttrSport, evAttrSaddr6}},
		{"timeout", Event{Type: EventAnnounced, Token: 10, Timeout: 120}, []uint16{evAttrToken, evAttrTimeout}},
		{"unknown type kept", Event{Type: 42, Token: 11}, []uint16{evAttrToken}},
	}
}

func TestDecodeEventKernelEncodings(t *testing.T) {
	seen := map[EventType]bool{}
	for _, tc := range eventCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := kernelEvent(t, tc.e, tc.attrs...)
			got, err := decodeEvent(uint8(tc.e.Type), b)
			if err != nil {
				t.Fatal(err)
			}
			want := withPresent(tc.e, tc.attrs...)
			if got != want {
				t.Errorf("decodeEvent:\n got %#v\nwant %#v", got, want)
			}
			seen[got.Type] = true
		})
	}
	for typ := range eventNames {
		if !seen[typ] {
			t.Errorf("no decode case for event type %s", typ)
		}
	}
}

func TestDecodeEventPortsBigEndian(t *testing.T) {
	// 8080 = 0x1f90: the kernel puts the bytes 1f 90 (nla_put_be16).
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(evAttrSport, []byte{0x1f, 0x90})
	ae.Bytes(evAttrSaddr4, []byte{10, 0, 0, 1})
	b, _ := ae.Encode()
	e, err := decodeEvent(eventListenerCreated, b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Local != netip.MustParseAddrPort("10.0.0.1:8080") {
		t.Errorf("Local = %v, want 10.0.0.1:8080", e.Local)
	}
}

func TestDecodeEventMalformedNamesAttribute(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"short header", []byte{8, 0}, "too short"},
		{"length past end", []byte{12, 0, evAttrToken, 0, 1, 2, 3, 4}, "bad length"},
		{"length below header", []byte{2, 0, evAttrToken, 0}, "bad length"},
		{"short token", []byte{6, 0, evAttrToken, 0, 1, 2, 0, 0}, "token"},
		{"short saddr6", []byte{8, 0, evAttrSaddr6, 0, 1, 2, 3, 4}, "saddr6"},
		{"short sport", []byte{5, 0, evAttrSport, 0, 1, 0, 0, 0}, "sport"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeEvent(eventSubEstablished, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decodeEvent(%x) error = %v, want one mentioning %q", tc.data, err, tc.want)
			}
		})
	}
	// Unknown attributes are skipped, not errors: newer kernels add some.
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(evAttrToken, 7)
	ae.Uint64(200, 1)
	b, _ := ae.Encode()
	e, err := decodeEvent(eventClosed, b)
	if err != nil || e.Token != 7 {
		t.Errorf("decodeEvent with an unknown attribute = %#v, %v; want token 7, no error", e, err)
	}
}

func TestEventTypeNames(t *testing.T) {
	for typ, name := range eventNames {
		if typ.String() != name {
			t.Errorf("%d.String() = %q, want %q", typ, typ.String(), name)
		}
		if p, ok := ParseEventType(name); !ok || p != typ {
			t.Errorf("ParseEventType(%q) = %d, %v", name, p, ok)
		}
	}
	if p, ok := ParseEventType("event_42"); !ok || p != 42 {
		t.Errorf("ParseEventType(event_42) = %d, %v", p, ok)
	}
	// Numbers of the kernel's enum mptcp_event_type.
	want := map[EventType]int{EventCreated: 1, EventEstablished: 2, EventClosed: 3, EventAnnounced: 6, EventRemoved: 7,
		EventSubEstablished: 10, EventSubClosed: 11, EventSubPriority: 13, EventListenerCreated: 15, EventListenerClosed: 16}
	for typ, n := range want {
		if int(typ) != n {
			t.Errorf("%s = %d, want %d (uapi mptcp_event_type)", typ, typ, n)
		}
	}
}

func TestEventJSONOnlyCarriedFields(t *testing.T) {
	cs := eventCases()
	for _, tc := range []struct {
		c    eventCase
		want string
	}{
		{cs[0], `{"daddr":"10.0.1.2","dport":8080,"family":"inet","flags":2,"loc_id":0,"rem_id":0,"saddr":"10.0.1.1","server_side":true,"sport":40001,"token":3735928559,"type":"created"}`},
		{cs[2], `{"daddr":"10.0.1.2","deny_join_id0":true,"dport":8080,"family":"inet","flags":1,"loc_id":0,"rem_id":0,"saddr":"10.0.1.1","sport":40001,"token":2,"type":"established"}`},
		{cs[4], `{"token":4,"type":"closed"}`},
		{cs[5], `{"daddr":"10.0.2.2","family":"inet","rem_id":3,"token":5,"type":"announced"}`},
		{cs[9], `{"backup":true,"daddr":"fd00:1::2","dport":443,"error":104,"error_name":"connection reset by peer","family":"inet6","if_idx":12,"loc_id":1,"rem_id":5,"saddr":"fd00:2::1","sport":40002,"token":7,"type":"sub_established"}`},
		{cs[10], `{"backup":false,"daddr":"10.0.1.2","dport":8080,"error":104,"error_name":"connection reset by peer","family":"inet","if_idx":3,"loc_id":2,"rem_id":0,"reset_flags":1,"reset_reason":1,"saddr":"10.0.1.1","sport":40001,"token":8,"type":"sub_closed"}`},
		{cs[12], `{"family":"inet","saddr":"10.0.2.1","sport":20006,"type":"listener_created"}`},
		{cs[15], `{"token":11,"type":"event_42"}`},
	} {
		e, err := decodeEvent(uint8(tc.c.e.Type), kernelEvent(t, tc.c.e, tc.c.attrs...))
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%s JSON:\n got %s\nwant %s", tc.c.name, b, tc.want)
		}
	}
}

func TestEventStringLikeIPMonitor(t *testing.T) {
	c := eventCases()[8]
	e, err := decodeEvent(uint8(c.e.Type), kernelEvent(t, c.e, c.attrs...))
	if err != nil {
		t.Fatal(err)
	}
	want := "[ SUB_ESTABLISHED] token=7 remid=0 locid=2 saddr=10.0.1.1 daddr=10.0.1.2 sport=40001 dport=8080 backup=0 ifindex=3"
	if got := e.String(); got != want {
		t.Errorf("String:\n got %q\nwant %q", got, want)
	}
}

func TestReceiveErrorLostEvents(t *testing.T) {
	// What mdlayher/netlink returns when recvmsg fails with ENOBUFS.
	nerr := &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", unix.ENOBUFS)}
	err := receiveError(nerr)
	if !errors.Is(err, ErrEventsLost) || !errors.Is(err, unix.ENOBUFS) {
		t.Errorf("receiveError(ENOBUFS) = %v; want it to match ErrEventsLost and ENOBUFS", err)
	}
	other := receiveError(fmt.Errorf("x: %w", unix.EBADF))
	if errors.Is(other, ErrEventsLost) || !errors.Is(other, unix.EBADF) {
		t.Errorf("receiveError(EBADF) = %v; want EBADF, not ErrEventsLost", other)
	}
}

// nlFrame wraps a generic netlink message (command cmd, attributes data)
// in a netlink header of type typ, padded as the kernel pads it.
func nlFrame(typ uint16, cmd uint8, data []byte) []byte {
	return nlmsg(typ, 0, 0, append([]byte{cmd, 1, 0, 0}, data...))
}

// TestDecodeDatagram: the events of a datagram in order, other messages
// skipped, errors and broken frames reported after the events before them.
func TestDecodeDatagram(t *testing.T) {
	const fam = 0x1d
	cases := eventCases()
	a, b := cases[0], cases[1]
	ea, eb := kernelEvent(t, a.e, a.attrs...), kernelEvent(t, b.e, b.attrs...)
	var dg []byte
	dg = append(dg, nlFrame(fam, uint8(a.e.Type), ea)...)
	dg = append(dg, nlFrame(1, 0, nil)...)          // NLMSG_NOOP
	dg = append(dg, nlFrame(fam+1, 0, []byte{})...) // another family
	dg = append(dg, nlFrame(fam, uint8(b.e.Type), eb)...)
	got, err := decodeDatagram(dg, fam, nil)
	if err != nil || len(got) != 2 || got[0].Type != a.e.Type || got[1].Type != b.e.Type || got[1].Token != b.e.Token {
		t.Fatalf("decodeDatagram = %v, %v; want the two events %v, %v", got, err, a.e.Type, b.e.Type)
	}
	for _, tc := range []struct {
		name string
		tail []byte
		want string
	}{
		{"short header", []byte{1, 2, 3}, "too short for a netlink header"},
		{"length past the end", nlFrame(fam, 1, ea)[:30], "bad length"},
		{"error message", nlFrame(nlmsgError, 0, []byte{0, 0, 0, 0}), "type 2"},
		{"no generic header", func() []byte {
			f := nlFrame(fam, 1, nil)[:nlmsgHdrLen+2]
			binary.NativeEndian.PutUint32(f, uint32(len(f)))
			return f
		}(), "too short for its header"},
	} {
		got, err := decodeDatagram(append(nlFrame(fam, uint8(a.e.Type), ea), tc.tail...), fam, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || len(got) != 1 {
			t.Errorf("%s: decodeDatagram = %d events, %v; want the first event and an error mentioning %q", tc.name, len(got), err, tc.want)
		}
	}
}
