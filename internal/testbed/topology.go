//go:build linux

package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The fixed in-namespace plan of a bed. Every bed lives in its own
// namespaces, so these addresses never collide between beds.
//
//	cli (phone)                    prx (MPTCP proxy)              org (origin)
//	wifi0 10.201.1.2/24 ───────── wifi1 10.201.1.1/24
//	lte0  10.201.2.2/24 ───────── lte1  10.201.2.1/24
//	                               lo    10.201.0.1/32 (service)
//	                               org0  10.201.3.1/24 ───────── prx0 10.201.3.2/24
//
// IPv6 uses fd00:201:N::/64 with the same host numbers, and fd00:201::1/128
// as the proxy's service address.
const (
	// Client side interface names.
	WiFiIf = "wifi0"
	LTEIf  = "lte0"
	// Proxy side interface names of the access links and towards the origin.
	ProxyWiFiIf   = "wifi1"
	ProxyLTEIf    = "lte1"
	ProxyOriginIf = "org0"
	// Origin side interface name towards the proxy.
	OriginIf = "prx0"

	// Routing tables and rule priorities used on the client when
	// Spec.ClientRouting is set.
	WiFiTable    = 201
	LTETable     = 202
	RulePriority = 20100
)

// Link names one access link of the bed.
type Link string

// The two access links.
const (
	WiFi Link = "wifi"
	LTE  Link = "lte"
)

// Links lists the access links in a fixed order.
var Links = []Link{WiFi, LTE}

// Spec describes the bed to build. The zero value gives unshaped links and
// no client routing beyond the connected subnets.
type Spec struct {
	// WiFiRate and LTERate shape both directions of each access link with
	// tbf, in tc syntax ("200mbit", "1.5gbit", "500kbit"); empty = unshaped.
	WiFiRate string `json:"wifi_rate,omitempty"`
	LTERate  string `json:"lte_rate,omitempty"`
	// ClientRouting installs the client's routes: default via wifi in the
	// main table, plus one table per link and source rules so a socket
	// bound to the lte address leaves by lte0. Leave it off when the code
	// under test (the daemon) manages client routing itself.
	ClientRouting bool `json:"client_routing"`
	// Proxies is the number of proxy nodes: 0 or 1 builds the single
	// proxy above; 2 to MaxProxies builds a fleet, the nodes behind a
	// load balancer that owns the service address (fleet.go).
	Proxies int `json:"proxies,omitempty"`
	// Balance is how the fleet's balancer spreads new flows:
	// BalanceJHash (the default) or BalanceNumgen.
	Balance string `json:"balance,omitempty"`
	// DNATToNodeAddr makes the fleet's balancer DNAT to each node's own
	// address instead of its backend address, as kube-proxy does for
	// hostNetwork pods: the node address is then the local address of
	// every balanced connection, and a node can announce it only with
	// another port (docs/fleet.md).
	DNATToNodeAddr bool `json:"dnat_to_node_addr,omitempty"`
}

