//go:build linux

package pathmgr

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

const testFamilyID = 0x1c

var testFamily = genetlink.Family{ID: testFamilyID, Version: familyVersion, Name: familyName,
	Groups: []genetlink.MulticastGroup{{ID: 7, Name: groupEvents}}}

// fakeClient returns a Client whose requests go to fn through a fake
// mptcp_pm family.
func fakeClient(t *testing.T, fn genltest.Func) *Client {
	t.Helper()
	c, err := initClient(genltest.Dial(genltest.ServeFamily(testFamily, fn)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrNest(attrs ...netlink.Attribute) netlink.Attribute {
	return netlink.Attribute{Type: attrAddr | netlink.Nested, Data: nltest.MustMarshalAttributes(attrs)}
}

func remoteNest(attrs ...netlink.Attribute) netlink.Attribute {
	return netlink.Attribute{Type: attrAddrRemote | netlink.Nested, Data: nltest.MustMarshalAttributes(attrs)}
}

func u8a(typ uint16, v uint8) netlink.Attribute {
	return netlink.Attribute{Length: 5, Type: typ, Data: []byte{v}}
}
func u16a(typ uint16, v uint16) netlink.Attribute {
	ae := netlink.NewAttributeEncoder()
	ae.Uint16(typ, v)
	b, _ := ae.Encode()
	return attrsOf(b)[0]
}
func u32a(typ uint16, v uint32) netlink.Attribute {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(typ, v)
	b, _ := ae.Encode()
	return attrsOf(b)[0]
}
func bytesA(typ uint16, b []byte) netlink.Attribute { return netlink.Attribute{Type: typ, Data: b} }

func attrsOf(b []byte) []netlink.Attribute {
	attrs, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		panic(err)
	}
	return attrs
}

// TestEncodeCommands checks the command number, header flags and attributes
// of every request against what the kernel's policy expects.
func TestEncodeCommands(t *testing.T) {
	five, two := uint32(5), uint32(2)
	tests := []struct {
		name  string
		call  func(c *Client) error
		cmd   uint8
		flags netlink.HeaderFlags
		attrs []netlink.Attribute
	}{
		{
			name: "endpoint add v4 with dev and flags",
			call: func(c *Client) error {
				return c.AddEndpoint(Endpoint{ID: 7, Addr: netip.MustParseAddr("10.0.2.2"), Flags: FlagSubflow | FlagBackup, IfIndex: 3})
			},
			cmd: cmdAddAddr, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{addrNest(u16a(addrAttrFamily, unix.AF_INET), bytesA(addrAttrAddr4, []byte{10, 0, 2, 2}),
				u8a(addrAttrID, 7), u32a(addrAttrFlags, flagSubflow|flagBackup), u32a(addrAttrIfIdx, 3))},
		},
		{
			name: "endpoint add v6 with port",
			call: func(c *Client) error {
				return c.AddEndpoint(Endpoint{Addr: netip.MustParseAddr("fd00::1"), Port: 8080, Flags: FlagSignal})
			},
			cmd: cmdAddAddr, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{addrNest(u16a(addrAttrFamily, unix.AF_INET6),
				bytesA(addrAttrAddr6, netip.MustParseAddr("fd00::1").AsSlice()), u16a(addrAttrPort, 8080), u32a(addrAttrFlags, flagSignal))},
		},
		{
			name: "endpoint delete", call: func(c *Client) error { return c.DeleteEndpoint(4, netip.Addr{}) },
			cmd: cmdDelAddr, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{addrNest(u8a(addrAttrID, 4))},
		},
		{
			name: "endpoint flush", call: func(c *Client) error { return c.FlushEndpoints() },
			cmd: cmdFlushAddrs, flags: netlink.Request | netlink.Acknowledge,
		},
		{
			name: "endpoint change by id", call: func(c *Client) error { return c.SetEndpointFlags(4, netip.Addr{}, FlagBackup) },
			cmd: cmdSetFlags, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{addrNest(u8a(addrAttrID, 4), u32a(addrAttrFlags, flagBackup))},
		},
		{
			name: "limits set one", call: func(c *Client) error { return c.SetLimits(LimitsUpdate{Subflows: &five}) },
			cmd: cmdSetLimits, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{u32a(attrSubflows, 5)},
		},
		{
			name: "limits set both", call: func(c *Client) error { return c.SetLimits(LimitsUpdate{Subflows: &five, AddAddrAccepted: &two}) },
			cmd: cmdSetLimits, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{u32a(attrRcvAddAddrs, 2), u32a(attrSubflows, 5)},
		},
		{
			name: "announce",
			call: func(c *Client) error {
				return c.Announce(0xdeadbeef, Endpoint{ID: 5, Addr: netip.MustParseAddr("10.0.2.2"), Port: 9000})
			},
			cmd: cmdAnnounce, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{u32a(attrToken, 0xdeadbeef), addrNest(u16a(addrAttrFamily, unix.AF_INET),
				bytesA(addrAttrAddr4, []byte{10, 0, 2, 2}), u8a(addrAttrID, 5), u16a(addrAttrPort, 9000), u32a(addrAttrFlags, flagSignal))},
		},
		{
			name: "remove", call: func(c *Client) error { return c.Remove(42, 5) },
			cmd: cmdRemove, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{u32a(attrToken, 42), u8a(attrLocID, 5)},
		},
		{
			name: "subflow create",
			call: func(c *Client) error {
				return c.CreateSubflow(42, Endpoint{ID: 2, Addr: netip.MustParseAddr("10.0.2.1"), IfIndex: 4}, netip.MustParseAddrPort("10.0.1.2:443"))
			},
			cmd: cmdSubflowCreate, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{u32a(attrToken, 42),
				addrNest(u16a(addrAttrFamily, unix.AF_INET), bytesA(addrAttrAddr4, []byte{10, 0, 2, 1}), u8a(addrAttrID, 2), u32a(addrAttrIfIdx, 4)),
				remoteNest(u16a(addrAttrFamily, unix.AF_INET), bytesA(addrAttrAddr4, []byte{10, 0, 1, 2}), u16a(addrAttrPort, 443))},
		},
		{
			name: "subflow destroy",
			call: func(c *Client) error {
				return c.DestroySubflow(42, Subflow{Local: netip.MustParseAddrPort("10.0.2.1:5000"), Remote: netip.MustParseAddrPort("10.0.1.2:443")})
			},
			cmd: cmdSubflowDestroy, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{u32a(attrToken, 42),
				addrNest(u16a(addrAttrFamily, unix.AF_INET), bytesA(addrAttrAddr4, []byte{10, 0, 2, 1}), u16a(addrAttrPort, 5000)),
				remoteNest(u16a(addrAttrFamily, unix.AF_INET), bytesA(addrAttrAddr4, []byte{10, 0, 1, 2}), u16a(addrAttrPort, 443))},
		},
		{
			name: "subflow set backup",
			call: func(c *Client) error {
				return c.SetSubflowBackup(42, Subflow{Local: netip.MustParseAddrPort("10.0.2.1:0"), Remote: netip.MustParseAddrPort("10.0.1.2:443")}, true)
			},
			cmd: cmdSetFlags, flags: netlink.Request | netlink.Acknowledge,
			attrs: []netlink.Attribute{u32a(attrToken, 42),
				addrNest(u16a(addrAttrFamily, unix.AF_INET), bytesA(addrAttrAddr4, []byte{10, 0, 2, 1}), u32a(addrAttrFlags, flagBackup)),
				remoteNest(u16a(addrAttrFamily, unix.AF_INET), bytesA(addrAttrAddr4, []byte{10, 0, 1, 2}), u16a(addrAttrPort, 443))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			c := fakeClient(t, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
				if nreq.Header.Type == 0 {
					// genltest polls again while the client waits for its
					// acknowledgement; that is not a request.
					return nil, nil
				}
				if called {
					t.Error("more than one request sent")
				}
				called = true
				if greq.Header.Command != tt.cmd || greq.Header.Version != familyVersion {
					t.Errorf("header = %+v, want command %d version %d", greq.Header, tt.cmd, familyVersion)
				}
				if nreq.Header.Flags != tt.flags {
					t.Errorf("flags = %v, want %v", nreq.Header.Flags, tt.flags)
				}
				got := attrsOf(greq.Data)
				if diff := cmp.Diff(normalize(tt.attrs), normalize(got)); diff != "" {
					t.Errorf("attributes (-want +got):\n%s", diff)
				}
				return nil, nil
			})
			if err := tt.call(c); err != nil {
				t.Fatal(err)
			}
			if !called {
				t.Fatal("no request sent")
			}
		})
	}
}

// normalize makes nested attributes comparable (decoded children).
func normalize(attrs []netlink.Attribute) []any {
	var out []any
	for _, a := range attrs {
		if a.Type&netlink.Nested != 0 {
			out = append(out, struct {
				Type     uint16
				Children []any
			}{a.Type &^ netlink.Nested, normalize(attrsOf(a.Data))})
			continue
		}
		a.Length = 0 // derived from Data; literals leave it out
		out = append(out, a)
	}
	return out
}

func TestDecodeEndpointsAndLimits(t *testing.T) {
	reply := func(attrs ...netlink.Attribute) genetlink.Message {
		return genetlink.Message{Header: genetlink.Header{Command: cmdGetAddr}, Data: nltest.MustMarshalAttributes(attrs)}
	}
	c := fakeClient(t, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		switch greq.Header.Command {
		case cmdGetAddr:
			if nreq.Header.Flags&netlink.Dump == 0 {
				t.Errorf("endpoint dump without the dump flag: %v", nreq.Header.Flags)
			}
			return []genetlink.Message{
				reply(addrNest(u16a(addrAttrFamily, unix.AF_INET), u8a(addrAttrID, 1), bytesA(addrAttrAddr4, []byte{10, 0, 2, 2}),
					u32a(addrAttrFlags, flagSubflow|flagBackup), u32a(addrAttrIfIdx, 3))),
				reply(addrNest(u16a(addrAttrFamily, unix.AF_INET6), u8a(addrAttrID, 2), bytesA(addrAttrAddr6, netip.MustParseAddr("fd00::2").AsSlice()),
					u16a(addrAttrPort, 1234), u32a(addrAttrFlags, flagSignal|flagImplicit|1<<20))),
			}, nil
		case cmdGetLimits:
			return []genetlink.Message{{Data: nltest.MustMarshalAttributes([]netlink.Attribute{u32a(attrRcvAddAddrs, 3), u32a(attrSubflows, 5)})}}, nil
		}
		return nil, genltest.Error(int(unix.EOPNOTSUPP))
	})
	eps, err := c.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{
		{ID: 1, Addr: netip.MustParseAddr("10.0.2.2"), Flags: FlagSubflow | FlagBackup, IfIndex: 3},
		{ID: 2, Addr: netip.MustParseAddr("fd00::2"), Port: 1234, Flags: FlagSignal | FlagImplicit | 1<<20},
	}
	if diff := cmp.Diff(want, eps, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Endpoints (-want +got):\n%s", diff)
	}
	if got := eps[1].Flags.Strings(); !cmp.Equal(got, []string{"signal", "implicit", "0x100000"}) {
		t.Errorf("flag names = %v", got)
	}
	l, err := c.Limits()
	if err != nil {
		t.Fatal(err)
	}
	if l != (Limits{Subflows: 5, AddAddrAccepted: 3}) {
		t.Errorf("Limits = %+v", l)
	}
	err = c.FlushEndpoints()
	if !errors.Is(err, ErrNotSupported) {
		t.Errorf("EOPNOTSUPP: err = %v, want ErrNotSupported", err)
	}
}

