//go:build linux

package pathmgr

import (
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// diagMsg builds an inet_diag_msg for a subflow with tcp_info and the
// MPTCP ULP nest, as tcp_diag and mptcp's subflow_get_info put them.
func diagMsg(t *testing.T, local, remote netip.AddrPort, ifindex uint32, ti *unix.TCPInfo, ulp func(*netlink.AttributeEncoder)) []byte {
	t.Helper()
	b := make([]byte, sizeofInetDiagMsg)
	b[0] = unix.AF_INET
	if local.Addr().Is6() {
		b[0] = unix.AF_INET6
	}
	b[1] = tcpEstablished
	binary.BigEndian.PutUint16(b[4:], local.Port())
	binary.BigEndian.PutUint16(b[6:], remote.Port())
	copy(b[8:24], local.Addr().AsSlice())
	copy(b[24:40], remote.Addr().AsSlice())
	binary.NativeEndian.PutUint32(b[40:], ifindex)
	binary.NativeEndian.PutUint32(b[44:], 0x89abcdef) // idiag_cookie, low half
	binary.NativeEndian.PutUint32(b[48:], 0x01234567)
	binary.NativeEndian.PutUint32(b[68:], 4242)
	ae := netlink.NewAttributeEncoder()
	if ti != nil {
		ae.Bytes(inetDiagInfo, unsafe.Slice((*byte)(unsafe.Pointer(ti)), unsafe.Sizeof(*ti)))
	}
	if ulp != nil {
		ae.Nested(inetDiagULPInfo, func(n *netlink.AttributeEncoder) error {
			n.String(inetULPInfoName, "mptcp")
			n.Nested(inetULPInfoMPTCP, func(m *netlink.AttributeEncoder) error { ulp(m); return nil })
			return nil
		})
	}
	attrs, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append(b, attrs...)
}

func TestDecodeDiagMsgSubflow(t *testing.T) {
	l, r := netip.MustParseAddrPort("10.0.2.1:40001"), netip.MustParseAddrPort("10.0.1.2:80")
	ti := &unix.TCPInfo{Rtt: 1500, Rttvar: 200, Total_retrans: 3, Bytes_acked: 1000, Bytes_received: 2000, Delivery_rate: 12345, Snd_mss: 1448,
		Rcv_rtt: 2500, Data_segs_in: 700, Rcv_ooopack: 21}
	b := diagMsg(t, l, r, 0, ti, func(m *netlink.AttributeEncoder) {
		m.Uint32(mptcpSubflowAttrTokenRem, 0xaaaa)
		m.Uint32(mptcpSubflowAttrTokenLoc, 0xbbbb)
		m.Uint32(mptcpSubflowAttrFlags, mptcpSubflowFlagJoinLoc|mptcpSubflowFlagBkupLoc|mptcpSubflowFlagFullyEstablished)
		m.Uint8(mptcpSubflowAttrIDRem, 0)
		m.Uint8(mptcpSubflowAttrIDLoc, 2)
	})
	s, err := decodeDiagMsg(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.local != l || s.remote != r || s.ulp != "mptcp" || s.sf.tokenLoc != 0xbbbb || s.sf.tokenRem != 0xaaaa || s.sf.idLoc != 2 || s.inode != 4242 || s.cookie != 0x0123456789abcdef {
		t.Fatalf("decodeDiagMsg = %+v", s)
	}
	msk := diagSock{local: netip.MustParseAddrPort("10.0.1.1:40000"), remote: r, state: tcpEstablished,
		info: mptcpInfoBytes(0xbbbb)}
	ifs := ifaceMap{byAddr: map[netip.Addr]int{l.Addr(): 3}, names: map[int]string{3: "lte0"}}
	conns := groupConnections([]diagSock{msk}, []diagSock{s, {sf: subflowULP{tokenLoc: 0xcccc}}}, ifs)
	if len(conns) != 1 || conns[0].Token != 0xbbbb || len(conns[0].Subflows) != 1 {
		t.Fatalf("groupConnections = %+v, want one connection 0xbbbb with one subflow (the other belongs to no connection)", conns)
	}
	sf := conns[0].Subflows[0]
	if sf.IfName != "lte0" || sf.IfIndex != 3 || !sf.Backup || sf.BackupRemote || !sf.Join() || sf.RTT.Microseconds() != 1500 ||
		sf.Retrans != 3 || sf.BytesAcked != 1000 || sf.BytesReceived != 2000 || sf.DeliveryRate != 12345 || sf.LocalID != 2 ||
		sf.RcvRTT != 2500*time.Microsecond || sf.DataSegsIn != 700 || sf.RcvOOOPack != 21 {
		t.Errorf("subflow = %+v", sf)
	}
	b2, err := json.Marshal(conns[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b2, &m)
	for _, k := range []string{"token", "local", "remote", "state", "subflows", "info"} {
		if _, ok := m[k]; !ok {
			t.Errorf("connection JSON %s lacks %q", b2, k)
		}
	}
	sfj := m["subflows"].([]any)[0].(map[string]any)
	for k, v := range map[string]any{"local": "10.0.2.1:40001", "dev": "lte0", "backup": true, "rtt_us": 1500.0, "bytes_acked": 1000.0, "loc_id": 2.0,
		"rcv_rtt_us": 2500.0, "data_segs_in": 700.0, "rcv_ooopack": 21.0} {
		if sfj[k] != v {
			t.Errorf("subflow JSON %q = %v, want %v", k, sfj[k], v)
		}
	}
}

func mptcpInfoBytes(token uint32) []byte {
	b := make([]byte, sizeofMPTCPInfo)
	b[0], b[3] = 1, 4 // subflows, subflows_max
	binary.NativeEndian.PutUint32(b[12:], token)
	binary.NativeEndian.PutUint64(b[72:], 99) // bytes_acked
	b[80] = 2                                 // subflows_total
	return b
}

func TestDecodeMPTCPInfoOffsetsAndShortKernels(t *testing.T) {
	i := decodeMPTCPInfo(mptcpInfoBytes(0x1234))
	if i.Subflows != 1 || i.SubflowsMax != 4 || i.Token != 0x1234 || i.BytesAcked != 99 || i.SubflowsTotal != 2 {
		t.Errorf("decodeMPTCPInfo = %+v", i)
	}
	// A 5.x kernel sends only the first 48 bytes.
	i = decodeMPTCPInfo(mptcpInfoBytes(0x1234)[:48])
	if i.Token != 0x1234 || i.BytesAcked != 0 {
		t.Errorf("short mptcp_info = %+v", i)
	}
}

func TestDecodeDiagMsgMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"short":          make([]byte, 10),
		"unknown family": append([]byte{99}, make([]byte, sizeofInetDiagMsg-1)...),
	} {
		if _, err := decodeDiagMsg(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// Garbage attributes must not panic.
	b := make([]byte, sizeofInetDiagMsg+7)
	b[0] = unix.AF_INET
	b[sizeofInetDiagMsg] = 200
	decodeDiagMsg(b)
}

func TestEncodeDiagReqMPTCP(t *testing.T) {
	b := encodeDiagReq(unix.AF_INET6, ipprotoMPTCP, 1<<tcpEstablished)
	if len(b) != sizeofInetDiagReqV2+8 || b[0] != unix.AF_INET6 || b[1] != 0 || b[2] != 1<<(inetDiagInfo-1) {
		t.Fatalf("request header % x", b[:8])
	}
	ad, err := netlink.NewAttributeDecoder(b[sizeofInetDiagReqV2:])
	if err != nil || !ad.Next() || ad.Type() != inetDiagReqProtocol || ad.Uint32() != 262 {
		t.Errorf("INET_DIAG_REQ_PROTOCOL attribute missing or wrong: % x", b[sizeofInetDiagReqV2:])
	}
	if b := encodeDiagReq(unix.AF_INET, unix.IPPROTO_TCP, 0); len(b) != sizeofInetDiagReqV2 || b[1] != unix.IPPROTO_TCP {
		t.Errorf("TCP request = % x", b)
	}
}

// tcp_info grew over time: a kernel older than a field sends a shorter
// struct, and the field must decode as 0, not as whatever follows.
func TestDecodeTCPInfoShortKernels(t *testing.T) {
	full := unix.TCPInfo{Rtt: 1000, Rcv_rtt: 2500, Data_segs_in: 700, Rcv_ooopack: 21, Snd_wnd: 9}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&full)), unsafe.Sizeof(full))
	for _, tc := range []struct {
		name                string
		size                uintptr
		rcvRTT, segs, oooPk uint32
	}{
		{"full", unsafe.Sizeof(full), 2500, 700, 21},
		// 4.6 to 5.3: ends before tcpi_rcv_ooopack (added in 5.4).
		{"before rcv_ooopack", unsafe.Offsetof(full.Rcv_ooopack), 2500, 700, 0},
		// before 4.6: ends before tcpi_data_segs_in.
		{"before data_segs_in", unsafe.Offsetof(full.Data_segs_in), 2500, 0, 0},
	} {
		ti := decodeTCPInfo(raw[:tc.size])
		if ti.Rcv_rtt != tc.rcvRTT || ti.Data_segs_in != tc.segs || ti.Rcv_ooopack != tc.oooPk || ti.Rtt != 1000 {
			t.Errorf("%s (%d bytes): rcv_rtt %d data_segs_in %d rcv_ooopack %d rtt %d; want %d %d %d 1000",
				tc.name, tc.size, ti.Rcv_rtt, ti.Data_segs_in, ti.Rcv_ooopack, ti.Rtt, tc.rcvRTT, tc.segs, tc.oooPk)
		}
		if tc.size < unsafe.Sizeof(full) && ti.Snd_wnd != 0 {
			t.Errorf("%s: snd_wnd %d past the end, want 0", tc.name, ti.Snd_wnd)
		}
	}
	// A newer kernel's longer struct is cut, not an error.
	longer := append(append([]byte{}, raw...), 1, 2, 3, 4, 5, 6, 7, 8)
	if ti := decodeTCPInfo(longer); ti.Rcv_ooopack != 21 {
		t.Errorf("longer tcp_info: rcv_ooopack %d, want 21", ti.Rcv_ooopack)
	}
}

