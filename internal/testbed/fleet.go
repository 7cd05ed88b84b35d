//go:build linux

package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The fleet: with Spec.Proxies >= 2 the namespace at the far end of the
// access links is a load balancer (role "lb", Bed.Proxy), not a proxy. It
// owns the service address, routes, and spreads new TCP flows to the
// service address over the proxy nodes with an nftables DNAT per flow, as
// a plain L4 balancer does (it knows nothing of MPTCP). Each node has its
// own address, routed by the balancer, so it is reachable from both client
// links without going through the DNAT.
//
//	cli ── wifi0/lte0 ── lb (10.201.0.1 service, nft DNAT) ── n1 ── lb0 10.201.11.2 (backend)  lo 10.201.100.1 (node address)
//	                      │                                 ── n2 ── lb0 10.201.12.2            lo 10.201.100.2
//	                      └─ org0 ── origin                 ── ...
const (
	// MaxProxies is the largest fleet the plan has addresses for.
	MaxProxies = 16
	// NodeUplinkIf is a node's interface towards the balancer; the
	// balancer's end towards node i is NodeBalancerIf(i).
	NodeUplinkIf = "lb0"
	// LBTable is the nftables table (family inet) of the balancer.
	LBTable = "gp_lb"
)

// Balance names how the balancer picks a node for a new flow.
const (
	// BalanceJHash hashes the flow's source address and port (jhash),
	// as ECMP or a stateless L4 balancer does.
	BalanceJHash = "jhash"
	// BalanceNumgen takes the nodes in turn (numgen inc), round robin.
	BalanceNumgen = "numgen"
)

// Node is one proxy node of a fleet.
type Node struct {
	// Index counts from 1.
	Index int    `json:"index"`
	NetNS *NetNS `json:"netns"`
	// Addr and Addr6 are the node's own address (on its loopback), routed
	// by the balancer: what a node announces for joins.
	Addr  netip.Addr `json:"addr"`
	Addr6 netip.Addr `json:"addr6"`
	// Backend and Backend6 are the addresses on the node's uplink that
	// the balancer DNATs the service address to: the local address of
	// every connection that came through the balancer.
	Backend  netip.Addr `json:"backend"`
	Backend6 netip.Addr `json:"backend6"`
	// Gateway and Gateway6 are the balancer's end of the uplink.
	Gateway  netip.Addr `json:"gateway"`
	Gateway6 netip.Addr `json:"gateway6"`
}

// NodeBalancerIf is the balancer's interface towards node i (1-based).
func NodeBalancerIf(i int) string { return "n" + strconv.Itoa(i) }

// nodeChain is the nftables chain that sends a flow to node i.
func nodeChain(i int) string { return "node" + strconv.Itoa(i) }

func newNode(i int, ns *NetNS) *Node {
	return &Node{
		Index: i, NetNS: ns,
		Addr:     netip.AddrFrom4([4]byte{10, 201, 100, byte(i)}),
		Addr6:    netip.MustParseAddr(fmt.Sprintf("fd00:201:100::%x", i)),
		Backend:  netip.AddrFrom4([4]byte{10, 201, byte(10 + i), 2}),
		Backend6: netip.MustParseAddr(fmt.Sprintf("fd00:201:%d::2", 10+i)),
		Gateway:  netip.AddrFrom4([4]byte{10, 201, byte(10 + i), 1}),
		Gateway6: netip.MustParseAddr(fmt.Sprintf("fd00:201:%d::1", 10+i)),
	}
}

// Run runs a command in the node's namespace (ss -M, nstat, ip mptcp ...).
func (n *Node) Run(args ...string) (string, error) { return n.NetNS.Run(args...) }

// Name is the node's namespace name.
func (n *Node) Name() string { return n.NetNS.Name }

// IsFleet reports whether the bed is a fleet (Spec.Proxies >= 2).
func (b *Bed) IsFleet() bool { return len(b.Nodes) > 0 }

// Balancer is the fleet's load balancer namespace (Bed.Proxy), nil for a
// single-proxy bed.
func (b *Bed) Balancer() *NetNS {
	if !b.IsFleet() {
		return nil
	}
	return b.Proxy
}

