//go:build linux

package pathmgr

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Inventory lists the live MPTCP connections of one network namespace
// from sock_diag (NETLINK_SOCK_DIAG), the interface `ss -M` uses. It
// holds two sock_diag sockets (the connections and the subflows are
// dumped at the same time, one on each) and an rtnetlink socket (to name
// the interfaces subflows use) in that namespace. It is safe for
// concurrent use.
type Inventory struct {
	mu        sync.Mutex
	msks, sfs *differ // under mu
	rt        *rtnetlink.Conn
	// lastConns and lastSubflows are how many the last listing had (the
	// next one's initial capacities).
	lastConns, lastSubflows int
}

// differ is one sock_diag socket and the buffer its dumps are read into.
type differ struct {
	conn *netlink.Conn
	rc   syscall.RawConn // conn's descriptor, read directly (dump)
	buf  []byte          // one datagram of a dump
	sock diagSock        // the socket being handed to a dump's fn
}

// dumpInParallel: the connections and the subflows are read at the same
// time (a variable for BenchmarkInventoryDump, which compares the two).
var dumpInParallel = true

func openDiffer(nlcfg *netlink.Config) (*differ, error) {
	conn, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nlcfg)
	if err != nil {
		return nil, fmt.Errorf("pathmgr: inventory: open sock_diag socket: %w", err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("pathmgr: inventory: sock_diag socket: %w", err)
	}
	return &differ{conn: conn, rc: rc, buf: make([]byte, dumpBufferBytes)}, nil
}

// OpenInventory opens an Inventory in the namespace cfg names (nil: the
// current one). Tokens of subflows are only visible with CAP_NET_ADMIN:
// without it, subflows cannot be matched to their connections.
func OpenInventory(cfg *Config) (*Inventory, error) {
	ns, err := cfg.netnsFile()
	if err != nil {
		return nil, err
	}
	nlcfg := &netlink.Config{}
	if ns != nil {
		defer ns.Close()
		nlcfg.NetNS = int(ns.Fd())
	}
	msks, err := openDiffer(nlcfg)
	if err != nil {
		return nil, err
	}
	sfs, err := openDiffer(nlcfg)
	if err != nil {
		msks.conn.Close()
		return nil, err
	}
	rt, err := rtnetlink.Dial(nlcfg)
	if err != nil {
		msks.conn.Close()
		sfs.conn.Close()
		return nil, fmt.Errorf("pathmgr: inventory: open rtnetlink socket: %w", err)
	}
	return &Inventory{msks: msks, sfs: sfs, rt: rt}, nil
}

// Close releases the sockets.
func (inv *Inventory) Close() error {
	return errors.Join(inv.msks.conn.Close(), inv.sfs.conn.Close(), inv.rt.Close())
}

// Connections lists the namespace's MPTCP connections (IPv4 and IPv6),
// each with its subflows, sorted by token. It is a snapshot: connections
// come and go while it runs.
func Connections(cfg *Config, opts ListOptions) ([]Connection, error) {
	inv, err := OpenInventory(cfg)
	if err != nil {
		return nil, err
	}
	defer inv.Close()
	return inv.Connections(opts)
}