// Bed is a running topology. Its exported fields describe it and are what
// Describe writes as JSON.
type Bed struct {
	Spec   Spec   `json:"spec"`
	Client *NetNS `json:"client"`
	// Proxy is the namespace at the far end of the access links, which
	// owns the service address: the proxy, or in a fleet the load
	// balancer in front of the Nodes.
	Proxy  *NetNS `json:"proxy"`
	Origin *NetNS `json:"origin"`
	// Nodes are the proxy nodes of a fleet (Spec.Proxies >= 2), nil for
	// a single proxy.
	Nodes []*Node `json:"nodes,omitempty"`

	// Client addresses on each access link.
	WiFiAddr  netip.Addr `json:"wifi_addr"`
	LTEAddr   netip.Addr `json:"lte_addr"`
	WiFiAddr6 netip.Addr `json:"wifi_addr6"`
	LTEAddr6  netip.Addr `json:"lte_addr6"`
	// Proxy addresses: the service address on its loopback (reachable over
	// either link) and the peer address on each access link.
	ProxyAddr      netip.Addr `json:"proxy_addr"`
	ProxyAddr6     netip.Addr `json:"proxy_addr6"`
	ProxyWiFiAddr  netip.Addr `json:"proxy_wifi_addr"`
	ProxyLTEAddr   netip.Addr `json:"proxy_lte_addr"`
	ProxyWiFiAddr6 netip.Addr `json:"proxy_wifi_addr6"`
	ProxyLTEAddr6  netip.Addr `json:"proxy_lte_addr6"`
	// Origin address, and the proxy's address towards it.
	OriginAddr       netip.Addr `json:"origin_addr"`
	OriginAddr6      netip.Addr `json:"origin_addr6"`
	ProxyOriginAddr  netip.Addr `json:"proxy_origin_addr"`
	ProxyOriginAddr6 netip.Addr `json:"proxy_origin_addr6"`

	mu     sync.Mutex
	rates  map[Link]string
	delays map[Link]time.Duration
	loss   map[Link]*lossState
	down   map[Link]bool
	out    map[int]bool // fleet nodes taken out of the balancer
}

type lossState struct {
	percent float64
	links   []io.Closer
}

// Fixed plan, see the diagram above.
var (
	planWiFi       = netip.MustParseAddr("10.201.1.2")
	planLTE        = netip.MustParseAddr("10.201.2.2")
	planWiFi6      = netip.MustParseAddr("fd00:201:1::2")
	planLTE6       = netip.MustParseAddr("fd00:201:2::2")
	planProxy      = netip.MustParseAddr("10.201.0.1")
	planProxy6     = netip.MustParseAddr("fd00:201::1")
	planPrxWiFi    = netip.MustParseAddr("10.201.1.1")
	planPrxLTE     = netip.MustParseAddr("10.201.2.1")
	planPrxWiFi6   = netip.MustParseAddr("fd00:201:1::1")
	planPrxLTE6    = netip.MustParseAddr("fd00:201:2::1")
	planOrigin     = netip.MustParseAddr("10.201.3.2")
	planOrigin6    = netip.MustParseAddr("fd00:201:3::2")
	planPrxOrigin  = netip.MustParseAddr("10.201.3.1")
	planPrxOrigin6 = netip.MustParseAddr("fd00:201:3::1")
)

func newBed(spec Spec, cli, prx, org *NetNS) *Bed {
	return &Bed{
		Spec: spec, Client: cli, Proxy: prx, Origin: org,
		WiFiAddr: planWiFi, LTEAddr: planLTE, WiFiAddr6: planWiFi6, LTEAddr6: planLTE6,
		ProxyAddr: planProxy, ProxyAddr6: planProxy6,
		ProxyWiFiAddr: planPrxWiFi, ProxyLTEAddr: planPrxLTE,
		ProxyWiFiAddr6: planPrxWiFi6, ProxyLTEAddr6: planPrxLTE6,
		OriginAddr: planOrigin, OriginAddr6: planOrigin6,
		ProxyOriginAddr: planPrxOrigin, ProxyOriginAddr6: planPrxOrigin6,
		rates:  map[Link]string{},
		delays: map[Link]time.Duration{},
		loss:   map[Link]*lossState{},
		down:   map[Link]bool{},
		out:    map[int]bool{},
	}
}

