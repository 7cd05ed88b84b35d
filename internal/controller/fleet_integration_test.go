//go:build linux

package controller_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// The daemon on a fleet (docs/fleet.md): nodes behind an nftables
// balancer run `side: server` (announce their own address, refuse joins to
// the initial address, listen behind an announced port), the client runs
// the userspace PM with peer_addresses: use. Oracles: the client's and the
// nodes' ss, the nodes' nstat MPTCP counters, the balancer's nft counters,
// Python clients and echo servers.

// fleetAppPort is where each node's echo server listens: the service port.
const fleetAppPort = 7000

// fleetNodePolicy is a node's policy: path manager, initial_address_joins
// and the announce entry.
const fleetNodePolicy = `side: server
path_manager: %s
initial_address_joins: %s
routing: off
interfaces:
  - name: ` + testbed.NodeUplinkIf + `
    role: ethernet
announce:
  - address: %s
%smetrics: {listen: ""}
status_socket: ""
`

// fleetClientPolicy: the client's daemon, routing left to the bed.
const fleetClientPolicy = `side: client
path_manager: userspace
peer_addresses: use
routing: off
interfaces:
  - name: ` + testbed.WiFiIf + `
    role: wifi
  - name: ` + testbed.LTEIf + `
    role: lte
metrics: {listen: ""}
status_socket: ""
`

// fleetNodes describes what the nodes run.
type fleetNodes struct {
	pm     string // userspace | kernel
	refuse bool   // initial_address_joins: refuse
	port   uint16 // announce[].port, 0 for none
}