// Connections lists the MPTCP connections, see the package-level Connections.
func (inv *Inventory) Connections(opts ListOptions) ([]Connection, error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	states := uint32(0xffffffff) &^ (1<<tcpTimeWait | 1<<tcpNewSynRecv | 1<<tcpListen)
	mstates := states
	if opts.ListenersToo {
		mstates |= 1 << tcpListen
	}
	ifs, err := inv.interfaces()
	if err != nil {
		return nil, err
	}
	// The connections on one socket while the subflows are read on the
	// other (a dump's time is mostly the kernel filling each socket's
	// info, which two CPUs do at once); then each subflow goes under its
	// connection.
	b := newConnBuilder(ifs, inv.lastConns, inv.lastSubflows)
	dumpConns := func() error {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			if err := inv.msks.dump(fam, ipprotoMPTCP, mstates, b.addConn); err != nil {
				return err
			}
		}
		return nil
	}
	dumpSubflows := func(d *differ) error {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			if err := d.dump(fam, unix.IPPROTO_TCP, states, b.addSubflow); err != nil {
				return err
			}
		}
		return nil
	}
	if dumpInParallel {
		sfErr := make(chan error, 1)
		go func() { sfErr <- dumpSubflows(inv.sfs) }()
		err = dumpConns()
		// Both dumps end before the sockets are used again (a dump
		// left unread would be read by the next listing).
		if err2 := <-sfErr; err == nil {
			err = err2
		}
	} else if err = dumpConns(); err == nil {
		err = dumpSubflows(inv.msks)
	}
	if err != nil {
		return nil, err
	}
	conns := b.done()
	inv.lastConns, inv.lastSubflows = len(conns), len(b.sfs)
	return conns, nil
}

// dumpBufferBytes holds any datagram of a dump: the kernel sizes them by
// the receive buffers it has seen, at most 32 KiB.
const dumpBufferBytes = 64 << 10

// dump sends one inet_diag_req_v2 dump request and hands each socket of
// the reply (TCP ones only when they are MPTCP subflows) to fn, decoded
// datagram by datagram as they arrive in one reused buffer: a dump of
// tens of thousands of sockets is never held whole, and a socket costs no
// allocation of its own. The socket's info refers to that buffer: fn
// must not keep it.
func (d *differ) dump(family uint8, proto int, states uint32, fn func(*diagSock)) error {
	what := "TCP"
	if proto == ipprotoMPTCP {
		what = "MPTCP"
	}
	fail := func(err error) error {
		if proto == ipprotoMPTCP && (errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist)) {
			return fmt.Errorf("pathmgr: inventory: sock_diag has no MPTCP support (kernel without CONFIG_INET_MPTCP_DIAG, or mptcp_diag not loaded): %w", ErrNotSupported)
		}
		return fmt.Errorf("pathmgr: inventory: dump %s sockets (family %d): %w", what, family, err)
	}
	req, err := d.conn.Send(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.SOCK_DIAG_BY_FAMILY), Flags: netlink.Request | netlink.Dump},
		Data:   encodeDiagReq(family, proto, states),
	})
	if err != nil {
		return fail(err)
	}
	seq := req.Header.Sequence
	for {
		n, err := d.recv()
		if err != nil {
			return fail(err)
		}
		b := d.buf[:n]
		for len(b) >= nlmsgHdrLen {
			m, rest, err := nextMessage(b)
			if err != nil {
				d.drain(seq)
				return fail(err)
			}
			b = rest
			if m.seq != seq {
				continue // not this request's (a dump is always read to its end)
			}
			data := m.data
			switch m.typ {
			case unix.NLMSG_DONE:
				if len(data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(data)); code < 0 {
						return fail(unix.Errno(-code))
					}
				}
				return nil
			case unix.NLMSG_ERROR:
				if len(data) < 4 {
					return fail(fmt.Errorf("truncated error message"))
				}
				code := int32(binary.NativeEndian.Uint32(data))
				if code == 0 {
					continue
				}
				return fail(unix.Errno(-code))
			case unix.SOCK_DIAG_BY_FAMILY:
				// Decoded into the differ: a socket handed to fn by
				// pointer on the stack would escape, one allocation each.
				s := &d.sock
				var err error
				if *s, err = decodeDiagMsg(data); err != nil {
					d.drain(seq)
					return err
				}
				if proto == unix.IPPROTO_TCP && s.ulp != "mptcp" {
					continue // a plain TCP socket, not a subflow
				}
				fn(s)
			}
		}
	}
}

