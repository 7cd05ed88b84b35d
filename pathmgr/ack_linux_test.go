//go:build linux

package pathmgr

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"

	"github.com/gigapath/gigapath/internal/testbed"
)

// nlmsg is one netlink message: header fields and payload, padded.
func nlmsg(typ, flags uint16, seq uint32, payload []byte) []byte {
	b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(payload)+3)
	binary.NativeEndian.PutUint32(b[0:4], uint32(nlmsgHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// errmsg is an NLMSG_ERROR payload: the errno (negative), the echoed
// request (its header only when capped) and extended acknowledgement
// attributes.
func errmsg(errno int32, echoed []byte, msg string) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(errno))
	b = append(b, echoed...)
	if msg != "" {
		s := append([]byte(msg), 0)
		a := binary.NativeEndian.AppendUint16(nil, uint16(4+len(s)))
		a = binary.NativeEndian.AppendUint16(a, nlmsgerrAttrMsg)
		a = append(a, s...)
		for len(a)%4 != 0 {
			a = append(a, 0)
		}
		// An offset attribute before the message (the kernel writes the
		// message first): the message is found by its type.
		b = append(b, 8, 0, 2, 0, 20, 0, 0, 0)
		b = append(b, a...)
	}
	return b
}

func TestAckOf(t *testing.T) {
	req := nlmsg(0x1b, nlmFRequest|nlmFAck, 7, []byte{1, 1, 0, 0, 8, 0, 1, 0, 5, 0, 0, 0})
	eexist := -int32(syscall.EEXIST)
	// A request of 21 bytes, echoed in 24; and one whose header claims
	// 4 GiB.
	odd := append(slices.Clone(req[:nlmsgHdrLen]), 1, 2, 3, 4, 5)
	binary.NativeEndian.PutUint32(odd[0:4], uint32(len(odd)))
	huge := slices.Clone(req)
	binary.NativeEndian.PutUint32(huge[0:4], 0xffffffff)
	for _, tt := range []struct {
		name     string
		datagram []byte
		done     bool
		errno    syscall.Errno
		message  string
	}{
		{"ack", nlmsg(nlmsgError, nlmFCapped, 7, errmsg(0, req[:nlmsgHdrLen], "")), true, 0, ""},
		{"another request's ack", nlmsg(nlmsgError, nlmFCapped, 6, errmsg(0, req[:nlmsgHdrLen], "")), false, 0, ""},
		{"another request's reply", nlmsg(0x1b, 0, 7, []byte{1, 1, 0, 0}), false, 0, ""},
		{"a reply, then the ack", append(nlmsg(0x1b, 0, 6, []byte{1, 1, 0, 0}), nlmsg(nlmsgError, nlmFCapped, 7, errmsg(0, req[:nlmsgHdrLen], ""))...), true, 0, ""},
		{"refusal, request echoed whole", nlmsg(nlmsgError, nlmFAckTLVs, 7, errmsg(eexist, req, "duplicate one")), true, syscall.EEXIST, "duplicate one"},
		{"refusal, request capped", nlmsg(nlmsgError, nlmFAckTLVs|nlmFCapped, 7, errmsg(eexist, req[:nlmsgHdrLen], "duplicate one")), true, syscall.EEXIST, "duplicate one"},
		{"refusal, request echoed whole, its length padded", nlmsg(nlmsgError, nlmFAckTLVs, 7, errmsg(eexist, append(odd, 0, 0, 0), "duplicate one")), true, syscall.EEXIST, "duplicate one"},
		{"refusal, echoed length past the end", nlmsg(nlmsgError, nlmFAckTLVs, 7, errmsg(eexist, huge, "duplicate one")), true, syscall.EEXIST, ""},
		{"refusal without a message", nlmsg(nlmsgError, 0, 7, errmsg(eexist, req, "")), true, syscall.EEXIST, ""},
		{"refusal, attributes cut", nlmsg(nlmsgError, nlmFAckTLVs, 7, errmsg(eexist, req, "duplicate one")[:len(req)+10]), true, syscall.EEXIST, ""},
		{"too short for its errno", nlmsg(nlmsgError, 0, 7, []byte{1, 2}), true, 0, ""},
		{"bad length", []byte{200, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0}, true, 0, ""},
		{"empty", nil, false, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done, err := ackOf(tt.datagram, 7)
			if done != tt.done {
				t.Fatalf("done = %v (err %v), want %v", done, err, tt.done)
			}
			if !done {
				return
			}
			var oe *netlink.OpError
			switch {
			case tt.errno != 0:
				if !errors.As(err, &oe) || !errors.Is(err, tt.errno) || oe.Message != tt.message {
					t.Fatalf("err = %#v, want errno %v with message %q", err, tt.errno, tt.message)
				}
			case strings.HasPrefix(tt.name, "too short"), tt.name == "bad length":
				if err == nil {
					t.Fatal("malformed acknowledgement accepted")
				}
			case err != nil:
				t.Fatalf("err = %v, want success", err)
			}
		})
	}
}

