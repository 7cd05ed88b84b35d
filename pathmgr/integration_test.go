//go:build linux

package pathmgr_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

func dial(t *testing.T, ns *testbed.NetNS) *pathmgr.Client {
	t.Helper()
	c, err := pathmgr.Dial(&pathmgr.Config{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestIntegrationEndpoints(t *testing.T) {
	ns := testbed.NetNST(t, "ep")
	ns.RunT(t, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	ns.RunT(t, "ip", "link", "set", "d0", "up")
	if err := ns.AddAddr("d0", "10.7.0.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := ns.AddAddr("d0", "fd00:7::1/64"); err != nil {
		t.Fatal(err)
	}
	c := dial(t, ns)
	ifx := strings.TrimSpace(ns.RunT(t, "cat", "/sys/class/net/d0/ifindex"))

	// Added by the library, read by ip mptcp.
	if err := c.AddEndpoint(pathmgr.Endpoint{ID: 7, Addr: netip.MustParseAddr("10.7.0.1"), Flags: pathmgr.FlagSubflow | pathmgr.FlagBackup, IfIndex: atoi(t, ifx)}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddEndpoint(pathmgr.Endpoint{ID: 9, Addr: netip.MustParseAddr("fd00:7::1"), Port: 10009, Flags: pathmgr.FlagSignal}); err != nil {
		t.Fatal(err)
	}
	got := ns.RunT(t, "ip", "mptcp", "endpoint", "show")
	for _, want := range []string{"10.7.0.1 id 7 subflow backup dev d0", "fd00:7::1 port 10009 id 9 signal"} {
		if !strings.Contains(got, want) {
			t.Errorf("ip mptcp endpoint show = %q, want a line with %q", got, want)
		}
	}

	// Added by ip mptcp, read by the library.
	ns.RunT(t, "ip", "mptcp", "endpoint", "add", "10.7.0.2", "id", "12", "subflow", "fullmesh")
	e, err := c.Endpoint(12)
	if err != nil {
		t.Fatal(err)
	}
	if e.Addr != netip.MustParseAddr("10.7.0.2") || e.Flags != pathmgr.FlagSubflow|pathmgr.FlagFullmesh {
		t.Errorf("Endpoint(12) = %+v, want 10.7.0.2 subflow fullmesh", e)
	}
	eps, err := c.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 3 {
		t.Fatalf("Endpoints() = %d endpoints %+v, want 3", len(eps), eps)
	}
	byID := map[uint8]pathmgr.Endpoint{}
	for _, e := range eps {
		byID[e.ID] = e
	}
	if e := byID[9]; e.Port != 10009 || e.Addr.String() != "fd00:7::1" {
		t.Errorf("endpoint 9 = %+v, want fd00:7::1 port 10009", e)
	}
	if e := byID[7]; e.IfIndex != atoi(t, ifx) {
		t.Errorf("endpoint 7 ifindex = %d, want %s", e.IfIndex, ifx)
	}

	// Change flags by id and by address.
	if err := c.SetEndpointFlags(7, netip.Addr{}, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.SetEndpointFlags(0, netip.MustParseAddr("10.7.0.2"), pathmgr.FlagBackup); err != nil {
		t.Fatal(err)
	}
	got = ns.RunT(t, "ip", "mptcp", "endpoint", "show")
	if strings.Contains(got, "id 7 subflow backup") || !strings.Contains(got, "10.7.0.2 id 12 subflow backup") {
		t.Errorf("after change: ip mptcp endpoint show = %q", got)
	}

	// Delete, get a missing one, flush.
	if err := c.DeleteEndpoint(12, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Endpoint(12); !errors.Is(err, os.ErrNotExist) && !isKernelError(err) {
		t.Errorf("Endpoint(12) after delete: err = %v, want a kernel refusal", err)
	}
	if got := ns.RunT(t, "ip", "mptcp", "endpoint", "show"); strings.Contains(got, "id 12") {
		t.Errorf("endpoint 12 still present: %q", got)
	}
	if err := c.FlushEndpoints(); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(ns.RunT(t, "ip", "mptcp", "endpoint", "show")); got != "" {
		t.Errorf("after flush: %q, want nothing", got)
	}

	// A duplicate id is refused by the kernel with its own message.
	ns.RunT(t, "ip", "mptcp", "endpoint", "add", "10.7.0.1", "id", "3", "subflow")
	err = c.AddEndpoint(pathmgr.Endpoint{ID: 3, Addr: netip.MustParseAddr("10.7.0.9"), Flags: pathmgr.FlagSubflow})
	var ke *pathmgr.Error
	if !errors.As(err, &ke) {
		t.Fatalf("duplicate id: err = %v, want *pathmgr.Error", err)
	}
	t.Logf("duplicate id refused: %v", err)
}

func isKernelError(err error) bool {
	var ke *pathmgr.Error
	return errors.As(err, &ke)
}

func TestIntegrationLimits(t *testing.T) {
	ns := testbed.NetNST(t, "lim")
	c := dial(t, ns)
	ns.RunT(t, "ip", "mptcp", "limits", "set", "subflow", "3", "add_addr_accepted", "2")
	l, err := c.Limits()
	if err != nil {
		t.Fatal(err)
	}
	if l != (pathmgr.Limits{Subflows: 3, AddAddrAccepted: 2}) {
		t.Errorf("Limits() = %+v, want subflows 3 add_addr_accepted 2", l)
	}
	five := uint32(5)
	if err := c.SetLimits(pathmgr.LimitsUpdate{Subflows: &five}); err != nil {
		t.Fatal(err)
	}
	if got := ns.RunT(t, "ip", "mptcp", "limits", "show"); !strings.Contains(got, "add_addr_accepted 2 subflows 5") {
		t.Errorf("ip mptcp limits show = %q, want add_addr_accepted 2 subflows 5", got)
	}
	nine := uint32(9)
	if err := c.SetLimits(pathmgr.LimitsUpdate{AddAddrAccepted: &nine}); err == nil || !strings.Contains(err.Error(), "add_addr_accepted 9") {
		t.Errorf("SetLimits(add_addr_accepted 9) err = %v, want a range error naming it", err)
	}
}

func TestIntegrationNoSuchNetNS(t *testing.T) {
	testbed.NeedRoot(t)
	_, err := pathmgr.Dial(&pathmgr.Config{NetNS: "gp-does-not-exist"})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "gp-does-not-exist") {
		t.Errorf("Dial(missing netns) err = %v, want ErrNotExist naming it", err)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int(r-'0')
	}
	return n
}

// TestIntegrationConnectionAddrs: the local addresses of a userspace-PM
// connection, as the kernel dumps them, are the ones announced and the ones
// its created subflows use; a token that is no connection is refused.
func TestIntegrationConnectionAddrs(t *testing.T) {
	p := newPair(t, "userspace")
	const port = 10410
	p.serve(t, port)
	cliEv := events(t, p.cli)
	c := dial(t, p.cli)
	p.dial(t, port)
	token := waitEvent(t, cliEv, pathmgr.EventEstablished, nil).Token

	if _, ok := kernelAtLeast(t, 6, 7); !ok {
		_, err := c.ConnectionAddrs(token)
		if !errors.Is(err, pathmgr.ErrNotSupported) {
			t.Fatalf("ConnectionAddrs before 6.7: err = %v, want ErrNotSupported", err)
		}
		t.Skip("dumping a userspace-PM connection's addresses needs Linux 6.7")
	}
	extra := netip.MustParseAddr("10.9.2.3")
	if err := p.cli.AddAddr("lte0", "10.9.2.3/24"); err != nil {
		t.Fatal(err)
	}
	if err := c.Announce(token, pathmgr.Endpoint{Addr: extra, ID: 5}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateSubflow(token, pathmgr.Endpoint{Addr: cliLTE, ID: 2}, netip.AddrPortFrom(srvLTE, port)); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cliEv, pathmgr.EventSubEstablished, func(e pathmgr.Event) bool { return e.Local.Addr() == cliLTE })
	eps, err := c.ConnectionAddrs(token)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[uint8]pathmgr.Endpoint{}
	for _, e := range eps {
		byID[e.ID] = e
	}
	if e, ok := byID[5]; !ok || e.Addr != extra || e.Flags&pathmgr.FlagSignal == 0 {
		t.Errorf("ConnectionAddrs = %+v, want id 5 %v signal (announced)", eps, extra)
	}
	if e, ok := byID[2]; !ok || e.Addr != cliLTE {
		t.Errorf("ConnectionAddrs = %+v, want id 2 %v (subflow created)", eps, cliLTE)
	}
	if err := c.Remove(token, 5); err != nil {
		t.Fatal(err)
	}
	eps, err = c.ConnectionAddrs(token)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range eps {
		if e.ID == 5 {
			t.Errorf("id 5 still listed after Remove: %+v", eps)
		}
	}
	if _, err := c.ConnectionAddrs(token ^ 0x5a5a5a5a); !isKernelError(err) {
		t.Errorf("ConnectionAddrs(bad token) err = %v, want the kernel's refusal", err)
	} else {
		t.Logf("bad token refused: %v", err)
	}
}

// kernelAtLeast reads the running kernel's release (uname -r).
func kernelAtLeast(t *testing.T, major, minor int) (string, bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimSpace(string(b))
	var maj, min int
	if n, _ := fmt.Sscanf(rel, "%d.%d", &maj, &min); n != 2 {
		t.Fatalf("cannot read kernel release %q", rel)
	}
	return rel, maj > major || (maj == major && min >= minor)
}

// TestIntegrationLaminarFlag: the 6.18 laminar flag round-trips; older
// iproute2 (Debian 12's 6.1) prints it as "rawflags 20", which is the bit
// the library sends and decodes.
func TestIntegrationLaminarFlag(t *testing.T) {
	ns := testbed.NetNST(t, "lam")
	if rel, ok := kernelAtLeast(t, 6, 18); !ok {
		t.Skipf("laminar endpoints need Linux 6.18; this kernel is %s", rel)
	}
	c := dial(t, ns)
	if err := c.AddEndpoint(pathmgr.Endpoint{ID: 4, Addr: netip.MustParseAddr("10.4.0.1"), Flags: pathmgr.FlagSubflow | pathmgr.FlagLaminar}); err != nil {
		t.Fatal(err)
	}
	got := ns.RunT(t, "ip", "mptcp", "endpoint", "show")
	if !strings.Contains(got, "10.4.0.1 id 4 subflow laminar") && !strings.Contains(got, "10.4.0.1 id 4 subflow rawflags 20") {
		t.Errorf("ip mptcp endpoint show = %q, want id 4 subflow with laminar (0x20)", got)
	}
	e, err := c.Endpoint(4)
	if err != nil || e.Flags != pathmgr.FlagSubflow|pathmgr.FlagLaminar || e.Flags.String() != "subflow laminar" {
		t.Errorf("Endpoint(4) = %+v (%v), %v; want subflow laminar", e, e.Flags, err)
	}
}

// TestIntegrationUserspaceIPv6: the userspace-PM commands over IPv6 (the
// addr6 nests of both ends): a subflow created over lte shows up in ss, is
// marked backup (ss's subflow flags gain 'b'), and is destroyed.
func TestIntegrationUserspaceIPv6(t *testing.T) {
	cli, srv := testbed.NetNST(t, "cu6"), testbed.NetNST(t, "su6")
	testbed.ConnectT(t, cli, srv,
		testbed.VethLink{A: "wifi0", B: "wifi1", AAddr: "fd00:81::1/64", BAddr: "fd00:81::2/64"},
		testbed.VethLink{A: "lte0", B: "lte1", AAddr: "fd00:82::1/64", BAddr: "fd00:82::2/64"})
	srv.RunT(t, "ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "0")
	if err := cli.Sysctl("net.mptcp.path_manager", "userspace"); err != nil {
		if err2 := cli.Sysctl("net.mptcp.pm_type", "1"); err2 != nil {
			t.Skipf("no userspace path manager (net.mptcp.path_manager, pm_type): %v; %v", err, err2)
		}
	}
	const port = 10660
	srvWiFi6 := netip.AddrPortFrom(netip.MustParseAddr("fd00:81::2"), port)
	srvLTE6 := netip.AddrPortFrom(netip.MustParseAddr("fd00:82::2"), port)
	cliLTE6 := netip.MustParseAddr("fd00:82::1")
	testbed.ServeT(t, srv, "tcp6", "[::]:"+strconv.Itoa(port), true, testbed.Sink)
	cliEv := events(t, cli)
	conn := testbed.DialMPTCPT(t, cli, "tcp6", "fd00:81::1", srvWiFi6.String())
	testbed.KeepSending(t, conn) // data must flow for the connection to become established
	token := waitEvent(t, cliEv, pathmgr.EventEstablished, nil).Token
	c := dial(t, cli)

	ssLTE := func() string {
		return cli.RunT(t, "ss", "-tniH", "state", "established", "src", "["+cliLTE6.String()+"]")
	}
	if err := c.CreateSubflow(token, pathmgr.Endpoint{Addr: cliLTE6, ID: 2}, srvLTE6); err != nil {
		t.Fatal(err)
	}
	var local netip.AddrPort
	testbed.Eventually(t, "the IPv6 lte subflow in ss", func() (bool, string) {
		out := ssLTE()
		for _, f := range strings.Fields(out) {
			if ap, err := netip.ParseAddrPort(f); err == nil && ap.Addr() == cliLTE6 {
				local = ap
			}
		}
		return local.IsValid() && strings.Contains(out, srvLTE6.String()), out
	})
	sf := pathmgr.Subflow{Local: local, Remote: srvLTE6}
	if err := c.SetSubflowBackup(token, sf, true); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, "backup flag 'b' on the IPv6 lte subflow", func() (bool, string) {
		out := ssLTE()
		return strings.Contains(subflowFlags(out), "b"), out
	})
	if err := c.DestroySubflow(token, sf); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, "the IPv6 lte subflow gone from ss", func() (bool, string) {
		out := ssLTE()
		return !strings.Contains(out, srvLTE6.String()), out
	})
	// Mixed families are refused before anything is sent.
	if err := c.CreateSubflow(token, pathmgr.Endpoint{Addr: netip.MustParseAddr("10.0.0.1")}, srvLTE6); err == nil || isKernelError(err) {
		t.Errorf("v4 local, v6 remote: err = %v, want a local refusal", err)
	}
}

// subflowFlags returns the MPTCP subflow flags from ss -tni output
// ("tcp-ulp-mptcp flags:Jjecvb ..."): b = local backup, B = remote backup.
func subflowFlags(out string) string {
	const key = "tcp-ulp-mptcp flags:"
	i := strings.Index(out, key)
	if i < 0 {
		return ""
	}
	return strings.Fields(out[i+len(key):])[0]
}