func TestErrorMapping(t *testing.T) {
	for _, tt := range []struct {
		errno  unix.Errno
		target error
	}{
		{unix.ENOENT, os.ErrNotExist},
		{unix.EPERM, os.ErrPermission},
		{unix.EACCES, os.ErrPermission},
		{unix.EOPNOTSUPP, ErrNotSupported},
	} {
		err := opError("subflow create", &netlink.OpError{Op: "receive", Err: tt.errno, Message: "invalid token"})
		if !errors.Is(err, tt.target) || !errors.Is(err, tt.errno) {
			t.Errorf("%v: errors.Is(%v) false", tt.errno, tt.target)
		}
		var e *Error
		if !errors.As(err, &e) || e.Message != "invalid token" {
			t.Errorf("%v: extack message lost: %v", tt.errno, err)
		}
		if got := err.Error(); got != "subflow create: invalid token ("+tt.errno.Error()+")" {
			t.Errorf("Error() = %q", got)
		}
	}
	if errors.Is(opError("x", &netlink.OpError{Err: unix.EINVAL}), os.ErrNotExist) {
		t.Error("EINVAL matched os.ErrNotExist")
	}
}

func TestInputValidation(t *testing.T) {
	c := fakeClient(t, func(_ genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if nreq.Header.Type == 0 {
			return nil, nil
		}
		t.Error("invalid input reached the kernel")
		return nil, nil
	})
	nine := uint32(9)
	v4, v6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	for name, err := range map[string]error{
		"no address":        c.AddEndpoint(Endpoint{ID: 1}),
		"delete id 0":       c.DeleteEndpoint(0, netip.Addr{}),
		"limit too big":     c.SetLimits(LimitsUpdate{Subflows: &nine}),
		"announce id 0":     c.Announce(1, Endpoint{Addr: v4}),
		"families mismatch": c.CreateSubflow(1, Endpoint{Addr: v4}, netip.AddrPortFrom(v6, 80)),
		"no remote port":    c.CreateSubflow(1, Endpoint{Addr: v4}, netip.AddrPortFrom(v4, 0)),
		"destroy no port":   c.DestroySubflow(1, Subflow{Local: netip.AddrPortFrom(v4, 0), Remote: netip.AddrPortFrom(v4, 80)}),
		"change nothing":    c.SetEndpointFlags(0, netip.Addr{}, FlagBackup),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestInitClientNoFamily(t *testing.T) {
	conn := genltest.Dial(func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, genltest.Error(int(unix.ENOENT))
	})
	_, err := initClient(conn)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want os.ErrNotExist", err)
	}
	if want := "MPTCP path manager (generic netlink family mptcp_pm) not available"; !contains(err.Error(), want) {
		t.Errorf("err = %q, want it to say %q", err, want)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub)))
}