func (f fleetNodes) policy(t testing.TB, n *testbed.Node) *policy.Policy {
	t.Helper()
	joins, port := "allow", ""
	if f.refuse {
		joins = "refuse"
	}
	if f.port != 0 {
		port = fmt.Sprintf("    port: %d\n", f.port)
	}
	p, err := policy.Parse([]byte(fmt.Sprintf(fleetNodePolicy, f.pm, joins, n.Addr, port)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// infoLogger logs to the test at info level: 200 connections at debug
// level would drown the log.
func infoLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startNode runs node n's daemon; the returned stop ends it.
func (f fleetNodes) startNode(t testing.TB, n *testbed.Node) func() {
	t.Helper()
	_, stop := runController(t, controller.Config{Policy: f.policy(t, n), NetNS: n.Name(), Logger: infoLogger(t)})
	return stop
}

// startFleet builds a fleet of proxies nodes, an echo server on each,
// starts the nodes' daemons and the client's, and returns the bed and the
// nodes' stop functions (by index - 1).
func startFleet(t testing.TB, spec testbed.Spec, f fleetNodes) (*testbed.Bed, []func(), *controller.Controller) {
	t.Helper()
	spec.ClientRouting = true
	b := testbed.UpT(t, spec)
	var stops []func()
	for _, n := range b.Nodes {
		testbed.StartEchoServer(t, n.NetNS, fleetAppPort)
		stops = append(stops, f.startNode(t, n))
	}
	cp, err := policy.Parse([]byte(fleetClientPolicy))
	if err != nil {
		t.Fatal(err)
	}
	client, _ := runController(t, controller.Config{Policy: cp, NetNS: b.Client.Name, Logger: infoLogger(t)})
	return b, stops, client
}

// eventually polls cond every 100 ms for up to d, failing t with what and
// the last state when it does not hold.
func eventually(t testing.TB, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last state:\n%s", what, d, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fleetPaths is where the client's connections are, by two oracles.
type fleetPaths struct {
	conns []testbed.ClientConn
	// byPort maps the client's wifi source port to the node holding the
	// connection (the nodes' ss).
	byPort map[uint16]int
	// both counts the connections with an lte subflow to the node that
	// holds them; elsewhere lists those with one to another node.
	both      int
	elsewhere []string
}

func readPaths(t testing.TB, b *testbed.Bed) fleetPaths {
	t.Helper()
	var p fleetPaths
	var err error
	if p.conns, err = b.ClientConns(); err != nil {
		t.Fatal(err)
	}
	if p.byPort, err = b.NodeOfClientPorts(b.WiFiAddr); err != nil {
		t.Fatal(err)
	}
	for _, c := range p.conns {
		in, ok := c.Initial(b)
		if !ok || !c.From(b.LTEAddr) {
			continue
		}
		if got, holder := c.Node(b), p.byPort[in.Local.Port()]; got == holder {
			p.both++
		} else {
			p.elsewhere = append(p.elsewhere, fmt.Sprintf("%v: lte to node%d, held by node%d", c.Subflows, got, holder))
		}
	}
	return p
}

// joinCounters sums the nodes' MPTCP join counters by name.
func joinCounters(t testing.TB, b *testbed.Bed) map[string]uint64 {
	t.Helper()
	sum := map[string]uint64{}
	for _, n := range b.Nodes {
		for k, v := range countersOf(t, n.NetNS) {
			sum[k] += v
		}
	}
	return sum
}

// TestIntegrationFleetDaemonJoins: 200 MPTCP connections from a Python
// client through the service address of 3 nodes, each node running the
// daemon with its own address announced and initial_address_joins:
// refuse, the client's daemon with peer_addresses: use. Every connection
// gets its lte subflow, to the address of the node that holds it (client
// ss against the nodes' ss), the client makes exactly one join per
// connection (MPTcpExtMPJoinSynTx) and none passes the balancer, and no
// node refuses a join (MPTcpExtMPJoinNoTokenFound, MismatchPortSynRx 0);
// per node the connections it holds, the flows the balancer sent it and
// the joins it completed are the same number. Both path managers on the
// nodes; the balancer DNATing to a backend address, or to the node address
// itself (kube-proxy's host network: the node announces it with port 7001,
// behind which the daemon, or the kernel, listens).
//
// The same with initial_address_joins: allow shows what the C flag
// prevents: the client first joins the service address, the balancer
// sends most of those joins to nodes without the connection, and they are
// refused.
func TestIntegrationFleetDaemonJoins(t *testing.T) {
	const conns = 200
	for _, tc := range []struct {
		name   string
		nodes  fleetNodes
		toNode bool // the balancer DNATs to the node address
	}{
		{"userspace", fleetNodes{pm: "userspace", refuse: true}, false},
		{"kernel", fleetNodes{pm: "kernel", refuse: true}, false},
		{"userspace node address with port", fleetNodes{pm: "userspace", refuse: true, port: fleetAppPort + 1}, true},
		{"kernel node address with port", fleetNodes{pm: "kernel", refuse: true, port: fleetAppPort + 1}, true},
		{"userspace allow", fleetNodes{pm: "userspace"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _, _ := startFleet(t, testbed.Spec{Proxies: 3, DNATToNodeAddr: tc.toNode}, tc.nodes)
			cli0 := countersOf(t, b.Client)
			p := testbed.StartPyClients(t, b.Client, testbed.PyClientsSpec{Dst: b.ProxyAddr, Port: fleetAppPort, Count: conns, MPTCP: true})
			if !tc.nodes.refuse {
				var c map[string]uint64
				eventually(t, "joins refused for an unknown token", 30*time.Second, func() (bool, string) {
					c = joinCounters(t, b)
					return c["MPTcpExtMPJoinNoTokenFound"] > 0, fmt.Sprint(c)
				})
				flows := uint64(0)
				for _, f := range flowsOf(t, b) {
					flows += f
				}
				t.Logf("without the C flag: %d joins refused for an unknown token, %d completed; the balancer counted %d flows for %d connections",
					c["MPTcpExtMPJoinNoTokenFound"], c["MPTcpExtMPJoinAckRx"], flows, conns)
				if flows <= conns {
					t.Errorf("the balancer counted %d flows for %d connections: no join went through it", flows, conns)
				}
				p.Stop()
				return
			}
			var paths fleetPaths
			eventually(t, "every connection with its lte subflow on its node", 30*time.Second, func() (bool, string) {
				paths = readPaths(t, b)
				return paths.both == conns, fmt.Sprintf("%d of %d connections with lte to their node (%d seen); elsewhere %v", paths.both, conns, len(paths.conns), paths.elsewhere)
			})
			if len(paths.elsewhere) > 0 {
				t.Errorf("lte subflows to a node that does not hold the connection: %v", paths.elsewhere)
			}
			sub, err := b.LTESubflows()
			if err != nil {
				t.Fatal(err)
			}
			if sub[b.ProxyAddr] != 0 {
				t.Errorf("%d lte subflows to the service address", sub[b.ProxyAddr])
			}
			cli := countersOf(t, b.Client)
			if tx := cli["MPTcpExtMPJoinSynTx"] - cli0["MPTcpExtMPJoinSynTx"]; tx != conns {
				t.Errorf("the client sent %d joins for %d connections, want one each", tx, conns)
			}
			flows := flowsOf(t, b)
			var sum uint64
			for _, n := range b.Nodes {
				c := countersOf(t, n.NetNS)
				held, err := n.NetNS.MPTCPConns()
				if err != nil {
					t.Fatal(err)
				}
				sum += flows[n.Index]
				t.Logf("node%d: %d connections (ss -M), %d balanced flows, join SYN %d ACK %d (to another port %d), no token %d, port mismatch %d",
					n.Index, held, flows[n.Index], c["MPTcpExtMPJoinSynRx"], c["MPTcpExtMPJoinAckRx"], c["MPTcpExtMPJoinPortSynRx"], c["MPTcpExtMPJoinNoTokenFound"], c["MPTcpExtMismatchPortSynRx"])
				if c["MPTcpExtMPJoinNoTokenFound"] != 0 || c["MPTcpExtMismatchPortSynRx"] != 0 {
					t.Errorf("node%d refused joins: no token %d, port mismatch %d", n.Index, c["MPTcpExtMPJoinNoTokenFound"], c["MPTcpExtMismatchPortSynRx"])
				}
				if uint64(held) != flows[n.Index] || c["MPTcpExtMPJoinAckRx"] != flows[n.Index] {
					t.Errorf("node%d: %d balanced flows, %d connections held, %d joins completed: want all equal", n.Index, flows[n.Index], held, c["MPTcpExtMPJoinAckRx"])
				}
				if tc.nodes.port != 0 && c["MPTcpExtMPJoinPortSynRx"] != flows[n.Index] {
					t.Errorf("node%d: %d joins to port %d, want %d", n.Index, c["MPTcpExtMPJoinPortSynRx"], tc.nodes.port, flows[n.Index])
				}
			}
			if sum != conns {
				t.Errorf("the balancer counted %d flows for %d connections", sum, conns)
			}
			if f := p.Stop().Failed(); len(f) > 0 {
				t.Errorf("%d connections failed, first %+v", len(f), f[0])
			}
		})
	}
}

func flowsOf(t testing.TB, b *testbed.Bed) map[int]uint64 {
	t.Helper()
	f, err := b.BalancerFlows()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// nodeOf maps each connection of a report to the node holding it, by its
// wifi source port.
func nodeOf(r testbed.ClientsReport, byPort map[uint16]int) map[int]int {
	out := map[int]int{}
	for _, c := range r.Conns {
		out[c.Index] = byPort[c.LocalPort]
	}
	return out
}

// TestIntegrationFleetDaemonNodeKilled: 30 connections stream data
// through 3 nodes (round robin: 10 each), every one with its lte subflow
// on its node. Node 2 dies (every process in it killed, its daemon
// stopped): its connections end with a reset the client sees at once (no
// hang: within 5 s, measured by the Python client), the other nodes'
// connections go on and lose no byte (every byte echoed back and checked);
// the balancer drops node 2, and 30 new connections all go to nodes 1 and
// 3 (nft counters, the nodes' ss), each with its lte subflow on its node.
func TestIntegrationFleetDaemonNodeKilled(t *testing.T) {
	const conns = 30
	b, stops, _ := startFleet(t, testbed.Spec{Proxies: 3, Balance: testbed.BalanceNumgen}, fleetNodes{pm: "userspace", refuse: true})
	p := testbed.StartPyClients(t, b.Client, testbed.PyClientsSpec{Dst: b.ProxyAddr, Port: fleetAppPort, Count: conns, MPTCP: true,
		Mode: "stream", Chunk: 16 << 10, Interval: 50 * time.Millisecond})
	var paths fleetPaths
	eventually(t, "every connection with its lte subflow on its node", 30*time.Second, func() (bool, string) {
		paths = readPaths(t, b)
		return paths.both == conns, fmt.Sprintf("%d of %d; elsewhere %v", paths.both, conns, paths.elsewhere)
	})
	before, err := p.Report()
	if err != nil {
		t.Fatal(err)
	}
	node := nodeOf(before, paths.byPort)

	killedAt := time.Now()
	if pids, err := b.KillNode(2); err != nil || len(pids) == 0 {
		t.Fatalf("KillNode(2) = %v, %v", pids, err)
	}
	stops[1]()
	var r testbed.ClientsReport
	eventually(t, "node2's connections failed", 10*time.Second, func() (bool, string) {
		if r, err = p.Report(); err != nil {
			t.Fatal(err)
		}
		failed := 0
		for _, c := range r.Failed() {
			if node[c.Index] == 2 {
				failed++
			}
		}
		return failed == conns/3, fmt.Sprintf("%d of node2's %d failed: %+v", failed, conns/3, r.Failed())
	})
	var slowest time.Duration
	for _, c := range r.Failed() {
		if node[c.Index] != 2 {
			t.Errorf("connection %d on node%d failed: %s", c.Index, node[c.Index], c.Err)
			continue
		}
		if d := c.ErrAt.Sub(killedAt); d > slowest {
			slowest = d
		}
		if !strings.Contains(c.Err, "ConnectionReset") && !strings.Contains(c.Err, "closed by the server") {
			t.Errorf("connection %d ended with %q, want a reset", c.Index, c.Err)
		}
	}
	t.Logf("node2 killed: its %d connections saw the error after at most %v", conns/3, slowest.Round(time.Millisecond))
	if slowest > 5*time.Second {
		t.Errorf("a connection of the killed node saw its error only after %v", slowest)
	}

	if err := b.RemoveFromBalancer(2); err != nil {
		t.Fatal(err)
	}
	flows0 := flowsOf(t, b)
	time.Sleep(500 * time.Millisecond) // the survivors keep streaming
	final := p.Stop()
	for _, c := range final.Conns {
		if node[c.Index] == 2 {
			continue
		}
		was := before.Conns[c.Index]
		if c.Err != "" || c.Received != c.Sent || c.Sent <= was.Sent {
			t.Errorf("connection %d on node%d: sent %d (before the kill %d), echoed %d, err %q: want every byte back and progress", c.Index, node[c.Index], c.Sent, was.Sent, c.Received, c.Err)
		}
	}

	again := testbed.StartPyClients(t, b.Client, testbed.PyClientsSpec{Dst: b.ProxyAddr, Port: fleetAppPort, Count: conns, MPTCP: true})
	flows1 := flowsOf(t, b)
	if flows1[2] != flows0[2] || flows1[1]+flows1[3]-flows0[1]-flows0[3] != conns {
		t.Errorf("new flows after node2 left the balancer: before %v, after %v", flows0, flows1)
	}
	eventually(t, "every new connection with its lte subflow on its node", 30*time.Second, func() (bool, string) {
		paths = readPaths(t, b)
		return paths.both == conns, fmt.Sprintf("%d of %d; elsewhere %v", paths.both, conns, paths.elsewhere)
	})
	for _, c := range paths.conns {
		if n := c.Node(b); n == 2 {
			t.Errorf("a new connection on the dead node: %v", c.Subflows)
		}
	}
	if f := again.Stop().Failed(); len(f) > 0 {
		t.Errorf("%d new connections failed, first %+v", len(f), f[0])
	}
}

// TestIntegrationFleetDaemonRestart: node 1's daemon is stopped and
// started again while 30 connections run through 3 nodes; the balancer
// DNATs to the node address, so the node announces it with port 7001 and
// the daemon listens there. Node 1's connections keep both paths (the
// same lte subflows in the client's ss, data flowing), the new daemon
// adopts them without withdrawing or announcing again (the client's
// MPTcpExtRmAddr and MPTcpExtAddAddr do not move), and new connections to
// node 1 get their lte subflow through the reopened listener.
func TestIntegrationFleetDaemonRestart(t *testing.T) {
	const conns = 30
	f := fleetNodes{pm: "userspace", refuse: true, port: fleetAppPort + 1}
	b, stops, _ := startFleet(t, testbed.Spec{Proxies: 3, Balance: testbed.BalanceNumgen, DNATToNodeAddr: true}, f)
	p := testbed.StartPyClients(t, b.Client, testbed.PyClientsSpec{Dst: b.ProxyAddr, Port: fleetAppPort, Count: conns, MPTCP: true})
	var paths fleetPaths
	eventually(t, "every connection with its lte subflow on its node", 30*time.Second, func() (bool, string) {
		paths = readPaths(t, b)
		return paths.both == conns, fmt.Sprintf("%d of %d; elsewhere %v", paths.both, conns, paths.elsewhere)
	})
	lteOf := func(ps fleetPaths) map[string][]testbed.Subflow {
		out := map[string][]testbed.Subflow{}
		for _, c := range ps.conns {
			if c.Node(b) == 1 {
				out[c.Inode] = c.Subflows
			}
		}
		return out
	}
	node1 := lteOf(paths)
	if len(node1) != conns/3 {
		t.Fatalf("node1 holds %d connections, want %d (round robin)", len(node1), conns/3)
	}
	c0 := countersOf(t, b.Client)

	stops[0]()
	stops[0] = f.startNode(t, b.Nodes[0])
	time.Sleep(2 * time.Second) // the new daemon's first reconciliations and ticks
	after := lteOf(readPaths(t, b))
	for ino, sfs := range node1 {
		if fmt.Sprint(after[ino]) != fmt.Sprint(sfs) {
			t.Errorf("connection %s on node1: subflows %v before the restart, %v after", ino, sfs, after[ino])
		}
	}
	c1 := countersOf(t, b.Client)
	for _, k := range []string{"MPTcpExtRmAddr", "MPTcpExtAddAddr"} {
		if c1[k] != c0[k] {
			t.Errorf("client %s %d -> %d across node1's daemon restart: want no change (adopted)", k, c0[k], c1[k])
		}
	}
	if r, err := p.Report(); err != nil || len(r.Failed()) > 0 {
		t.Errorf("after the restart: %v, failed %+v", err, r.Failed())
	}

	again := testbed.StartPyClients(t, b.Client, testbed.PyClientsSpec{Dst: b.ProxyAddr, Port: fleetAppPort, Count: conns, MPTCP: true})
	eventually(t, "the old and new connections with their lte subflow on their node", 30*time.Second, func() (bool, string) {
		paths = readPaths(t, b)
		return paths.both == 2*conns, fmt.Sprintf("%d of %d; elsewhere %v", paths.both, 2*conns, paths.elsewhere)
	})
	if c := countersOf(t, b.Nodes[0].NetNS); c["MPTcpExtMismatchPortSynRx"] != 0 {
		t.Errorf("node1 refused %d joins to its port", c["MPTcpExtMismatchPortSynRx"])
	}
	for _, q := range []*testbed.PyClients{p, again} {
		if fl := q.Stop().Failed(); len(fl) > 0 {
			t.Errorf("%d connections failed, first %+v", len(fl), fl[0])
		}
	}
}