// TestIntegrationAckSkipsAnotherRequestsReply: answers left on the socket
// (requests whose answers were never read: an acknowledgement of success
// and a reply) are taken neither for the next command's acknowledgement
// nor for the next get's reply, and the socket is clean after each.
func TestIntegrationAckSkipsAnotherRequestsReply(t *testing.T) {
	ns, c := dialIn(t, "ack")
	if c.c.rc == nil {
		t.Fatal("a real socket without a descriptor: acknowledgements would go through Execute")
	}
	ns.RunT(t, "ip", "mptcp", "endpoint", "add", "10.7.0.1", "id", "3", "subflow")
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(attrSubflows, 2)
	attrs, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	leave := func() {
		t.Helper()
		for _, m := range []struct {
			cmd   uint8
			data  []byte
			flags netlink.HeaderFlags
		}{{cmdGetLimits, nil, netlink.Request}, {cmdSetLimits, attrs, netlink.Request | netlink.Acknowledge}} {
			if _, err := c.c.c.Send(genetlink.Message{Header: genetlink.Header{Command: m.cmd, Version: familyVersion}, Data: m.data},
				c.c.family.ID, m.flags); err != nil {
				t.Fatal(err)
			}
		}
	}
	leave()
	err = c.AddEndpoint(Endpoint{ID: 3, Addr: netip.MustParseAddr("10.7.0.9"), Flags: FlagSubflow})
	// The oracle: iproute2's words for the same refusal ("Error: MSG.").
	_, ipErr := ns.Run("ip", "mptcp", "endpoint", "add", "10.7.0.9", "id", "3", "subflow")
	var want string
	if ipErr != nil {
		_, want, _ = strings.Cut(ipErr.Error(), "Error: ")
		want = strings.TrimSuffix(strings.TrimSpace(want), ".")
	}
	if want == "" {
		t.Fatalf("ip mptcp endpoint add of a duplicate id: %v; want a refusal with the kernel's message", ipErr)
	}
	var ke *Error
	if !errors.As(err, &ke) || ke.Message != want {
		t.Fatalf("duplicate id after answers left on the socket: err = %v, want the kernel's refusal %q", err, want)
	}
	five := uint32(5)
	if err := c.SetLimits(LimitsUpdate{Subflows: &five}); err != nil {
		t.Fatalf("SetLimits: %v", err)
	}
	if got := ns.RunT(t, "ip", "mptcp", "limits", "show"); !strings.Contains(got, "subflows 5") {
		t.Errorf("ip mptcp limits show = %q, want subflows 5", got)
	}
	// A request through Execute (a get) after answers left again: the
	// reply left says 5, the limits are 2 since.
	leave()
	if l, err := c.Limits(); err != nil || l.Subflows != 2 {
		t.Fatalf("Limits() after answers left on the socket = %+v, %v; want subflows 2", l, err)
	}
	if l, err := c.Limits(); err != nil || l.Subflows != 2 {
		t.Errorf("Limits() = %+v, %v after it; want subflows 2", l, err)
	}
}

// BenchmarkAck is one request answered by an acknowledgement (LIMITS set,
// as SUBFLOW_CREATE and the other commands that change state are), side by
// side: on the socket's descriptor with the client's buffers (what the
// Client does: Client.SetLimits), and through the netlink package's
// Execute (what it did).
//
//	go test -run '^$' -bench '^BenchmarkAck$' -benchmem ./pathmgr
func BenchmarkAck(b *testing.B) {
	ns := testbed.NetNST(b, "back")
	c, err := Dial(&Config{NetNS: ns.Name})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	encode := func(ae *attrEncoder) { ae.Uint32(attrSubflows, 4) }
	var ae attrEncoder
	encode(&ae)
	attrs := ae.b
	four := uint32(4)
	b.Run("fd", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := c.SetLimits(LimitsUpdate{Subflows: &four}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("execute", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.c.c.Execute(genetlink.Message{Header: genetlink.Header{Command: cmdSetLimits, Version: familyVersion}, Data: attrs},
				c.c.family.ID, netlink.Request|netlink.Acknowledge); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestIntegrationHeldCommands: in a process with one P, the per-connection
// commands are sent without giving up the P (client.send), and the others,
// which may walk every connection, are not; with more Ps none is. Each
// command reaches the kernel (refused here: no such connection) either
// way.
func TestIntegrationHeldCommands(t *testing.T) {
	_, c := dialIn(t, "held")
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	ep := Endpoint{ID: 5, Addr: netip.MustParseAddr("10.9.0.1")}
	remote := netip.MustParseAddrPort("10.9.0.2:80")
	cmds := []struct {
		name    string
		oneConn bool
		run     func() error
	}{
		{"subflow create", true, func() error { return c.CreateSubflow(0xdead, ep, remote) }},
		{"subflow destroy", true, func() error {
			return c.DestroySubflow(0xdead, Subflow{Local: netip.AddrPortFrom(ep.Addr, 1000), Remote: remote})
		}},
		{"announce", true, func() error { return c.Announce(0xdead, ep) }},
		{"remove", true, func() error { return c.Remove(0xdead, 5) }},
		{"limits set", false, func() error { return c.SetLimits(LimitsUpdate{Subflows: new(uint32)}) }},
		{"endpoint delete", false, func() error { return c.DeleteEndpoint(77, netip.Addr{}) }},
	}
	for _, procs := range []int{1, 2} {
		runtime.GOMAXPROCS(procs)
		for _, cmd := range cmds {
			c.c.held = !(cmd.oneConn && procs == 1) // the opposite of what is wanted
			err := cmd.run()
			if want := cmd.oneConn && procs == 1; c.c.held != want {
				t.Errorf("GOMAXPROCS=%d, %s (%v): sent holding the P %v, want %v", procs, cmd.name, err, c.c.held, want)
			}
		}
	}
}