func TestConnectionAddrs(t *testing.T) {
	defer func(f func() string) { kernelRelease = f }(kernelRelease)
	kernelRelease = func() string { return "6.18.0-gigapath" }
	c := fakeClient(t, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if greq.Header.Command != cmdGetAddr || nreq.Header.Flags&netlink.Dump == 0 {
			t.Errorf("request %+v flags %v, want a GET_ADDR dump", greq.Header, nreq.Header.Flags)
		}
		if diff := cmp.Diff(normalize([]netlink.Attribute{u32a(attrToken, 0xcf96a37f)}), normalize(attrsOf(greq.Data))); diff != "" {
			t.Errorf("attributes (-want +got):\n%s", diff)
		}
		return []genetlink.Message{{Data: nltest.MustMarshalAttributes([]netlink.Attribute{
			addrNest(u16a(addrAttrFamily, unix.AF_INET), u8a(addrAttrID, 5), bytesA(addrAttrAddr4, []byte{10, 9, 2, 3}), u32a(addrAttrFlags, flagSignal), u32a(addrAttrIfIdx, 4)),
		})}}, nil
	})
	eps, err := c.ConnectionAddrs(0xcf96a37f)
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{{ID: 5, Addr: netip.MustParseAddr("10.9.2.3"), Flags: FlagSignal, IfIndex: 4}}
	if diff := cmp.Diff(want, eps, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("ConnectionAddrs (-want +got):\n%s", diff)
	}

	kernelRelease = func() string { return "6.6.30-amd64" }
	_, err = c.ConnectionAddrs(1)
	if !errors.Is(err, ErrNotSupported) || !contains(err.Error(), "6.7") || !contains(err.Error(), "6.6.30-amd64") {
		t.Errorf("on 6.6: err = %v, want ErrNotSupported naming 6.7 and the release", err)
	}
}