// The grouping of a listing: connections sorted by token (a listener,
// token 0, first), each with its own subflows in local-id order however
// the two dumps interleaved them, each Info its own, a connection
// without subflows with an empty (not nil) list, and no list that an
// append can overflow into the next connection's.
func TestGroupConnectionsManyInterleaved(t *testing.T) {
	r := netip.MustParseAddrPort("10.0.1.2:80")
	var msks, sfs []diagSock
	for _, tok := range []uint32{30, 10, 20} {
		l := netip.AddrPortFrom(netip.MustParseAddr("10.0.2.1"), uint16(tok))
		msks = append(msks, diagSock{local: l, remote: r, state: tcpEstablished, info: mptcpInfoBytes(tok)})
	}
	// Two SO_REUSEPORT listeners: the same address, told apart by inode.
	msks = append(msks, diagSock{local: netip.MustParseAddrPort("0.0.0.0:80"), state: tcpListen, inode: 9},
		diagSock{local: netip.MustParseAddrPort("0.0.0.0:80"), state: tcpListen, inode: 3})
	// Subflows of 30 and 10, interleaved, ids out of order; 20 has none.
	for _, s := range []struct {
		tok uint32
		id  uint8
	}{{30, 2}, {10, 1}, {30, 0}, {10, 0}, {30, 1}} {
		l := netip.AddrPortFrom(netip.MustParseAddr("10.0.3.1"), uint16(1000*int(s.tok)+int(s.id)))
		sfs = append(sfs, diagSock{local: l, remote: r, state: tcpEstablished, sf: subflowULP{tokenLoc: s.tok, idLoc: s.id}})
	}
	conns := groupConnections(msks, sfs, ifaceMap{})
	var toks []uint32
	for _, c := range conns {
		toks = append(toks, c.Token)
	}
	if want := []uint32{0, 0, 10, 20, 30}; !slices.Equal(toks, want) {
		t.Fatalf("tokens %v, want %v", toks, want)
	}
	if conns[0].Inode != 3 || conns[1].Inode != 9 {
		t.Errorf("listeners sharing an address in inode order %d, %d; want 3, 9", conns[0].Inode, conns[1].Inode)
	}
	conns = conns[1:] // one listener from here on
	ids := func(c Connection) (out []uint8) {
		for _, s := range c.Subflows {
			if s.TokenLocal != c.Token {
				t.Errorf("connection %d has a subflow of %d", c.Token, s.TokenLocal)
			}
			out = append(out, s.LocalID)
		}
		return out
	}
	if got := ids(conns[1]); !slices.Equal(got, []uint8{0, 1}) {
		t.Errorf("connection 10: subflow ids %v, want [0 1]", got)
	}
	if got := ids(conns[3]); !slices.Equal(got, []uint8{0, 1, 2}) {
		t.Errorf("connection 30: subflow ids %v, want [0 1 2]", got)
	}
	if conns[2].Subflows == nil || len(conns[2].Subflows) != 0 || conns[0].Subflows == nil {
		t.Errorf("connections without subflows: %#v and %#v, want empty lists", conns[2].Subflows, conns[0].Subflows)
	}
	for _, c := range conns[1:] {
		if c.Info == nil || c.Info.Token != c.Token {
			t.Errorf("connection %d has info %+v", c.Token, c.Info)
		}
	}
	if conns[0].Info != nil {
		t.Errorf("the listener has info %+v", conns[0].Info)
	}
	// An append to 10's subflows must not write over 30's first one.
	first30 := conns[3].Subflows[0]
	_ = append(conns[1].Subflows, SubflowInfo{LocalID: 99})
	if conns[3].Subflows[0] != first30 {
		t.Error("appending to one connection's subflows changed the next one's")
	}
}
