//go:build linux

package pathmgr_test

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// TestIntegrationEventsKernelPM observes every event type the in-kernel PM
// produces on a real connection between two fresh namespaces, and checks
// the fields against the known addresses, ip mptcp and the inventory.
func TestIntegrationEventsKernelPM(t *testing.T) {
	p := newPair(t, "kernel")
	p.cli.RunT(t, "ip", "mptcp", "endpoint", "add", cliLTE.String(), "dev", "lte0", "id", "5", "subflow")
	cliEv := events(t, p.cli)
	srvEv := events(t, p.srv)
	const port = 10600
	p.serve(t, port)

	// listener_created on the server, for its MPTCP listen().
	lc := waitEvent(t, srvEv, pathmgr.EventListenerCreated, func(e pathmgr.Event) bool { return e.Local.Port() == port })
	if !lc.Has(pathmgr.AttrFamily) || lc.Has(pathmgr.AttrToken) {
		t.Errorf("listener_created = %v, want family, no token", lc)
	}

	conn := p.dial(t, port)
	local := netip.MustParseAddrPort(conn.LocalAddr().String())
	created := waitEvent(t, cliEv, pathmgr.EventCreated, nil)
	if created.Local != local || created.Remote != netip.AddrPortFrom(srvWiFi, port) || created.Token == 0 ||
		created.Family != 2 || created.ServerSide || created.LocalID != 0 {
		t.Errorf("created = %v, want %v -> %v:%d, family inet, client side, local id 0", created, local, srvWiFi, port)
	}
	token := created.Token
	est := waitEvent(t, cliEv, pathmgr.EventEstablished, nil)
	if est.Token != token || est.Local != local {
		t.Errorf("established = %v, want token %d from %v", est, token, local)
	}
	srvCreated := waitEvent(t, srvEv, pathmgr.EventCreated, nil)
	if !srvCreated.ServerSide || srvCreated.Local.Port() != port || srvCreated.Remote.Port() != local.Port() {
		t.Errorf("server created = %v, want server side, %d <- %d", srvCreated, port, local.Port())
	}

	// sub_established: the kernel PM's subflow endpoint on lte.
	sub := waitEvent(t, cliEv, pathmgr.EventSubEstablished, nil)
	lteIdx := ifindex(t, p.cli, "lte0")
	if sub.Token != token || sub.Local.Addr() != cliLTE || sub.LocalID != 5 || sub.RemoteID != 0 ||
		sub.Remote != netip.AddrPortFrom(srvWiFi, port) || sub.IfIndex != lteIdx || sub.Backup || sub.HasError() {
		t.Errorf("sub_established = %v; want token %d, %v id 5 -> %v:%d id 0, ifindex %d (lte0), no backup, no error", sub, token, cliLTE, srvWiFi, port, lteIdx)
	}
	// The same subflow (port included) is in the inventory.
	inv := openInventory(t, p.cli)
	conns := waitConns(t, inv, "the lte subflow", func(cs []pathmgr.Connection) bool {
		return len(cs) == 1 && len(cs[0].Subflows) == 2
	})
	if conns[0].Token != token || conns[0].Subflows[1].Local != sub.Local {
		t.Errorf("inventory %#x %v, events say token %#x subflow %v", conns[0].Token, conns[0].Subflows[1].Local, token, sub.Local)
	}

	// sub_priority: marking the endpoint backup sends MP_PRIO; the peer reports it.
	p.cli.RunT(t, "ip", "mptcp", "endpoint", "change", "id", "5", "backup")
	prio := waitEvent(t, srvEv, pathmgr.EventSubPriority, func(e pathmgr.Event) bool { return e.Remote.Addr().Unmap() == cliLTE })
	if !prio.Backup || prio.Token != srvCreated.Token || prio.RemoteID != 5 {
		t.Errorf("server sub_priority = %v, want backup for the subflow from %v (rem id 5) of token %d", prio, cliLTE, srvCreated.Token)
	}

	// announced / removed: a signal endpoint on the server.
	p.srv.RunT(t, "ip", "mptcp", "endpoint", "add", srvLTE.String(), "dev", "lte1", "id", "7", "signal")
	ann := waitEvent(t, cliEv, pathmgr.EventAnnounced, nil)
	if ann.Token != token || ann.RemoteID != 7 || ann.Remote.Addr() != srvLTE {
		t.Errorf("announced = %v, want token %d, rem id 7, %v", ann, token, srvLTE)
	}
	p.srv.RunT(t, "ip", "mptcp", "endpoint", "delete", "id", "7")
	rm := waitEvent(t, cliEv, pathmgr.EventRemoved, nil)
	if rm.Token != token || rm.RemoteID != 7 {
		t.Errorf("removed = %v, want token %d rem id 7", rm, token)
	}

	// sub_closed: deleting the subflow endpoint closes the lte subflow.
	p.cli.RunT(t, "ip", "mptcp", "endpoint", "delete", "id", "5")
	sc := waitEvent(t, cliEv, pathmgr.EventSubClosed, func(e pathmgr.Event) bool { return e.Local == sub.Local })
	if sc.Token != token || sc.LocalID != 5 || sc.Remote != sub.Remote {
		t.Errorf("sub_closed = %v, want token %d, local id 5, %v -> %v", sc, token, sub.Local, sub.Remote)
	}

	// closed.
	conn.Close()
	waitEvent(t, cliEv, pathmgr.EventClosed, func(e pathmgr.Event) bool { return e.Token == token })

	// listener_closed, for a listener of our own.
	var ln net.Listener
	if err := p.srv.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp4", netip.AddrPortFrom(srvLTE, port+1).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	lcl := waitEvent(t, srvEv, pathmgr.EventListenerClosed, func(e pathmgr.Event) bool { return e.Local.Port() == port+1 })
	if lcl.Local.Addr() != srvLTE || lcl.Family != 2 {
		t.Errorf("listener_closed = %v, want %v:%d inet", lcl, srvLTE, port+1)
	}
}

