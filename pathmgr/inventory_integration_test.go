//go:build linux

package pathmgr_test

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// ssSubflow is one MPTCP subflow as `ss -Mtni` prints it.
type ssSubflow struct {
	local, remote     netip.AddrPort
	dev               string
	tokenLoc, tokenRe uint32
	idLoc, idRem      uint8
	flags             string // ss's letters: b = local backup, B = remote backup, j/J = join
	// Receive side: data_segs_in, rcv_ooopack (ss omits it when 0) and
	// whether ss printed a rcv_rtt.
	dataSegsIn, rcvOOOPack uint64
	hasRcvRTT              bool
}

var (
	ssHeader = regexp.MustCompile(`^tcp\s+\S+\s+\d+\s+\d+\s+(\S+)\s+(\S+)`)
	ssULP    = regexp.MustCompile(`tcp-ulp-mptcp flags:(\S*) token:([0-9a-f]+)\(id:(\d+)\)/([0-9a-f]+)\(id:(\d+)\)`)
	ssMsk    = regexp.MustCompile(`^mptcp\s+\S+\s+\d+\s+\d+\s+(\S+)\s+(\S+)`)
	ssToken  = regexp.MustCompile(`\btoken:([0-9a-f]+)\b`)
	ssSegsIn = regexp.MustCompile(`\bdata_segs_in:(\d+)\b`)
	ssOOO    = regexp.MustCompile(`\brcv_ooopack:(\d+)\b`)
	ssRcvRTT = regexp.MustCompile(`\brcv_rtt:[0-9.]+\b`)
)

// parseSSAddr reads "10.9.2.1%lte0:40000", "[fd00::1]%lte0:40000" or "[::ffff:10.9.1.2]:80".
func parseSSAddr(t *testing.T, s string) (netip.AddrPort, string) {
	t.Helper()
	i := strings.LastIndexByte(s, ':')
	host, port := s[:i], s[i+1:]
	dev := ""
	if j := strings.IndexByte(host, '%'); j >= 0 {
		host, dev = host[:j], host[j+1:]
	}
	host = strings.Trim(host, "[]")
	ap, err := netip.ParseAddrPort(net2(host, port))
	if err != nil {
		t.Fatalf("ss address %q: %v", s, err)
	}
	return ap, dev
}

func net2(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

func hex32(t *testing.T, s string) uint32 {
	t.Helper()
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		t.Fatalf("ss token %q: %v", s, err)
	}
	return uint32(v)
}

// ssMPTCP runs `ss -Mtni` in ns and returns the MPTCP connection tokens
// and the subflows.
func ssMPTCP(t *testing.T, ns *testbed.NetNS) (tokens []uint32, sfs []ssSubflow) {
	t.Helper()
	out := ns.RunT(t, "ss", "-Mtni")
	lines := strings.Split(out, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		next := ""
		if i+1 < len(lines) {
			next = lines[i+1]
		}
		if m := ssHeader.FindStringSubmatch(l); m != nil {
			u := ssULP.FindStringSubmatch(next)
			if u == nil {
				continue // plain TCP
			}
			var s ssSubflow
			s.local, s.dev = parseSSAddr(t, m[1])
			s.remote, _ = parseSSAddr(t, m[2])
			s.flags = u[1]
			s.tokenRe, s.tokenLoc = hex32(t, u[2]), hex32(t, u[4])
			r, _ := strconv.Atoi(u[3])
			lo, _ := strconv.Atoi(u[5])
			s.idRem, s.idLoc = uint8(r), uint8(lo)
			if m := ssSegsIn.FindStringSubmatch(next); m != nil {
				s.dataSegsIn, _ = strconv.ParseUint(m[1], 10, 64)
			}
			if m := ssOOO.FindStringSubmatch(next); m != nil {
				s.rcvOOOPack, _ = strconv.ParseUint(m[1], 10, 64)
			}
			s.hasRcvRTT = ssRcvRTT.MatchString(next)
			sfs = append(sfs, s)
		} else if ssMsk.MatchString(l) {
			if m := ssToken.FindStringSubmatch(next); m != nil {
				tokens = append(tokens, hex32(t, m[1]))
			}
		}
	}
	return tokens, sfs
}