// checkFleetSpec validates the fleet part of a spec.
func checkFleetSpec(spec Spec) error {
	if spec.Proxies < 0 || spec.Proxies > MaxProxies {
		return fmt.Errorf("proxies %d: valid is 1 (a single proxy) to %d (a fleet behind a load balancer)", spec.Proxies, MaxProxies)
	}
	switch spec.Balance {
	case "", BalanceJHash, BalanceNumgen:
	default:
		return fmt.Errorf("balance %q: valid is %q (hash of the flow's source) or %q (round robin)", spec.Balance, BalanceJHash, BalanceNumgen)
	}
	if spec.Balance != "" && spec.Proxies < 2 {
		return fmt.Errorf("balance %q needs a fleet (proxies 2 or more)", spec.Balance)
	}
	if spec.DNATToNodeAddr && spec.Proxies < 2 {
		return fmt.Errorf("dnat_to_node_addr needs a fleet (proxies 2 or more)")
	}
	return nil
}

// buildNodes wires each node to the balancer, gives it its addresses and
// routes, and installs the balancer's ruleset.
func (b *Bed) buildNodes(ctx context.Context) error {
	lb := b.Proxy
	for _, n := range b.Nodes {
		ns, bif := n.NetNS, NodeBalancerIf(n.Index)
		steps := []func() error{
			func() error { return Veth(lb, bif, ns, NodeUplinkIf) },
			func() error { return ns.Sysctl("net.ipv6.conf.all.keep_addr_on_down", "1") },
			func() error { return lb.AddAddr(bif, n.Gateway.String()+"/24") },
			func() error { return lb.AddAddr(bif, n.Gateway6.String()+"/64") },
			func() error { return ns.AddAddr(NodeUplinkIf, n.Backend.String()+"/24") },
			func() error { return ns.AddAddr(NodeUplinkIf, n.Backend6.String()+"/64") },
			func() error { return ns.AddAddr("lo", n.Addr.String()+"/32") },
			func() error { return ns.AddAddr("lo", n.Addr6.String()+"/128") },
			func() error {
				_, err := ns.Run("ip", "route", "add", "default", "via", n.Gateway.String(), "dev", NodeUplinkIf)
				return err
			},
			func() error {
				_, err := ns.Run("ip", "-6", "route", "add", "default", "via", n.Gateway6.String(), "dev", NodeUplinkIf)
				return err
			},
			func() error {
				_, err := lb.Run("ip", "route", "add", n.Addr.String()+"/32", "via", n.Backend.String(), "dev", bif)
				return err
			},
			func() error {
				_, err := lb.Run("ip", "-6", "route", "add", n.Addr6.String()+"/128", "via", n.Backend6.String(), "dev", bif)
				return err
			},
			// As on the single proxy: forwarded IPv6 needs static
			// neighbours on these veths.
			func() error { return staticNeigh(lb, bif, n.Backend6, ns, NodeUplinkIf) },
			func() error { return staticNeigh(ns, NodeUplinkIf, n.Gateway6, lb, bif) },
		}
		for _, s := range steps {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := s(); err != nil {
				return err
			}
		}
	}
	return b.applyBalancer(true)
}

// balanceExpr is the nft expression that picks a slot for a new flow.
func (b *Bed) balanceExpr(family string, slots int) string {
	m := strconv.Itoa(slots)
	if b.Spec.Balance == BalanceNumgen {
		return "numgen inc mod " + m
	}
	return "jhash " + family + " saddr . tcp sport mod " + m
}

// ruleset writes the balancer's nftables ruleset: a chain per node that
// counts and DNATs, and the service chain that spreads new TCP flows to
// the service address over the nodes in the balancer (a vmap from the
// hash or counter to the node chains, as kube-proxy's nftables mode
// does). With no node left, flows to the service address are reset.
// create makes the table; otherwise only the service chain is replaced,
// in one transaction, so the node chains keep their counters.
func (b *Bed) ruleset(create bool) string {
	var s strings.Builder
	if create {
		fmt.Fprintf(&s, "table inet %s {\n", LBTable)
		for _, n := range b.Nodes {
			to, to6 := n.Backend, n.Backend6
			if b.Spec.DNATToNodeAddr {
				to, to6 = n.Addr, n.Addr6
			}
			fmt.Fprintf(&s, "\tchain %s {\n\t\tmeta nfproto ipv4 counter dnat ip to %s\n\t\tmeta nfproto ipv6 counter dnat ip6 to %s\n\t}\n",
				nodeChain(n.Index), to, to6)
		}
		fmt.Fprintf(&s, "\tchain service {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n}\n")
	}
	fmt.Fprintf(&s, "flush chain inet %s service\n", LBTable)
	var in []*Node
	for _, n := range b.Nodes {
		if !b.out[n.Index] {
			in = append(in, n)
		}
	}
	for _, f := range []struct {
		family string
		addr   netip.Addr
	}{{"ip", b.ProxyAddr}, {"ip6", b.ProxyAddr6}} {
		match := fmt.Sprintf("add rule inet %s service %s daddr %s meta l4proto tcp counter", LBTable, f.family, f.addr)
		if len(in) == 0 {
			fmt.Fprintf(&s, "%s reject with tcp reset\n", match)
			continue
		}
		var slots []string
		for i, n := range in {
			slots = append(slots, fmt.Sprintf("%d : goto %s", i, nodeChain(n.Index)))
		}
		fmt.Fprintf(&s, "%s %s vmap { %s }\n", match, b.balanceExpr(f.family, len(in)), strings.Join(slots, ", "))
	}
	return s.String()
}