// drain reads the rest of the dump seq, which an error stopped: the
// kernel refuses (EBUSY) a new dump on a socket whose dump is still
// running, so every later listing on it would fail.
func (d *differ) drain(seq uint32) {
	for {
		n, err := d.recv()
		if err != nil {
			return
		}
		for b := d.buf[:n]; len(b) >= nlmsgHdrLen; {
			m, rest, err := nextMessage(b)
			if err != nil {
				break // the rest of this datagram cannot be walked
			}
			if m.seq == seq && (m.typ == unix.NLMSG_DONE || m.typ == unix.NLMSG_ERROR) {
				return
			}
			b = rest
		}
	}
}

// recv reads one datagram into d.buf (the runtime's poller waits).
func (d *differ) recv() (int, error) {
	var n int
	var errno syscall.Errno
	err := d.rc.Read(func(fd uintptr) bool {
		for {
			r, e := recvDatagram(fd, d.buf, true)
			if e == unix.EINTR {
				continue
			}
			if e == unix.EAGAIN {
				return false
			}
			n, errno = r, e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, errno
	case n > len(d.buf):
		return 0, fmt.Errorf("datagram of %d bytes truncated to %d", n, len(d.buf))
	}
	return n, nil
}

// encodeDiagReq builds struct inet_diag_req_v2 asking for INET_DIAG_INFO,
// plus INET_DIAG_REQ_PROTOCOL for protocols above 255 (MPTCP). Without
// INET_DIAG_INFO the kernel leaves out a subflow's ULP info too (tokens,
// ids, flags), so a listing always pays for tcp_info.
func encodeDiagReq(family uint8, proto int, states uint32) []byte {
	b := make([]byte, sizeofInetDiagReqV2)
	b[0] = family
	if proto <= 0xff {
		b[1] = uint8(proto)
	}
	b[2] = 1 << (inetDiagInfo - 1) // idiag_ext
	binary.NativeEndian.PutUint32(b[4:8], states)
	if proto > 0xff {
		ae := netlink.NewAttributeEncoder()
		ae.Uint32(inetDiagReqProtocol, uint32(proto))
		attrs, _ := ae.Encode()
		b = append(b, attrs...)
	}
	return b
}

// diagSock is one socket of a sock_diag reply.
type diagSock struct {
	family        uint8
	state         TCPState
	local, remote netip.AddrPort
	ifIndex       int
	inode         uint32
	cookie        uint64
	// info is the INET_DIAG_INFO payload as decodeDiagMsg found it, in
	// the buffer it read (mptcp_info of a connection, tcp_info of a
	// subflow).
	info        []byte
	ulp         string // INET_ULP_INFO_NAME
	sf          subflowULP
	hasULPMPTCP bool
}

// subflowULP is the content of INET_ULP_INFO_MPTCP.
type subflowULP struct {
	tokenRem, tokenLoc uint32
	flags              uint32
	idRem, idLoc       uint8
}

// decodeDiagMsg parses struct inet_diag_msg and its attributes. It never
// panics on short or malformed input.
func decodeDiagMsg(b []byte) (diagSock, error) {
	var s diagSock
	if len(b) < sizeofInetDiagMsg {
		return s, fmt.Errorf("pathmgr: inventory: sock_diag message of %d bytes, want at least %d", len(b), sizeofInetDiagMsg)
	}
	s.family = b[0]
	s.state = TCPState(b[1])
	sport := binary.BigEndian.Uint16(b[4:6])
	dport := binary.BigEndian.Uint16(b[6:8])
	var src, dst netip.Addr
	switch s.family {
	case unix.AF_INET:
		src = netip.AddrFrom4([4]byte(b[8:12]))
		dst = netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return s, fmt.Errorf("pathmgr: inventory: sock_diag message of unknown family %d", s.family)
	}
	s.local = netip.AddrPortFrom(src, sport)
	s.remote = netip.AddrPortFrom(dst, dport)
	s.ifIndex = int(binary.NativeEndian.Uint32(b[40:44]))
	// idiag_cookie[2]: the low 32 bits, then the high ones.
	s.cookie = uint64(binary.NativeEndian.Uint32(b[44:48])) | uint64(binary.NativeEndian.Uint32(b[48:52]))<<32
	s.inode = binary.NativeEndian.Uint32(b[68:72])
	err := walkAttrs(b[sizeofInetDiagMsg:], func(typ uint16, v []byte) error {
		switch typ {
		case inetDiagInfo:
			s.info = v
		case inetDiagULPInfo:
			return walkAttrs(v, func(typ uint16, v []byte) error {
				switch typ {
				case inetULPInfoName:
					s.ulp = ulpName(v)
				case inetULPInfoMPTCP:
					s.hasULPMPTCP = true
					return walkAttrs(v, func(typ uint16, v []byte) error {
						switch {
						case typ == mptcpSubflowAttrTokenRem && len(v) >= 4:
							s.sf.tokenRem = binary.NativeEndian.Uint32(v)
						case typ == mptcpSubflowAttrTokenLoc && len(v) >= 4:
							s.sf.tokenLoc = binary.NativeEndian.Uint32(v)
						case typ == mptcpSubflowAttrFlags && len(v) >= 4:
							s.sf.flags = binary.NativeEndian.Uint32(v)
						case typ == mptcpSubflowAttrIDRem && len(v) >= 1:
							s.sf.idRem = v[0]
						case typ == mptcpSubflowAttrIDLoc && len(v) >= 1:
							s.sf.idLoc = v[0]
						}
						return nil
					})
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("pathmgr: inventory: sock_diag attributes of %v: %w", s.local, err)
	}
	return s, nil
}

// walkAttrs calls fn with the type (flags stripped) and payload of each
// netlink attribute in b, in place: no allocation.
func walkAttrs(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("%d trailing bytes, too short for an attribute header", len(b))
		}
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & 0x3fff // NLA_TYPE_MASK
		if l < 4 || l > len(b) {
			return fmt.Errorf("attribute %d has bad length %d (%d bytes left)", typ, l, len(b))
		}
		if err := fn(typ, b[4:l]); err != nil {
			return err
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return nil
}

// ulpName is a NUL-terminated ULP name; "mptcp", by far the most common,
// costs no allocation.
func ulpName(v []byte) string {
	if i := bytes.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	if string(v) == "mptcp" {
		return "mptcp"
	}
	return string(v)
}

// decodeMPTCPInfo reads struct mptcp_info; fields past the end of b (an
// older kernel) stay zero.
func decodeMPTCPInfo(b []byte) MPTCPInfo {
	var full [sizeofMPTCPInfo]byte
	copy(full[:], b)
	p := full[:]
	ne := binary.NativeEndian
	return MPTCPInfo{
		Subflows: p[0], AddAddrSignal: p[1], AddAddrAccepted: p[2],
		SubflowsMax: p[3], AddAddrSignalMax: p[4], AddAddrAcceptedMax: p[5],
		Flags:         ne.Uint32(p[8:]),
		Token:         ne.Uint32(p[12:]),
		WriteSeq:      ne.Uint64(p[16:]),
		SndUna:        ne.Uint64(p[24:]),
		RcvNxt:        ne.Uint64(p[32:]),
		LocalAddrUsed: p[40], LocalAddrMax: p[41], CsumEnabled: p[42] != 0,
		Retransmits:   ne.Uint32(p[44:]),
		BytesRetrans:  ne.Uint64(p[48:]),
		BytesSent:     ne.Uint64(p[56:]),
		BytesReceived: ne.Uint64(p[64:]),
		BytesAcked:    ne.Uint64(p[72:]),
		SubflowsTotal: p[80],
		LastDataSent:  ne.Uint32(p[84:]),
		LastDataRecv:  ne.Uint32(p[88:]),
		LastAckRecv:   ne.Uint32(p[92:]),
	}
}

// decodeTCPInfo reads struct tcp_info into x/sys/unix's layout; a shorter
// payload (older kernel) leaves the later fields zero, a longer one (newer
// kernel) is cut.
func decodeTCPInfo(b []byte) unix.TCPInfo {
	var ti unix.TCPInfo
	dst := unsafe.Slice((*byte)(unsafe.Pointer(&ti)), unsafe.Sizeof(ti))
	copy(dst, b)
	return ti
}

// interfaces maps the namespace's addresses to interface index and name.
type ifaceMap struct {
	byAddr map[netip.Addr]int
	names  map[int]string
}

func (inv *Inventory) interfaces() (ifaceMap, error) {
	m := ifaceMap{byAddr: map[netip.Addr]int{}, names: map[int]string{}}
	links, err := inv.rt.Link.List()
	if err != nil {
		return m, fmt.Errorf("pathmgr: inventory: list interfaces: %w", err)
	}
	for _, l := range links {
		if l.Attributes != nil {
			m.names[int(l.Index)] = l.Attributes.Name
		}
	}
	addrs, err := inv.rt.Address.List()
	if err != nil {
		return m, fmt.Errorf("pathmgr: inventory: list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Attributes == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.Attributes.Address); ok {
			m.byAddr[ip.Unmap()] = int(a.Index)
		}
	}
	return m, nil
}

// connBuilder collects the connections and the subflows, each list by a
// goroutine of its own, and puts each subflow under the connection with
// its local token when both are read (done). The connections, their
// mptcp_info and all subflows are each one array (at 50,000 connections,
// a slice and a pointer per connection were most of a resync's garbage).
// As the two dumps run at once, a connection opened during a listing may
// be in it without the subflows it had by the end (as with any snapshot
// of sockets that come and go: the events fill it in).
type connBuilder struct {
	conns []Connection
	infos []MPTCPInfo // conns[i].Info is &infos[info[i]] once done
	info  []int32     // -1: none
	sfs   []SubflowInfo
	ifs   ifaceMap
}

func newConnBuilder(ifs ifaceMap, conns, subflows int) *connBuilder {
	return &connBuilder{conns: make([]Connection, 0, conns), infos: make([]MPTCPInfo, 0, conns),
		info: make([]int32, 0, conns), sfs: make([]SubflowInfo, 0, subflows), ifs: ifs}
}

// addConn adds an MPTCP socket (its info is mptcp_info).
func (b *connBuilder) addConn(m *diagSock) {
	c := Connection{Local: m.local, Remote: m.remote, State: m.state, Inode: m.inode}
	info := int32(-1)
	if len(m.info) > 0 {
		info = int32(len(b.infos))
		b.infos = append(b.infos, decodeMPTCPInfo(m.info))
		c.Token = b.infos[info].Token
	}
	b.conns = append(b.conns, c)
	b.info = append(b.info, info)
}

// addSubflow adds a subflow (its info is tcp_info).
func (b *connBuilder) addSubflow(s *diagSock) {
	if s.sf.tokenLoc == 0 {
		return // no CAP_NET_ADMIN: no token to place it by
	}
	sf := SubflowInfo{
		Local: s.local, Remote: s.remote, State: s.state,
		LocalID: s.sf.idLoc, RemoteID: s.sf.idRem,
		Backup:       s.sf.flags&mptcpSubflowFlagBkupLoc != 0,
		BackupRemote: s.sf.flags&mptcpSubflowFlagBkupRem != 0,
		Flags:        s.sf.flags, TokenLocal: s.sf.tokenLoc, TokenRemote: s.sf.tokenRem,
		IfIndex: s.ifIndex, Cookie: s.cookie,
	}
	if sf.IfIndex == 0 {
		sf.IfIndex = b.ifs.byAddr[s.local.Addr().Unmap()]
	}
	sf.IfName = b.ifs.names[sf.IfIndex]
	if len(s.info) > 0 {
		ti := decodeTCPInfo(s.info)
		sf.RTT = time.Duration(ti.Rtt) * time.Microsecond
		sf.RTTVar = time.Duration(ti.Rttvar) * time.Microsecond
		sf.Retrans = ti.Total_retrans
		sf.BytesAcked = ti.Bytes_acked
		sf.BytesReceived = ti.Bytes_received
		sf.BytesSent = ti.Bytes_sent
		sf.BytesRetrans = ti.Bytes_retrans
		sf.DeliveryRate = ti.Delivery_rate
		sf.Cwnd = ti.Snd_cwnd
		sf.MSS = ti.Snd_mss
		sf.RcvRTT = time.Duration(ti.Rcv_rtt) * time.Microsecond
		sf.DataSegsIn = ti.Data_segs_in
		sf.RcvOOOPack = ti.Rcv_ooopack
	}
	b.sfs = append(b.sfs, sf)
}

// done sorts the connections by token and puts each subflow under its
// connection (a subflow whose connection closed meanwhile is left out),
// sorted by local id then local address.
func (b *connBuilder) done() []Connection {
	conns := b.conns
	// Sorted first: a connection's subflows are a run of the one array
	// of subflows, in the connections' order.
	for i := range conns {
		if b.info[i] >= 0 {
			conns[i].Info = &b.infos[b.info[i]]
		}
	}
	// Not a stable sort: at 50,000 connections its rotations of the
	// structs cost more than the rest of the grouping. Tokens are unique;
	// listeners (token 0) differ by address or, sharing a port, by inode.
	slices.SortFunc(conns, func(x, y Connection) int {
		if x.Token != y.Token {
			return cmp.Compare(x.Token, y.Token)
		}
		if c := x.Local.Compare(y.Local); c != 0 {
			return c
		}
		if c := x.Remote.Compare(y.Remote); c != 0 {
			return c
		}
		return cmp.Compare(x.Inode, y.Inode) // SO_REUSEPORT listeners
	})
	byToken := make(map[uint32]int32, len(conns))
	for i := range conns {
		if conns[i].Token != 0 {
			byToken[conns[i].Token] = int32(i)
		}
	}
	// A counting sort by connection: at, then start[i] is where
	// connection i's run begins.
	at := make([]int32, len(b.sfs))
	start := make([]int32, len(conns)+1)
	for j := range b.sfs {
		i, ok := byToken[b.sfs[j].TokenLocal]
		if !ok {
			i = -1
		} else {
			start[i+1]++
		}
		at[j] = i
	}
	for i := range conns {
		start[i+1] += start[i]
	}
	placed := make([]SubflowInfo, start[len(conns)])
	next := slices.Clone(start[:len(conns)])
	for j := range b.sfs {
		if i := at[j]; i >= 0 {
			placed[next[i]] = b.sfs[j]
			next[i]++
		}
	}
	for i := range conns {
		// Capped: appending to one connection's subflows never writes
		// over the next one's. Never nil (placed is not, even empty): a
		// connection without subflows lists [] in JSON.
		sub := placed[start[i]:start[i+1]:start[i+1]]
		slices.SortFunc(sub, func(x, y SubflowInfo) int {
			if x.LocalID != y.LocalID {
				return cmp.Compare(x.LocalID, y.LocalID)
			}
			return x.Local.Compare(y.Local)
		})
		conns[i].Subflows = sub
	}
	return conns
}

// groupConnections is the builder over lists of sockets already read.
func groupConnections(msks, sfs []diagSock, ifs ifaceMap) []Connection {
	b := newConnBuilder(ifs, len(msks), len(sfs))
	for i := range msks {
		b.addConn(&msks[i])
	}
	for i := range sfs {
		b.addSubflow(&sfs[i])
	}
	return b.done()
}
