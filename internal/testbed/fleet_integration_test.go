//go:build linux

package testbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fleetPort is where every node's test server listens.
const fleetPort = 7000

// pyRun runs the Python clients (StartPyClients) in n: count connections
// to dst:fleetPort, each echoing 512 bytes; with hold they go on doing so
// every 200 ms until stop, which fails t if the client or any connection
// failed. Without hold they have ended when pyRun returns.
func pyRun(t *testing.T, n *NetNS, dst netip.Addr, count, proto int, src string, hold bool) (stop func()) {
	t.Helper()
	mode := "once"
	if hold {
		mode = "hold"
	}
	p := StartPyClients(t, n, PyClientsSpec{Dst: dst, Port: fleetPort, Count: count, MPTCP: proto == 262, Src: src, Mode: mode})
	return func() {
		t.Helper()
		if f := p.Stop().Failed(); len(f) > 0 {
			t.Errorf("python clients to %s: %d connections failed, first %+v", dst, len(f), f[0])
		}
	}
}

// serveNodes runs an MPTCP echo server on every node (all addresses, port
// fleetPort) and returns the number of connections each accepted.
func serveNodes(t *testing.T, b *Bed) []*atomic.Int64 {
	t.Helper()
	var accepted []*atomic.Int64
	for _, n := range b.Nodes {
		cnt := new(atomic.Int64)
		accepted = append(accepted, cnt)
		ServeT(t, n.NetNS, "tcp", ":"+strconv.Itoa(fleetPort), true, func(c net.Conn) {
			cnt.Add(1)
			Echo(c)
		})
	}
	return accepted
}