func TestKernelAtLeast(t *testing.T) {
	defer func(f func() string) { kernelRelease = f }(kernelRelease)
	for rel, want := range map[string]bool{"6.7.0": true, "6.18.1-x": true, "7.0": true, "6.6.99": false, "5.19.0": false, "garbage": true} {
		kernelRelease = func() string { return rel }
		if _, got := kernelAtLeast(6, 7); got != want {
			t.Errorf("%s >= 6.7: %v, want %v", rel, got, want)
		}
	}
}

func TestErrorHintsWithoutExtack(t *testing.T) {
	for errno, want := range map[unix.Errno]string{
		unix.EPERM:      "endpoint add: needs CAP_NET_ADMIN in the network namespace (operation not permitted)",
		unix.EOPNOTSUPP: "endpoint add: command not supported by this kernel's MPTCP path manager (operation not supported)",
		unix.EINVAL:     "endpoint add: invalid argument",
	} {
		if got := opError("endpoint add", &netlink.OpError{Op: "receive", Err: errno}).Error(); got != want {
			t.Errorf("%v: %q, want %q", errno, got, want)
		}
	}
}

// TestEndpointGetAndMoreEncodings covers the requests not in
// TestEncodeCommands: get by id (and its reply), delete of id 0 with its
// address, change by address, an IPv6 announce with interface.
func TestEndpointGetAndMoreEncodings(t *testing.T) {
	type req struct {
		cmd   uint8
		flags netlink.HeaderFlags
		attrs []any
	}
	var got []req
	c := fakeClient(t, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if nreq.Header.Type == 0 {
			return nil, nil
		}
		got = append(got, req{greq.Header.Command, nreq.Header.Flags, normalize(attrsOf(greq.Data))})
		if greq.Header.Command == cmdGetAddr {
			return []genetlink.Message{{Data: nltest.MustMarshalAttributes([]netlink.Attribute{
				addrNest(u16a(addrAttrFamily, unix.AF_INET), u8a(addrAttrID, 12), bytesA(addrAttrAddr4, []byte{10, 7, 0, 2}), u32a(addrAttrFlags, flagSubflow|flagFullmesh)),
			})}}, nil
		}
		return nil, nil
	})
	e, err := c.Endpoint(12)
	if err != nil || e != (Endpoint{ID: 12, Addr: netip.MustParseAddr("10.7.0.2"), Flags: FlagSubflow | FlagFullmesh}) {
		t.Errorf("Endpoint(12) = %+v, %v", e, err)
	}
	v6 := netip.MustParseAddr("fd00::9")
	for _, err := range []error{
		c.DeleteEndpoint(0, netip.MustParseAddr("10.0.1.1")),
		c.SetEndpointFlags(0, v6, FlagFullmesh),
		c.Announce(7, Endpoint{ID: 3, Addr: v6, IfIndex: 9}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	ack := netlink.Request | netlink.Acknowledge
	want := []req{
		{cmdGetAddr, netlink.Request, normalize([]netlink.Attribute{addrNest(u8a(addrAttrID, 12))})},
		{cmdDelAddr, ack, normalize([]netlink.Attribute{addrNest(u16a(addrAttrFamily, unix.AF_INET), bytesA(addrAttrAddr4, []byte{10, 0, 1, 1}))})},
		{cmdSetFlags, ack, normalize([]netlink.Attribute{addrNest(u16a(addrAttrFamily, unix.AF_INET6), bytesA(addrAttrAddr6, v6.AsSlice()), u32a(addrAttrFlags, flagFullmesh))})},
		{cmdAnnounce, ack, normalize([]netlink.Attribute{u32a(attrToken, 7), addrNest(u16a(addrAttrFamily, unix.AF_INET6), bytesA(addrAttrAddr6, v6.AsSlice()),
			u8a(addrAttrID, 3), u32a(addrAttrFlags, flagSignal), u32a(addrAttrIfIdx, 9))})},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(req{})); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestClientConcurrent: one Client used from many goroutines (run with
// -race); every caller gets its own reply.
func TestClientConcurrent(t *testing.T) {
	c := fakeClient(t, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if nreq.Header.Type == 0 {
			return nil, nil
		}
		ad, _ := netlink.NewAttributeDecoder(greq.Data)
		var id uint8
		for ad.Next() {
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if nad.Type() == addrAttrID {
						id = nad.Uint8()
					}
				}
				return nil
			})
		}
		return []genetlink.Message{{Data: nltest.MustMarshalAttributes([]netlink.Attribute{
			addrNest(u16a(addrAttrFamily, unix.AF_INET), u8a(addrAttrID, id), bytesA(addrAttrAddr4, []byte{10, 0, 0, id})),
		})}}, nil
	})
	errs := make(chan error, 64)
	for i := 1; i <= 64; i++ {
		go func(id uint8) {
			e, err := c.Endpoint(id)
			if err == nil && (e.ID != id || e.Addr != netip.AddrFrom4([4]byte{10, 0, 0, id})) {
				err = errors.New("reply for another request: " + e.Addr.String())
			}
			errs <- err
		}(uint8(i))
	}
	for i := 0; i < 64; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// FuzzParseEndpoints feeds arbitrary reply payloads to the endpoint
