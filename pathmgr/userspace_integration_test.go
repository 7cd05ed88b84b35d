//go:build linux

package pathmgr_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// pair is two namespaces joined by a "wifi" and an "lte" veth link:
// cli 10.9.1.1 (wifi0) / 10.9.2.1 (lte0), srv 10.9.1.2 / 10.9.2.2.
type pair struct {
	cli, srv *testbed.NetNS
}

var (
	cliWiFi = netip.MustParseAddr("10.9.1.1")
	cliLTE  = netip.MustParseAddr("10.9.2.1")
	srvWiFi = netip.MustParseAddr("10.9.1.2")
	srvLTE  = netip.MustParseAddr("10.9.2.2")
)

func newPair(t *testing.T, clientPM string) *pair {
	t.Helper()
	p := &pair{cli: testbed.NetNST(t, "cli"), srv: testbed.NetNST(t, "srv")}
	testbed.ConnectT(t, p.cli, p.srv,
		testbed.VethLink{A: "wifi0", B: "wifi1", AAddr: "10.9.1.1/24", BAddr: "10.9.1.2/24"},
		testbed.VethLink{A: "lte0", B: "lte1", AAddr: "10.9.2.1/24", BAddr: "10.9.2.2/24"})
	p.srv.RunT(t, "ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	p.cli.RunT(t, "ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	if err := p.cli.Sysctl("net.mptcp.path_manager", clientPM); err != nil {
		// Kernels before 6.15 only have pm_type (0 kernel, 1 userspace).
		v := "0"
		if clientPM == "userspace" {
			v = "1"
		}
		if err2 := p.cli.Sysctl("net.mptcp.pm_type", v); err2 != nil {
			t.Fatalf("select %s path manager: %v; %v", clientPM, err, err2)
		}
	}
	return p
}

// serve starts an MPTCP sink in srv on port.
func (p *pair) serve(t *testing.T, port int) {
	t.Helper()
	testbed.ServeT(t, p.srv, "tcp", net.JoinHostPort("0.0.0.0", itoa(port)), true, testbed.Sink)
}

// dial opens an MPTCP connection from cli's wifi address and keeps data
// flowing until the test ends (an idle connection never becomes fully
// established).
func (p *pair) dial(t *testing.T, port int) net.Conn {
	t.Helper()
	c := testbed.DialMPTCPT(t, p.cli, "tcp", cliWiFi.String(), net.JoinHostPort(srvWiFi.String(), itoa(port)))
	testbed.KeepSending(t, c)
	return c
}

// events collects a namespace's PM events into a channel.
func events(t *testing.T, ns *testbed.NetNS) <-chan pathmgr.Event {
	t.Helper()
	l, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() }) // after Collect's cleanup has stopped the loop
	ch := make(chan pathmgr.Event, 1024)
	testbed.Collect(t, l.Receive, func(evs []pathmgr.Event, err error) bool {
		if err != nil {
			t.Errorf("receive events in %s: %v", ns.Name, err)
			return false
		}
		for _, e := range evs {
			ch <- e
		}
		return true
	})
	return ch
}