// applyBalancer loads the ruleset into the balancer namespace.
func (b *Bed) applyBalancer(create bool) error {
	b.mu.Lock()
	rs := b.ruleset(create)
	b.mu.Unlock()
	return nftApply(b.Proxy, rs)
}

// nftApply runs `nft -f -` in n with ruleset as input (one transaction).
func nftApply(n *NetNS, ruleset string) error {
	cmd := n.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("[%s] nft -f: %v: %s\nruleset:\n%s", n.Name, err, bytes.TrimSpace(stderr.Bytes()), ruleset)
	}
	return nil
}

// node returns node i (1-based) or an error naming the valid range.
func (b *Bed) node(i int) (*Node, error) {
	if !b.IsFleet() {
		return nil, fmt.Errorf("node %d: the bed is not a fleet (build it with proxies 2 or more)", i)
	}
	if i < 1 || i > len(b.Nodes) {
		return nil, fmt.Errorf("node %d: valid nodes are 1 to %d", i, len(b.Nodes))
	}
	return b.Nodes[i-1], nil
}

// RemoveFromBalancer takes node i (1-based) out of the balancer, as a
// health check does when a node dies: new flows to the service address go
// to the others (re-spread over the remaining nodes), flows already
// tracked by conntrack stay where they are, and the node's own address
// stays routed.
func (b *Bed) RemoveFromBalancer(i int) error { return b.setInBalancer(i, false) }

// AddToBalancer puts node i back into the balancer.
func (b *Bed) AddToBalancer(i int) error { return b.setInBalancer(i, true) }

func (b *Bed) setInBalancer(i int, in bool) error {
	if _, err := b.node(i); err != nil {
		return err
	}
	b.mu.Lock()
	was := b.out[i]
	if in {
		delete(b.out, i)
	} else {
		b.out[i] = true
	}
	b.mu.Unlock()
	if err := b.applyBalancer(false); err != nil {
		b.mu.Lock()
		b.out[i] = was
		if !was {
			delete(b.out, i)
		}
		b.mu.Unlock()
		return err
	}
	return nil
}

// InBalancer lists the nodes (1-based) the balancer sends new flows to.
func (b *Bed) InBalancer() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var in []int
	for _, n := range b.Nodes {
		if !b.out[n.Index] {
			in = append(in, n.Index)
		}
	}
	return in
}

// BalancerFlows reads the balancer's nftables counters: the new flows
// (IPv4 and IPv6) sent to each node (by index) since the bed was built.
// The nat hook sees only the first packet of a flow, so these count
// connections and join attempts, not packets of them.
func (b *Bed) BalancerFlows() (map[int]uint64, error) {
	if !b.IsFleet() {
		return nil, fmt.Errorf("the bed is not a fleet: it has no balancer")
	}
	out, err := b.Proxy.Run("nft", "-j", "list", "table", "inet", LBTable)
	if err != nil {
		return nil, err
	}
	return parseNodeFlows(out)
}