// Up builds a bed: three fresh namespaces, three veth pairs, addresses,
// forwarding on the proxy, shaping, and client routes if asked; for a
// fleet also the nodes and the balancer's ruleset. On error everything
// made so far is removed.
func Up(ctx context.Context, spec Spec) (b *Bed, err error) {
	if err := checkFleetSpec(spec); err != nil {
		return nil, err
	}
	if spec.Proxies >= 2 && spec.Balance == "" {
		spec.Balance = BalanceJHash
	}
	for _, r := range []struct {
		name, rate string
	}{{"wifi rate", spec.WiFiRate}, {"lte rate", spec.LTERate}} {
		if r.rate != "" {
			if _, err := ParseRate(r.rate); err != nil {
				return nil, fmt.Errorf("%s: %w", r.name, err)
			}
		}
	}
	var made []*NetNS
	defer func() {
		if err != nil {
			for _, n := range made {
				n.Close()
			}
		}
	}()
	roles := []string{"cli", "prx", "org"}
	if spec.Proxies >= 2 {
		roles[1] = "lb"
		for i := 1; i <= spec.Proxies; i++ {
			roles = append(roles, "n"+strconv.Itoa(i))
		}
	}
	for _, role := range roles {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := NewNetNS(role)
		if err != nil {
			return nil, err
		}
		made = append(made, n)
	}
	b = newBed(spec, made[0], made[1], made[2])
	for i, n := range made[3:] {
		b.Nodes = append(b.Nodes, newNode(i+1, n))
	}
	if err := b.build(ctx); err != nil {
		return nil, err
	}
	if b.IsFleet() {
		if err := b.buildNodes(ctx); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *Bed) build(ctx context.Context) error {
	cli, prx, org := b.Client, b.Proxy, b.Origin
	steps := []func() error{
		func() error { return Veth(cli, WiFiIf, prx, ProxyWiFiIf) },
		func() error { return Veth(cli, LTEIf, prx, ProxyLTEIf) },
		func() error { return Veth(prx, ProxyOriginIf, org, OriginIf) },
	}
	// Keep IPv6 addresses when a link goes down, so LinkUp restores them.
	for _, n := range []*NetNS{cli, prx, org} {
		n := n
		steps = append(steps,
			func() error { return n.Sysctl("net.ipv6.conf.all.keep_addr_on_down", "1") },
			func() error { return n.Sysctl("net.ipv6.conf.default.keep_addr_on_down", "1") },
		)
	}
	addrs := []struct {
		n      *NetNS
		ifname string
		cidr   string
	}{
		{cli, WiFiIf, b.WiFiAddr.String() + "/24"},
		{cli, WiFiIf, b.WiFiAddr6.String() + "/64"},
		{cli, LTEIf, b.LTEAddr.String() + "/24"},
		{cli, LTEIf, b.LTEAddr6.String() + "/64"},
		{prx, ProxyWiFiIf, b.ProxyWiFiAddr.String() + "/24"},
		{prx, ProxyWiFiIf, b.ProxyWiFiAddr6.String() + "/64"},
		{prx, ProxyLTEIf, b.ProxyLTEAddr.String() + "/24"},
		{prx, ProxyLTEIf, b.ProxyLTEAddr6.String() + "/64"},
		{prx, "lo", b.ProxyAddr.String() + "/32"},
		{prx, "lo", b.ProxyAddr6.String() + "/128"},
		{prx, ProxyOriginIf, b.ProxyOriginAddr.String() + "/24"},
		{prx, ProxyOriginIf, b.ProxyOriginAddr6.String() + "/64"},
		{org, OriginIf, b.OriginAddr.String() + "/24"},
		{org, OriginIf, b.OriginAddr6.String() + "/64"},
	}
	for _, a := range addrs {
		a := a
		steps = append(steps, func() error { return a.n.AddAddr(a.ifname, a.cidr) })
	}
	steps = append(steps,
		func() error { return prx.Sysctl("net.ipv4.ip_forward", "1") },
		func() error { return prx.Sysctl("net.ipv6.conf.all.forwarding", "1") },
		// The origin answers everything through the proxy.
		func() error {
			_, err := org.Run("ip", "route", "add", "default", "via", b.ProxyOriginAddr.String(), "dev", OriginIf)
			return err
		},
		func() error {
			_, err := org.Run("ip", "-6", "route", "add", "default", "via", b.ProxyOriginAddr6.String(), "dev", OriginIf)
			return err
		},
	)
	// Forwarded IPv6 traffic whose first packet makes the proxy resolve a
	// neighbour was dropped on these veths (the solicitation never reached
	// the origin; seen on 6.18): give the proxy static neighbour entries
	// for its three IPv6 peers.
	steps = append(steps,
		func() error { return staticNeigh(prx, ProxyOriginIf, b.OriginAddr6, org, OriginIf) },
		func() error { return staticNeigh(prx, ProxyWiFiIf, b.WiFiAddr6, cli, WiFiIf) },
		func() error { return staticNeigh(prx, ProxyLTEIf, b.LTEAddr6, cli, LTEIf) },
	)
	if b.Spec.ClientRouting {
		steps = append(steps, func() error { return b.clientRules() })
		for _, l := range Links {
			l := l
			steps = append(steps, func() error { return b.clientRoutes(l) })
		}
	}
	for _, l := range Links {
		rate := b.Spec.WiFiRate
		if l == LTE {
			rate = b.Spec.LTERate
		}
		if rate == "" {
			continue
		}
		l, rate := l, rate
		steps = append(steps, func() error { return b.SetRate(l, rate) })
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// staticNeigh adds a permanent neighbour entry in n on ifname for addr, the
// address of peerIf in peer.
func staticNeigh(n *NetNS, ifname string, addr netip.Addr, peer *NetNS, peerIf string) error {
	out, err := peer.Run("ip", "-j", "link", "show", "dev", peerIf)
	if err != nil {
		return err
	}
	var l []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l) != 1 || l[0].Address == "" {
		return fmt.Errorf("[%s] no MAC address for %s: %v: %s", peer.Name, peerIf, err, out)
	}
	_, err = n.Run("ip", "neigh", "replace", addr.String(), "lladdr", l[0].Address, "dev", ifname, "nud", "permanent")
	return err
}

// linkPlan returns the client interface, the client address pair, the
// proxy gateway pair and the table of an access link.
func (b *Bed) linkPlan(l Link) (ifname string, src, src6, gw, gw6 netip.Addr, table int) {
	if l == LTE {
		return LTEIf, b.LTEAddr, b.LTEAddr6, b.ProxyLTEAddr, b.ProxyLTEAddr6, LTETable
	}
	return WiFiIf, b.WiFiAddr, b.WiFiAddr6, b.ProxyWiFiAddr, b.ProxyWiFiAddr6, WiFiTable
}

// Iface returns the client side and proxy side interface names of l.
func Iface(l Link) (client, proxy string, err error) {
	switch l {
	case WiFi:
		return WiFiIf, ProxyWiFiIf, nil
	case LTE:
		return LTEIf, ProxyLTEIf, nil
	}
	return "", "", fmt.Errorf("link %q: valid links are %q and %q", l, WiFi, LTE)
}

// SetupClientRouting installs the client routing of Spec.ClientRouting on
// a bed built without it (rules, tables, main default via wifi), and makes
// LinkUp restore it from then on.
func (b *Bed) SetupClientRouting() error {
	b.mu.Lock()
	if b.Spec.ClientRouting {
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	if err := b.clientRules(); err != nil {
		return err
	}
	for _, l := range Links {
		if err := b.clientRoutes(l); err != nil {
			return err
		}
	}
	b.mu.Lock()
	b.Spec.ClientRouting = true
	b.mu.Unlock()
	return nil
}

func (b *Bed) clientRules() error {
	for i, l := range Links {
		_, src, src6, _, _, table := b.linkPlan(l)
		prio := strconv.Itoa(RulePriority + i)
		if _, err := b.Client.Run("ip", "rule", "add", "from", src.String(), "table", strconv.Itoa(table), "priority", prio); err != nil {
			return err
		}
		if _, err := b.Client.Run("ip", "-6", "rule", "add", "from", src6.String(), "table", strconv.Itoa(table), "priority", prio); err != nil {
			return err
		}
	}
	return nil
}

// clientRoutes (re)installs the routes of one link on the client: its table's
// default route and, for wifi, the main table's default route. The kernel
// drops them when the link goes down, so LinkUp calls this again.
func (b *Bed) clientRoutes(l Link) error {
	ifname, _, _, gw, gw6, table := b.linkPlan(l)
	t := strconv.Itoa(table)
	cmds := [][]string{
		{"ip", "route", "replace", "default", "via", gw.String(), "dev", ifname, "table", t},
		{"ip", "-6", "route", "replace", "default", "via", gw6.String(), "dev", ifname, "table", t},
	}
	if l == WiFi {
		cmds = append(cmds,
			[]string{"ip", "route", "replace", "default", "via", gw.String(), "dev", ifname},
			[]string{"ip", "-6", "route", "replace", "default", "via", gw6.String(), "dev", ifname})
	}
	for _, c := range cmds {
		if _, err := b.Client.Run(c...); err != nil {
			return err
		}
	}
	return nil
}

// SetRate shapes both directions of l (egress of the client end and of the
// proxy end) with tbf at rate (tc syntax, e.g. "100mbit"). An empty rate
// removes the shaping.
func (b *Bed) SetRate(l Link, rate string) error {
	cif, pif, err := Iface(l)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if rate == "" {
		for _, e := range []struct {
			n  *NetNS
			nm string
		}{{b.Client, cif}, {b.Proxy, pif}} {
			if _, err := e.n.Run("tc", "qdisc", "del", "dev", e.nm, "root"); err != nil && !strings.Contains(err.Error(), "No such file") && !strings.Contains(err.Error(), "Cannot delete qdisc with handle of zero") {
				return err
			}
		}
		delete(b.rates, l)
		delete(b.delays, l) // it went with the root qdisc
		return nil
	}
	bps, err := ParseRate(rate)
	if err != nil {
		return fmt.Errorf("rate of %s: %w", l, err)
	}
	// 10 ms worth of bytes, at least 64 KiB so a full GSO packet fits and
	// the rate holds on a virtual link with segmentation offload.
	burst := bps / 8 / 100
	if burst < 64*1024 {
		burst = 64 * 1024
	}
	for _, e := range []struct {
		n  *NetNS
		nm string
	}{{b.Client, cif}, {b.Proxy, pif}} {
		if _, err := e.n.Run("tc", "qdisc", "replace", "dev", e.nm, "root", "handle", "1:", "tbf",
			"rate", strconv.FormatUint(bps, 10)+"bit", "burst", strconv.FormatUint(burst, 10), "latency", "50ms"); err != nil {
			return err
		}
	}
	b.rates[l] = rate
	if d := b.delays[l]; d > 0 {
		// A new tbf has its own default child: put the delay back.
		delete(b.delays, l)
		b.mu.Unlock()
		err := b.SetDelay(l, d)
		b.mu.Lock()
		return err
	}
	return nil
}

// SetDelay delays what the proxy sends on l by d (netem under the link's
// tbf, or alone on an unshaped link), so the client's and the proxy's RTT
// on l grow by d; 0 removes the delay. It needs sch_netem, which this
// project's scheduler kernel has and the usual test host has not: the
// error then says so.
func (b *Bed) SetDelay(l Link, d time.Duration) error {
	_, pif, err := Iface(l)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	parent := []string{"root", "handle", "1:"}
	if b.rates[l] != "" {
		parent = []string{"parent", "1:1", "handle", "10:"}
	}
	if d <= 0 {
		if b.delays[l] == 0 {
			return nil
		}
		delete(b.delays, l)
		if rate := b.rates[l]; rate != "" {
			// Deleting tbf's child leaves it with a qdisc that drops
			// everything: build the link's tbf anew instead.
			b.mu.Unlock()
			err := b.SetRate(l, rate)
			b.mu.Lock()
			return err
		}
		_, err := b.Proxy.Run("tc", "qdisc", "del", "dev", pif, "root")
		return err
	}
	args := append([]string{"tc", "qdisc", "replace", "dev", pif}, parent...)
	args = append(args, "netem", "delay", strconv.FormatInt(d.Microseconds(), 10)+"us", "limit", "100000")
	if _, err := b.Proxy.Run(args...); err != nil {
		if strings.Contains(err.Error(), "unknown") {
			return fmt.Errorf("delay on %s: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): %w", pif, err)
		}
		return err
	}
	b.delays[l] = d
	return nil
}

// Rate returns the rate last set on l ("" = unshaped).
func (b *Bed) Rate(l Link) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rates[l]
}

// LinkDown sets the client end of l down, as when a phone leaves Wi-Fi
// coverage. The kernel removes the link's routes; addresses stay (IPv6 too:
// keep_addr_on_down is on).
func (b *Bed) LinkDown(l Link) error {
	cif, _, err := Iface(l)
	if err != nil {
		return err
	}
	if _, err := b.Client.Run("ip", "link", "set", cif, "down"); err != nil {
		return err
	}
	b.mu.Lock()
	b.down[l] = true
	b.mu.Unlock()
	return nil
}

// LinkUp sets the client end of l up again and, with ClientRouting, puts
// back the routes the kernel removed on LinkDown.
func (b *Bed) LinkUp(l Link) error {
	cif, _, err := Iface(l)
	if err != nil {
		return err
	}
	if _, err := b.Client.Run("ip", "link", "set", cif, "up"); err != nil {
		return err
	}
	b.mu.Lock()
	routing := b.Spec.ClientRouting
	b.mu.Unlock()
	if routing {
		if err := b.clientRoutes(l); err != nil {
			return err
		}
	}
	b.mu.Lock()
	delete(b.down, l)
	b.mu.Unlock()
	return nil
}

// EnableKernelPM configures the in-kernel path manager for the usual
// two-path case: limits on both ends (subflows 4, add_addr_accepted 4) and a
// `subflow` endpoint for the client's lte address on lte0, so every MPTCP
// connection the client opens over wifi gets a second subflow over lte once
// data flows.
func (b *Bed) EnableKernelPM() error {
	for _, n := range []*NetNS{b.Client, b.Proxy} {
		if _, err := n.Run("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4"); err != nil {
			return err
		}
	}
	_, err := b.Client.Run("ip", "mptcp", "endpoint", "add", b.LTEAddr.String(), "dev", LTEIf, "subflow")
	return err
}

// LinkCounters are the byte and packet counters of the client end of a link.
type LinkCounters struct {
	RxBytes, TxBytes     uint64
	RxPackets, TxPackets uint64
}

// Counters reads the interface counters of both access links on the client
// side (one `ip -s -j link show` call). Downloaded bytes appear in RxBytes.
func (b *Bed) Counters() (map[Link]LinkCounters, error) {
	out, err := b.Client.Run("ip", "-s", "-j", "link", "show")
	if err != nil {
		return nil, err
	}
	var links []struct {
		Ifname  string `json:"ifname"`
		Stats64 struct {
			Rx struct {
				Bytes   uint64 `json:"bytes"`
				Packets uint64 `json:"packets"`
			} `json:"rx"`
			Tx struct {
				Bytes   uint64 `json:"bytes"`
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("parse ip -s -j link show in %s: %w", b.Client.Name, err)
	}
	res := map[Link]LinkCounters{}
	for _, l := range links {
		var k Link
		switch l.Ifname {
		case WiFiIf:
			k = WiFi
		case LTEIf:
			k = LTE
		default:
			continue
		}
		s := l.Stats64
		res[k] = LinkCounters{RxBytes: s.Rx.Bytes, TxBytes: s.Tx.Bytes, RxPackets: s.Rx.Packets, TxPackets: s.Tx.Packets}
	}
	return res, nil
}

// Close removes the loss programs and the namespaces (the veth pairs,
// qdiscs, routes and the balancer's nftables table go with them). It is
// safe to call more than once.
func (b *Bed) Close() error {
	b.mu.Lock()
	for l, st := range b.loss {
		for _, lk := range st.links {
			lk.Close()
		}
		delete(b.loss, l)
	}
	b.mu.Unlock()
	var errs []error
	for _, n := range b.Namespaces() {
		if n != nil {
			// Processes left inside (e.g. relays of a killed demo) would
			// keep the namespace alive after its name is gone.
			killPids(n)
			if err := n.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Namespaces returns the bed's namespaces in the order client, proxy (the
// balancer of a fleet), origin, then the fleet's nodes.
func (b *Bed) Namespaces() []*NetNS {
	ns := []*NetNS{b.Client, b.Proxy, b.Origin}
	for _, n := range b.Nodes {
		ns = append(ns, n.NetNS)
	}
	return ns
}

// ParseRate parses a tc-style rate ("100mbit", "1.5gbit", "500kbit",
// "64000bit", also "Mbit" spellings and bps/kbps/mbps/gbps for bytes per
// second) and returns bits per second.
func ParseRate(s string) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mult   float64
	}{
		{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3},
		{"tbps", 8e12}, {"gbps", 8e9}, {"mbps", 8e6}, {"kbps", 8e3}, {"bps", 8}, {"bit", 1},
	}
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v <= 0 || v*u.mult < 8000 || v*u.mult > 1e13 {
				break
			}
			return uint64(v * u.mult), nil
		}
	}
	return 0, fmt.Errorf("bad rate %q: want a number from 8kbit to 10tbit with a unit: bit, kbit, mbit, gbit, tbit (bits/s) or bps, kbps, mbps, gbps (bytes/s), e.g. \"100mbit\"", s)
}

// Cleanup removes every namespace whose name starts with NamePrefix, after
// killing the processes inside it. It is the crash recovery of `gigapath
// testbed down --all`: it also removes beds other programs (tests running
// right now) are using. Loss programs need no cleanup: they are attached
// through links held by file descriptors, which the kernel drops with the
// process or the interface.
func Cleanup() ([]string, error) { return cleanupPrefix(NamePrefix) }

func cleanupPrefix(prefix string) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		n := &NetNS{Name: e.Name()}
		killPids(n)
		if err := n.Close(); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, n.Name)
	}
	if prefix == NamePrefix {
		// A crash inside Veth can leave its temporary end in the root
		// namespace.
		if ifs, err := net.Interfaces(); err == nil {
			for _, i := range ifs {
				if isVethTemp(i.Name) {
					if out, err := exec.Command("ip", "link", "del", i.Name).CombinedOutput(); err != nil {
						errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", i.Name, err, strings.TrimSpace(string(out))))
					} else {
						removed = append(removed, i.Name)
					}
				}
			}
		}
	}
	return removed, errors.Join(errs...)
}

// isVethTemp reports whether name is a temporary veth end made by Veth:
// "gpv" and six hex digits.
func isVethTemp(name string) bool {
	if len(name) != 9 || !strings.HasPrefix(name, "gpv") {
		return false
	}
	_, err := strconv.ParseUint(name[3:], 16, 32)
	return err == nil
}

// killPids kills the processes running in namespace n (ip netns pids).
func killPids(n *NetNS) {
	out, err := exec.Command("ip", "netns", "pids", n.Name).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			p, err := os.FindProcess(pid)
			if err == nil {
				p.Kill()
			}
		}
	}
}

// Exists reports whether namespace n is still present.
func (n *NetNS) Exists() bool {
	_, err := os.Stat(filepath.Join("/run/netns", n.Name))
	return err == nil
}