// decoder (GET_ADDR replies, ConnectionAddrs): it must never panic, and any
// endpoint it returns must print and encode as JSON.
func FuzzParseEndpoints(f *testing.F) {
	f.Add(nltest.MustMarshalAttributes([]netlink.Attribute{
		addrNest(u16a(addrAttrFamily, unix.AF_INET), u8a(addrAttrID, 7), bytesA(addrAttrAddr4, []byte{10, 0, 2, 2}),
			u16a(addrAttrPort, 10100), u32a(addrAttrFlags, flagSubflow|flagBackup), u32a(addrAttrIfIdx, 3)),
	}))
	f.Add(nltest.MustMarshalAttributes([]netlink.Attribute{
		addrNest(u16a(addrAttrFamily, unix.AF_INET6), bytesA(addrAttrAddr6, netip.MustParseAddr("fd00::2").AsSlice())),
		u32a(attrSubflows, 4),
	}))
	f.Add([]byte{4, 0, 1, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		eps, err := parseEndpoints([]genetlink.Message{{Data: data}})
		if err != nil {
			return
		}
		for _, e := range eps {
			_ = e.Flags.String()
			if _, err := json.Marshal(e); err != nil {
				t.Fatalf("endpoint %+v does not marshal: %v", e, err)
			}
		}
	})
}

func TestEndpointJSONRoundTrip(t *testing.T) {
	in := Endpoint{ID: 7, Addr: netip.MustParseAddr("10.0.2.2"), Port: 10100, Flags: FlagSignal | FlagBackup | 1<<20, IfIndex: 3}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":7,"address":"10.0.2.2","port":10100,"flags":["signal","backup","0x100000"],"if_idx":3}`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	var out Endpoint
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("round trip = %+v, %v; want %+v", out, err, in)
	}
	var f EndpointFlags
	if err := json.Unmarshal([]byte(`["subflow","nosuch"]`), &f); err == nil || !contains(err.Error(), `"nosuch"`) || !contains(err.Error(), "laminar") {
		t.Errorf("unknown flag: err = %v, want it named with the known ones", err)
	}
}