func flowsT(t *testing.T, b *Bed) map[int]uint64 {
	t.Helper()
	f, err := b.BalancerFlows()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestIntegrationFleetSpread: 200 TCP connections from a Python client to
// the service address are spread over all 3 nodes (every node gets some),
// and the balancer's nft counters agree with what each node accepted.
// Out of the balancer, a node gets no new flow; back in, it does again.
func TestIntegrationFleetSpread(t *testing.T) {
	for _, balance := range []string{BalanceJHash, BalanceNumgen} {
		t.Run(balance, func(t *testing.T) {
			b := UpT(t, Spec{ClientRouting: true, Proxies: 3, Balance: balance})
			accepted := serveNodes(t, b)
			pyRun(t, b.Client, b.ProxyAddr, 200, 6, "", false)
			flows := flowsT(t, b)
			var sum uint64
			for i, n := range b.Nodes {
				got := uint64(accepted[i].Load())
				t.Logf("node%d: %d flows (nft), %d accepted", n.Index, flows[n.Index], got)
				if got == 0 {
					t.Errorf("node%d got no connection of 200", n.Index)
				}
				if flows[n.Index] != got {
					t.Errorf("node%d: nft counted %d flows, the node accepted %d", n.Index, flows[n.Index], got)
				}
				if balance == BalanceNumgen && (got < 66 || got > 67) {
					t.Errorf("node%d: round robin gave %d of 200, want 66 or 67", n.Index, got)
				}
				sum += got
			}
			if sum != 200 {
				t.Errorf("nodes accepted %d connections, want 200", sum)
			}

			if err := b.RemoveFromBalancer(2); err != nil {
				t.Fatal(err)
			}
			if in := b.InBalancer(); fmt.Sprint(in) != "[1 3]" {
				t.Errorf("InBalancer = %v after removing node 2", in)
			}
			pyRun(t, b.Client, b.ProxyAddr, 60, 6, "", false)
			after := flowsT(t, b)
			if after[2] != flows[2] || accepted[1].Load() != int64(flows[2]) {
				t.Errorf("node2 out of the balancer got new flows: nft %d -> %d", flows[2], after[2])
			}
			if got := after[1] + after[3] - flows[1] - flows[3]; got != 60 {
				t.Errorf("nodes 1 and 3 got %d of the 60 new flows", got)
			}
			if err := b.AddToBalancer(2); err != nil {
				t.Fatal(err)
			}
			pyRun(t, b.Client, b.ProxyAddr, 60, 6, "", false)
			if again := flowsT(t, b); again[2] == after[2] {
				t.Errorf("node2 back in the balancer got none of 60 new flows: %v", again)
			}
		})
	}
}

// TestIntegrationFleetReachability: the service address works from both
// client links, IPv4 and IPv6 (a connection bound to the link's address,
// the link's own counters grow), and every node's own address is
// reachable directly from both links, over TCP (MPTCP) and UDP.
func TestIntegrationFleetReachability(t *testing.T) {
	b := UpT(t, Spec{ClientRouting: true, Proxies: 3})
	serveNodes(t, b)
	for _, n := range b.Nodes {
		echo(t, n.NetNS)
	}
	for _, l := range Links {
		_, src, src6, _, _, _ := b.linkPlan(l)
		for _, p := range []struct{ src, dst netip.Addr }{{src, b.ProxyAddr}, {src6, b.ProxyAddr6}} {
			c0, err := b.Counters()
			if err != nil {
				t.Fatal(err)
			}
			pyRun(t, b.Client, p.dst, 20, 262, p.src.String(), false)
			c1, err := b.Counters()
			if err != nil {
				t.Fatal(err)
			}
			// 20 x 512 bytes each way, plus headers.
			if sent := c1[l].TxBytes - c0[l].TxBytes; sent < 20*512 {
				t.Errorf("%s -> %s: %s sent only %d bytes", p.src, p.dst, l, sent)
			}
		}
		for _, n := range b.Nodes {
			for _, p := range []struct{ src, dst netip.Addr }{{src, n.Addr}, {src6, n.Addr6}} {
				pyRun(t, b.Client, p.dst, 1, 262, p.src.String(), false)
				mustReach(t, b, b.Client, p.src.String(), p.dst)
			}
		}
	}
	// The node addresses bypass the balancer: only the service address
	// is DNATed (1 link x 2 families x 20 connections = 40 per link).
	var sum uint64
	for _, f := range flowsT(t, b) {
		sum += f
	}
	if sum != 80 {
		t.Errorf("the balancer counted %d flows, want the 80 to the service address", sum)
	}
}

// TestIntegrationFleetCloseLeavesNothing: Close removes every namespace
// of the fleet (and with them veths and the balancer's table), and the
// root namespace's links and nftables ruleset are as before.
func TestIntegrationFleetCloseLeavesNothing(t *testing.T) {
	NeedRoot(t)
	root0 := RootStateT(t)
	b, err := Up(context.Background(), Spec{ClientRouting: true, Proxies: 3, WiFiRate: "50mbit"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range b.Namespaces() {
		names = append(names, n.Name)
	}
	if len(names) != 6 {
		t.Errorf("namespaces %v, want client, balancer, origin and 3 nodes", names)
	}
	if out := b.Proxy.MustRun("nft", "list", "table", "inet", LBTable); !strings.Contains(out, "chain node3") {
		t.Errorf("balancer table:\n%s", out)
	}
	closeLeavesNone(t, b, names)
	if root1 := RootStateT(t); root1 != root0 {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", root0, root1)
	}
}

// clientLTESubflows is LTESubflows for t.
func clientLTESubflows(t *testing.T, b *Bed) map[netip.Addr]int {
	t.Helper()
	got, err := b.LTESubflows()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// mptcpConns is MPTCPConns for t.
func mptcpConns(t *testing.T, n *NetNS) int {
	t.Helper()
	c, err := n.MPTCPConns()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func countersT(t *testing.T, n *NetNS) map[string]uint64 {
	t.Helper()
	c, err := n.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestIntegrationFleetJoinsKernelPM is the problem of issue 10 shown with
// the kernel's own path manager on the nodes, 200 MPTCP connections from a
// Python client through the service address of 3 nodes.
//
// With the "C" flag on every node and a signal endpoint for each node's
// own address, the client never joins the service address: every
// connection gets its lte subflow to the address of the node that holds
// it (a join succeeds only where the token is), and no node sees a join
// for a token it does not have (MPTcpExtMPJoinNoTokenFound 0).
//
// Without them, a client that joins the service address has its joins
// hashed by the balancer like any flow: most land on a node without the
// connection, which refuses them, and the counters show it.
func TestIntegrationFleetJoinsKernelPM(t *testing.T) {
	const conns = 200
	t.Run("node addresses and C flag", func(t *testing.T) {
		b := UpT(t, Spec{ClientRouting: true, Proxies: 3})
		if err := b.EnableFleetPM(FleetPM{Signal: true, RefuseInitial: true}); err != nil {
			t.Fatal(err)
		}
		serveNodes(t, b)
		stop := pyRun(t, b.Client, b.ProxyAddr, conns, 262, "", true)
		var sub map[netip.Addr]int
		Eventually(t, "an lte subflow for every connection", func() (bool, string) {
			sub = clientLTESubflows(t, b)
			n := 0
			for _, c := range sub {
				n += c
			}
			return n == conns, fmt.Sprintf("client lte subflows by remote address: %v", sub)
		})
		if sub[b.ProxyAddr] != 0 {
			t.Errorf("%d lte subflows went to the service address", sub[b.ProxyAddr])
		}
		flows := flowsT(t, b)
		for _, n := range b.Nodes {
			c := countersT(t, n.NetNS)
			held := mptcpConns(t, n.NetNS)
			t.Logf("node%d: %d connections (ss -M), %d balanced flows, %d lte subflows to %s, join SYN %d ACK %d, no token %d",
				n.Index, held, flows[n.Index], sub[n.Addr], n.Addr, c["MPTcpExtMPJoinSynRx"], c["MPTcpExtMPJoinAckRx"], c["MPTcpExtMPJoinNoTokenFound"])
			if c["MPTcpExtMPJoinNoTokenFound"] != 0 {
				t.Errorf("node%d: MPTcpExtMPJoinNoTokenFound %d, want 0", n.Index, c["MPTcpExtMPJoinNoTokenFound"])
			}
			// Every connection the balancer gave the node, and only
			// those, got its join to the node's own address.
			if uint64(sub[n.Addr]) != flows[n.Index] || uint64(held) != flows[n.Index] || c["MPTcpExtMPJoinAckRx"] != flows[n.Index] {
				t.Errorf("node%d: %d balanced connections, %d held, %d lte subflows to its address, %d joins completed: want all equal",
					n.Index, flows[n.Index], held, sub[n.Addr], c["MPTcpExtMPJoinAckRx"])
			}
		}
		stop()
	})
	t.Run("joins to the service address", func(t *testing.T) {
		b := UpT(t, Spec{ClientRouting: true, Proxies: 3})
		if err := b.EnableFleetPM(FleetPM{ClientFlags: []string{"subflow"}}); err != nil {
			t.Fatal(err)
		}
		serveNodes(t, b)
		stop := pyRun(t, b.Client, b.ProxyAddr, conns, 262, "", true)
		var syn, ack, noToken uint64
		Eventually(t, "every join answered", func() (bool, string) {
			syn, ack, noToken = 0, 0, 0
			for _, n := range b.Nodes {
				c := countersT(t, n.NetNS)
				syn += c["MPTcpExtMPJoinSynRx"]
				ack += c["MPTcpExtMPJoinAckRx"]
				noToken += c["MPTcpExtMPJoinNoTokenFound"]
			}
			return syn >= conns && ack+noToken == syn, fmt.Sprintf("join SYN %d, completed %d, no token %d", syn, ack, noToken)
		})
		sub := clientLTESubflows(t, b)
		t.Logf("%d joins to the service address: %d completed, %d refused (no token); client lte subflows %v", syn, ack, noToken, sub)
		if noToken == 0 {
			t.Errorf("no join landed on a wrong node of 3 (%d joins): the balancer does not spread joins", syn)
		}
		if sub[b.ProxyAddr] >= conns {
			t.Errorf("every connection got its lte subflow (%d) although %d joins were refused", sub[b.ProxyAddr], noToken)
		}
		stop()
	})
}

// TestIntegrationFleetNodeAddrIsLocal: when the balancer DNATs to the
// node's own address (kube-proxy with hostNetwork pods), that address is
// every connection's local address, and the kernel does not announce it
// (it is the connection's id 0): no connection gets an lte subflow. The
// same address with another port is announced, the kernel listens on the
// port, and every connection gets its lte subflow on its own node. What
// a node announces must differ from the connection's local address:port.
func TestIntegrationFleetNodeAddrIsLocal(t *testing.T) {
	const conns = 30
	for _, c := range []struct {
		name string
		port uint16
		want int
	}{{"same address and port", 0, 0}, {"another port", fleetPort + 1, conns}} {
		t.Run(c.name, func(t *testing.T) {
			b := UpT(t, Spec{ClientRouting: true, Proxies: 3, DNATToNodeAddr: true})
			if err := b.EnableFleetPM(FleetPM{Signal: true, SignalPort: c.port, RefuseInitial: true}); err != nil {
				t.Fatal(err)
			}
			serveNodes(t, b)
			stop := pyRun(t, b.Client, b.ProxyAddr, conns, 262, "", true)
			var got int
			var sub map[netip.Addr]int
			Eventually(t, "every connection fully established", func() (bool, string) {
				held := 0
				for _, n := range b.Nodes {
					held += mptcpConns(t, n.NetNS)
				}
				sub = clientLTESubflows(t, b)
				got = 0
				for _, x := range sub {
					got += x
				}
				return held == conns && got >= c.want, fmt.Sprintf("%d connections on the nodes, lte subflows %v", held, sub)
			})
			// Give the PM a moment to announce (it does so at once
			// when it does at all).
			time.Sleep(300 * time.Millisecond)
			sub = clientLTESubflows(t, b)
			got = 0
			for a, x := range sub {
				got += x
				if a == b.ProxyAddr {
					t.Errorf("%d lte subflows to the service address despite the C flag", x)
				}
			}
			var announced uint64
			for _, n := range b.Nodes {
				announced += countersT(t, n.NetNS)["MPTcpExtAddAddrTx"]
			}
			t.Logf("port %d: %d ADD_ADDR sent, lte subflows %v", c.port, announced, sub)
			if got != c.want {
				t.Errorf("%d lte subflows, want %d", got, c.want)
			}
			stop()
		})
	}
}

// TestIntegrationFleetKillNode: KillNode kills the processes of one node
// (ip netns pids is the oracle): its echo server dies and the client's
// connections to it fail with a reset at once, while the connections to
// the other nodes go on echoing every byte.
func TestIntegrationFleetKillNode(t *testing.T) {
	b := UpT(t, Spec{ClientRouting: true, Proxies: 2, Balance: BalanceNumgen})
	for _, n := range b.Nodes {
		StartEchoServer(t, n.NetNS, fleetPort)
	}
	p := StartPyClients(t, b.Client, PyClientsSpec{Dst: b.ProxyAddr, Port: fleetPort, Count: 10, MPTCP: true, Mode: "stream", Chunk: 8192, Interval: 50 * time.Millisecond})
	killed, err := b.KillNode(2)
	if err != nil || len(killed) == 0 {
		t.Fatalf("KillNode(2) = %v, %v", killed, err)
	}
	// What is left in the namespace is dead (a zombie until its parent,
	// this test, reaps it).
	Eventually(t, "no live process in node2", func() (bool, string) {
		out := b.Nodes[1].NetNS.MustRun("ip", "netns", "pids", b.Nodes[1].Name())
		for _, pid := range strings.Fields(out) {
			if st, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
				return false, string(st)
			}
		}
		return true, ""
	})
	var r ClientsReport
	Eventually(t, "node2's 5 connections failed", func() (bool, string) {
		r, err = p.Report()
		if err != nil {
			t.Fatal(err)
		}
		return len(r.Failed()) == 5, fmt.Sprintf("%+v", r.Failed())
	})
	time.Sleep(300 * time.Millisecond)
	r = p.Stop()
	for _, c := range r.Conns {
		if c.Err != "" && !strings.Contains(c.Err, "Reset") && !strings.Contains(c.Err, "closed by the server") {
			t.Errorf("connection %d failed with %q, want a reset", c.Index, c.Err)
		}
		if c.Err == "" && (c.Received != c.Sent || c.Sent < 8192*2) {
			t.Errorf("surviving connection %d: sent %d, echoed %d", c.Index, c.Sent, c.Received)
		}
	}
	if len(r.Failed()) != 5 {
		t.Errorf("%d connections failed, want node2's 5 (numgen: every other one)", len(r.Failed()))
	}
}