// TestIntegrationIPv6 runs a connection over IPv6 only: the events carry
// saddr6/daddr6 (family inet6) and the inventory lists the AF_INET6
// connection and its lte subflow, checked against ss -Mtni.
func TestIntegrationIPv6(t *testing.T) {
	cli, srv := testbed.NetNST(t, "cli6"), testbed.NetNST(t, "srv6")
	testbed.ConnectT(t, cli, srv,
		testbed.VethLink{A: "wifi0", B: "wifi1", AAddr: "fd00:91::1/64", BAddr: "fd00:91::2/64"},
		testbed.VethLink{A: "lte0", B: "lte1", AAddr: "fd00:92::1/64", BAddr: "fd00:92::2/64"})
	for _, ns := range []*testbed.NetNS{cli, srv} {
		ns.RunT(t, "ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	}
	// IPv6 has no fallback for a socket bound to a device without a route
	// there: give lte0 a (less preferred) route to the server's wifi side.
	cli.RunT(t, "ip", "-6", "route", "add", "fd00:91::/64", "via", "fd00:92::2", "dev", "lte0", "metric", "2048")
	cli.RunT(t, "ip", "mptcp", "endpoint", "add", "fd00:92::1", "dev", "lte0", "id", "4", "subflow")
	cliEv := events(t, cli)
	const port = 10650
	srvAddr := netip.AddrPortFrom(netip.MustParseAddr("fd00:91::2"), port)
	testbed.ServeT(t, srv, "tcp6", srvAddr.String(), true, testbed.Sink)
	conn := testbed.DialMPTCPT(t, cli, "tcp6", "fd00:91::1", srvAddr.String())
	testbed.KeepSending(t, conn)

	created := waitEvent(t, cliEv, pathmgr.EventCreated, nil)
	if created.Family != 10 || !created.Has(pathmgr.AttrSourceAddr6) || created.Remote != srvAddr {
		t.Errorf("created = %v (family %d), want inet6 with saddr6, to %v", created, created.Family, srvAddr)
	}
	sub := waitEvent(t, cliEv, pathmgr.EventSubEstablished, nil)
	if sub.Local.Addr() != netip.MustParseAddr("fd00:92::1") || sub.LocalID != 4 || sub.Token != created.Token {
		t.Errorf("sub_established = %v, want from fd00:92::1 id 4, token %d", sub, created.Token)
	}
	inv := openInventory(t, cli)
	conns := waitConns(t, inv, "IPv6 connection with two subflows", func(cs []pathmgr.Connection) bool {
		return len(cs) == 1 && len(cs[0].Subflows) == 2
	})
	c := conns[0]
	if c.Token != created.Token || c.Local != created.Local || c.Subflows[1].Local != sub.Local || c.Subflows[1].IfName != "lte0" {
		t.Errorf("inventory %#x %v, lte subflow %v dev %s; events say %#x %v, %v", c.Token, c.Local, c.Subflows[1].Local, c.Subflows[1].IfName, created.Token, created.Local, sub.Local)
	}
	tokens, sfs := ssMPTCP(t, cli)
	if len(tokens) != 1 || tokens[0] != c.Token || len(sfs) != 2 {
		t.Errorf("ss -Mtni: tokens %x, %d subflows; want [%x], 2", tokens, len(sfs), c.Token)
	}
}