// waitConns polls the inventory until ok accepts it.
func waitConns(t *testing.T, inv *pathmgr.Inventory, what string, ok func([]pathmgr.Connection) bool) []pathmgr.Connection {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conns, err := inv.Connections(pathmgr.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ok(conns) {
			return conns
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(conns, "", " ")
			t.Fatalf("inventory: %s not reached within 10s; last: %s", what, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func openInventory(t *testing.T, ns *testbed.NetNS) *pathmgr.Inventory {
	t.Helper()
	inv, err := pathmgr.OpenInventory(&pathmgr.Config{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	return inv
}

func ifindex(t *testing.T, ns *testbed.NetNS, dev string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(ns.RunT(t, "cat", "/sys/class/net/"+dev+"/ifindex")))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestIntegrationInventory checks Connections against ss -Mtni on both
// ends of a real connection with a second, backup subflow made by the
// in-kernel PM over lte.
func TestIntegrationInventory(t *testing.T) {
	p := newPair(t, "kernel")
	p.cli.RunT(t, "ip", "mptcp", "endpoint", "add", cliLTE.String(), "dev", "lte0", "id", "5", "subflow", "backup")
	const port = 10500
	p.serve(t, port)
	cli := openInventory(t, p.cli)
	srv := openInventory(t, p.srv)

	// Nothing yet: an empty list, not an error.
	if conns, err := cli.Connections(pathmgr.ListOptions{}); err != nil || len(conns) != 0 {
		t.Fatalf("before any connection: %v, %v; want none", conns, err)
	}
	conn := p.dial(t, port)
	local := netip.MustParseAddrPort(conn.LocalAddr().String())

	conns := waitConns(t, cli, "two subflows with byte counters", func(cs []pathmgr.Connection) bool {
		return len(cs) == 1 && len(cs[0].Subflows) == 2 && cs[0].Subflows[0].BytesAcked > 0
	})
	c := conns[0]
	tokens, sfs := ssMPTCP(t, p.cli)
	if len(tokens) != 1 || tokens[0] != c.Token {
		t.Errorf("token = %#x, ss -Mtni shows tokens %x", c.Token, tokens)
	}
	if c.Local != local || c.Remote != netip.AddrPortFrom(srvWiFi, port) || c.State.String() != "established" {
		t.Errorf("connection %v -> %v %s, want %v -> %v:%d established", c.Local, c.Remote, c.State, local, srvWiFi, port)
	}
	if c.Info == nil || c.Info.Token != c.Token || c.Info.SubflowsMax != 4 || c.Info.Fallback() {
		t.Errorf("mptcp_info = %+v, want token %#x, subflows_max 4 (the limit set), no fallback", c.Info, c.Token)
	}
	if len(sfs) != len(c.Subflows) {
		t.Fatalf("%d subflows, ss -Mtni shows %d: %+v", len(c.Subflows), len(sfs), sfs)
	}
	wifiIdx, lteIdx := ifindex(t, p.cli, "wifi0"), ifindex(t, p.cli, "lte0")
	for i, want := range []struct {
		local  netip.Addr
		dev    string
		idx    int
		id     uint8
		backup bool
	}{
		{cliWiFi, "wifi0", wifiIdx, 0, false},
		{cliLTE, "lte0", lteIdx, 5, true},
	} {
		s := c.Subflows[i]
		if s.Local.Addr() != want.local || s.IfName != want.dev || s.IfIndex != want.idx || s.LocalID != want.id || s.Backup != want.backup || s.TokenLocal != c.Token {
			t.Errorf("subflow %d = %s dev %s(%d) id %d backup %v token %#x; want %v dev %s(%d) id %d backup %v token %#x",
				i, s.Local, s.IfName, s.IfIndex, s.LocalID, s.Backup, s.TokenLocal, want.local, want.dev, want.idx, want.id, want.backup, c.Token)
		}
		if s.Remote != netip.AddrPortFrom(srvWiFi, port) {
			t.Errorf("subflow %d remote %v, want %v:%d", i, s.Remote, srvWiFi, port)
		}
		if s.RTT <= 0 || s.MSS == 0 {
			t.Errorf("subflow %d: no tcp_info (rtt %v, mss %d)", i, s.RTT, s.MSS)
		}
		if i == 1 && !s.Join() {
			t.Errorf("subflow over lte not marked as a join (flags %#x)", s.Flags)
		}
		// Same subflow in ss: addresses, ids, tokens, backup letter.
		found := false
		for _, o := range sfs {
			if o.local != s.Local {
				continue
			}
			found = true
			if o.remote != s.Remote || o.idLoc != s.LocalID || o.idRem != s.RemoteID || o.tokenLoc != s.TokenLocal || o.tokenRe != s.TokenRemote ||
				strings.Contains(o.flags, "b") != s.Backup || strings.Contains(o.flags, "B") != s.BackupRemote {
				t.Errorf("subflow %v: ours %+v, ss says %+v", s.Local, s, o)
			}
		}
		if !found {
			t.Errorf("subflow %v not in ss -Mtni", s.Local)
		}
	}

	// The server side: the same connection under the server's token, the
	// lte subflow backup as the peer asked (remote backup), received bytes.
	sconns := waitConns(t, srv, "server with two subflows", func(cs []pathmgr.Connection) bool {
		return len(cs) == 1 && len(cs[0].Subflows) == 2
	})
	stoks, _ := ssMPTCP(t, p.srv)
	if len(stoks) != 1 || stoks[0] != sconns[0].Token || sconns[0].Token != c.Subflows[1].TokenRemote {
		t.Errorf("server token %#x, ss shows %x, client's lte subflow has remote token %#x", sconns[0].Token, stoks, c.Subflows[1].TokenRemote)
	}
	var sawBackupRemote bool
	for _, s := range sconns[0].Subflows {
		if s.Remote.Addr().Unmap() == cliLTE {
			sawBackupRemote = s.BackupRemote
		}
		if s.IfName != "wifi1" {
			t.Errorf("server subflow %v -> %v: dev %q, want wifi1 (its local address)", s.Local, s.Remote, s.IfName)
		}
	}
	if !sawBackupRemote {
		t.Errorf("server does not see the client's lte subflow as remote backup: %+v", sconns[0].Subflows)
	}
	checkReceiveSide(t, p.srv, srv)

	// Listeners only when asked.
	ls, err := srv.Connections(pathmgr.ListOptions{ListenersToo: true})
	if err != nil {
		t.Fatal(err)
	}
	var listen int
	for _, c := range ls {
		if c.State.String() == "listen" {
			listen++
			if c.Local.Port() != port {
				t.Errorf("listener on %v, want port %d", c.Local, port)
			}
		}
	}
	if listen != 1 || len(ls) != 2 {
		t.Errorf("with listeners: %d connections, %d listening; want 2, 1", len(ls), listen)
	}

	// Closed connections leave the inventory.
	conn.Close()
	waitConns(t, cli, "no connection after close", func(cs []pathmgr.Connection) bool {
		for _, c := range cs {
			if c.State.String() == "established" {
				return false
			}
		}
		return true
	})
}

// checkReceiveSide compares the receive-side tcp_info fields of ns's
// subflows with ss -Mtni read just before and just after the inventory
// (data keeps flowing, so the counters must lie between the two). The
// server receives the client's data, so a subflow of it gets data segments
// and a receiver RTT.
func checkReceiveSide(t *testing.T, ns *testbed.NetNS, inv *pathmgr.Inventory) {
	t.Helper()
	waitConns(t, inv, "a subflow with data received and a receiver RTT", func(cs []pathmgr.Connection) bool {
		for _, c := range cs {
			for _, s := range c.Subflows {
				if s.DataSegsIn > 100 && s.RcvRTT > 0 {
					return true
				}
			}
		}
		return false
	})
	_, before := ssMPTCP(t, ns)
	conns, err := inv.Connections(pathmgr.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, after := ssMPTCP(t, ns)
	find := func(l []ssSubflow, local, remote netip.AddrPort) (ssSubflow, bool) {
		for _, o := range l {
			if o.local == local && o.remote == remote {
				return o, true
			}
		}
		return ssSubflow{}, false
	}
	var receiving int
	for _, c := range conns {
		for _, s := range c.Subflows {
			b, ok1 := find(before, s.Local, s.Remote)
			a, ok2 := find(after, s.Local, s.Remote)
			if !ok1 || !ok2 {
				t.Errorf("subflow %v -> %v not in ss -Mtni", s.Local, s.Remote)
				continue
			}
			if uint64(s.DataSegsIn) < b.dataSegsIn || uint64(s.DataSegsIn) > a.dataSegsIn {
				t.Errorf("subflow %v: data_segs_in %d, ss says %d before and %d after", s.Local, s.DataSegsIn, b.dataSegsIn, a.dataSegsIn)
			}
			if uint64(s.RcvOOOPack) < b.rcvOOOPack || uint64(s.RcvOOOPack) > a.rcvOOOPack {
				t.Errorf("subflow %v: rcv_ooopack %d, ss says %d before and %d after", s.Local, s.RcvOOOPack, b.rcvOOOPack, a.rcvOOOPack)
			}
			// Once measured, the estimate stays non-zero.
			if (s.RcvRTT > 0 && !a.hasRcvRTT) || (b.hasRcvRTT && s.RcvRTT == 0) {
				t.Errorf("subflow %v: rcv_rtt %v, ss prints rcv_rtt before %v, after %v", s.Local, s.RcvRTT, b.hasRcvRTT, a.hasRcvRTT)
			}
			if s.DataSegsIn > 100 && s.RcvRTT > 0 {
				receiving++
			}
		}
	}
	if receiving == 0 {
		t.Errorf("no server subflow with more than 100 data segments received and a receiver RTT: %+v", conns)
	}
}