// parseNodeFlows sums the rule counters of the node chains in the output
// of `nft -j list table`.
func parseNodeFlows(js string) (map[int]uint64, error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Chain string `json:"chain"`
				Expr  []struct {
					Counter *struct {
						Packets uint64 `json:"packets"`
					} `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		return nil, fmt.Errorf("parse nft -j output: %w", err)
	}
	flows := map[int]uint64{}
	for _, o := range doc.Nftables {
		if o.Rule == nil {
			continue
		}
		idx, ok := strings.CutPrefix(o.Rule.Chain, "node")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(idx)
		if err != nil {
			continue
		}
		for _, e := range o.Rule.Expr {
			if e.Counter != nil {
				flows[i] += e.Counter.Packets
			}
		}
	}
	return flows, nil
}

// MPTCPCounters reads the MPTCP counters of n (`nstat -asz`, absolute,
// without touching nstat's history): MPTcpExtMPJoinNoTokenFound and the
// rest, by name.
func (n *NetNS) MPTCPCounters() (map[string]uint64, error) {
	out, err := n.Run("nstat", "-asjz", "MPTcpExt*")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Kernel map[string]uint64 `json:"kernel"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("[%s] parse nstat -j: %w: %s", n.Name, err, out)
	}
	return doc.Kernel, nil
}

// FleetPM configures the in-kernel path manager across a fleet.
type FleetPM struct {
	// Signal adds a `signal` endpoint for each node's own address, so
	// the node announces it (ADD_ADDR) to every connection whose local
	// address it is not (the kernel never announces that one).
	Signal bool
	// SignalPort gives the signal endpoints a port: the kernel then
	// listens on it and announces the address with it, also to
	// connections whose local address it is (Spec.DNATToNodeAddr).
	SignalPort uint16
	// RefuseInitial sets the "C" flag of RFC 8684 on every node
	// (net.mptcp.allow_join_initial_addr_port=0): clients must not join
	// the address they connected to, the balanced service address.
	RefuseInitial bool
	// ClientFlags are the flags of the client's lte endpoint, default
	// "subflow fullmesh": a subflow from lte to every address the peer
	// announces (and to the service address unless the peer refuses
	// joins there). "subflow" alone opens one lte subflow, to the
	// connection's remote address: the service address.
	ClientFlags []string
}

// EnableFleetPM configures the in-kernel PM on the client and the nodes:
// limits 4/4 everywhere, the client's lte endpoint, and per node what pm
// asks for. This is the kernel's own way, for tests and the demo, until
// the daemon's `side: server` does it (docs/fleet.md).
func (b *Bed) EnableFleetPM(pm FleetPM) error {
	if !b.IsFleet() {
		return fmt.Errorf("EnableFleetPM: the bed is not a fleet")
	}
	flags := pm.ClientFlags
	if len(flags) == 0 {
		flags = []string{"subflow", "fullmesh"}
	}
	limits := []string{"ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4"}
	if _, err := b.Client.Run(limits...); err != nil {
		return err
	}
	if _, err := b.Client.Run(append([]string{"ip", "mptcp", "endpoint", "add", b.LTEAddr.String(), "dev", LTEIf}, flags...)...); err != nil {
		return err
	}
	allow := "1"
	if pm.RefuseInitial {
		allow = "0"
	}
	for _, n := range b.Nodes {
		if _, err := n.Run(limits...); err != nil {
			return err
		}
		if err := n.NetNS.Sysctl("net.mptcp.allow_join_initial_addr_port", allow); err != nil {
			return err
		}
		if pm.Signal {
			args := []string{"ip", "mptcp", "endpoint", "add", n.Addr.String(), "dev", "lo", "signal"}
			if pm.SignalPort != 0 {
				args = append(args, "port", strconv.Itoa(int(pm.SignalPort)))
			}
			if _, err := n.Run(args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// NodeStatus is one node of a fleet as `testbed status` shows it.
type NodeStatus struct {
	Index      int        `json:"index"`
	Name       string     `json:"name"`
	Present    bool       `json:"present"`
	Addr       netip.Addr `json:"addr"`
	Addr6      netip.Addr `json:"addr6"`
	Backend    netip.Addr `json:"backend"`
	Backend6   netip.Addr `json:"backend6"`
	InBalancer bool       `json:"in_balancer"`
	// Flows is the number of new flows the balancer sent to the node.
	Flows uint64 `json:"flows"`
}

func (b *Bed) nodeStatus() []NodeStatus {
	flows, _ := b.BalancerFlows()
	in := b.InBalancer()
	var out []NodeStatus
	for _, n := range b.Nodes {
		out = append(out, NodeStatus{
			Index: n.Index, Name: n.NetNS.Name, Present: n.NetNS.Exists(),
			Addr: n.Addr, Addr6: n.Addr6, Backend: n.Backend, Backend6: n.Backend6,
			InBalancer: slices.Contains(in, n.Index),
			Flows:      flows[n.Index],
		})
	}
	return out
}