// waitEvent returns the first event of type typ that satisfies ok.
func waitEvent(t *testing.T, ch <-chan pathmgr.Event, typ pathmgr.EventType, ok func(pathmgr.Event) bool) pathmgr.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-ch:
			t.Logf("event: %v", e)
			if e.Type == typ && (ok == nil || ok(e)) {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event within 10s", typ)
		}
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func TestIntegrationUserspacePM(t *testing.T) {
	p := newPair(t, "userspace")
	const port = 10400
	p.serve(t, port)
	cliEv := events(t, p.cli)
	srvEv := events(t, p.srv)
	c := dial(t, p.cli)

	conn := p.dial(t, port)
	local := netip.MustParseAddrPort(conn.LocalAddr().String())
	created := waitEvent(t, cliEv, pathmgr.EventCreated, nil)
	if created.Local != local || created.Remote != netip.AddrPortFrom(srvWiFi, port) || created.Token == 0 {
		t.Errorf("created = %+v, want %v -> %v:%d with a token", created, local, srvWiFi, port)
	}
	est := waitEvent(t, cliEv, pathmgr.EventEstablished, func(e pathmgr.Event) bool { return e.Token == created.Token })
	token := est.Token
	if est.ServerSide {
		t.Error("client's established event says server_side")
	}
	srvEst := waitEvent(t, srvEv, pathmgr.EventEstablished, nil)
	if !srvEst.ServerSide {
		t.Errorf("server's established event lacks server_side: %+v", srvEst)
	}

	// Second subflow over lte.
	remote := netip.AddrPortFrom(srvLTE, port)
	lteIdx := atoi(t, strings.TrimSpace(p.cli.RunT(t, "cat", "/sys/class/net/lte0/ifindex")))
	if err := c.CreateSubflow(token, pathmgr.Endpoint{Addr: cliLTE, ID: 2, IfIndex: lteIdx}, remote); err != nil {
		t.Fatal(err)
	}
	sub := waitEvent(t, cliEv, pathmgr.EventSubEstablished, func(e pathmgr.Event) bool { return e.Local.Addr() == cliLTE })
	if sub.Token != token || sub.Remote != remote || sub.LocalID != 2 || sub.IfIndex != lteIdx || sub.Backup {
		t.Errorf("sub_established = %+v, want token %d, lte subflow id 2 on ifindex %d to %v, not backup", sub, token, lteIdx, remote)
	}
	ssOut := p.cli.RunT(t, "ss", "-tnH", "state", "established", "src", cliLTE.String())
	if !strings.Contains(ssOut, remote.String()) {
		t.Errorf("ss shows no lte subflow to %v:\n%s", remote, ssOut)
	}

	// Backup: the peer sees MP_PRIO as a sub_priority event.
	sf := pathmgr.Subflow{Local: sub.Local, Remote: sub.Remote}
	if err := c.SetSubflowBackup(token, sf, true); err != nil {
		t.Fatal(err)
	}
	prio := waitEvent(t, srvEv, pathmgr.EventSubPriority, nil)
	if !prio.Backup || prio.Remote.Addr().Unmap() != cliLTE {
		t.Errorf("server sub_priority = %+v, want backup=1 for the subflow from %v", prio, cliLTE)
	}

	// Announce and remove an address: the peer sees ADD_ADDR and RM_ADDR.
	// (An address already in use under one id cannot be announced under
	// another: the kernel says "did not match address and id".)
	extra := netip.MustParseAddr("10.9.2.3")
	if err := p.cli.AddAddr("lte0", "10.9.2.3/24"); err != nil {
		t.Fatal(err)
	}
	if err := c.Announce(token, pathmgr.Endpoint{Addr: extra, ID: 5}); err != nil {
		t.Fatal(err)
	}
	ann := waitEvent(t, srvEv, pathmgr.EventAnnounced, nil)
	if ann.RemoteID != 5 || ann.Remote.Addr().Unmap() != extra {
		t.Errorf("server announced = %+v, want rem_id 5 daddr %v", ann, extra)
	}
	if err := c.Remove(token, 5); err != nil {
		t.Fatal(err)
	}
	rm := waitEvent(t, srvEv, pathmgr.EventRemoved, nil)
	if rm.RemoteID != 5 {
		t.Errorf("server removed = %+v, want rem_id 5", rm)
	}

	// Any MPTCP listening socket produces listener_created/closed.
	var ln net.Listener
	if err := p.cli.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp4", "10.9.2.1:20006")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lc := waitEvent(t, cliEv, pathmgr.EventListenerCreated, nil)
	if lc.Local != netip.AddrPortFrom(cliLTE, 20006) || lc.Family != 2 {
		t.Errorf("listener_created = %+v, want inet %v:20006", lc, cliLTE)
	}
	ln.Close()
	lcl := waitEvent(t, cliEv, pathmgr.EventListenerClosed, nil)
	if lcl.Local != lc.Local {
		t.Errorf("listener_closed = %+v, want %v", lcl, lc.Local)
	}

	// Destroy the lte subflow.
	if err := c.DestroySubflow(token, sf); err != nil {
		t.Fatal(err)
	}
	closed := waitEvent(t, cliEv, pathmgr.EventSubClosed, func(e pathmgr.Event) bool { return e.Local == sf.Local })
	if closed.Token != token {
		t.Errorf("sub_closed = %+v, want token %d", closed, token)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := p.cli.RunT(t, "ss", "-tnH", "state", "established", "src", cliLTE.String())
		if !strings.Contains(out, remote.String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lte subflow still in ss after destroy:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Kernel refusals reach the caller with the kernel's words.
	err := c.CreateSubflow(token^0x5a5a5a5a, pathmgr.Endpoint{Addr: cliLTE}, remote)
	if !isKernelError(err) || !strings.Contains(err.Error(), "token") {
		t.Errorf("subflow create with a bad token: err = %v, want the kernel's invalid token message", err)
	}

	conn.Close()
	waitEvent(t, cliEv, pathmgr.EventClosed, func(e pathmgr.Event) bool { return e.Token == token })
}
