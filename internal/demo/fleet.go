//go:build linux

package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// FleetOptions tune `gigapath demo --proxies N`; the zero value of a field
// means its default.
type FleetOptions struct {
	Proxies  int    // proxy nodes behind the balancer, 2 to testbed.MaxProxies
	Balance  string // testbed.BalanceJHash (default) or testbed.BalanceNumgen
	WiFiRate string // default "100mbit"
	LTERate  string // default "50mbit"
	Conns    int    // connections through the service address, default 4 per node
	Size     int64  // bytes downloaded in all, split over the connections, default 60 MB
	Timeout  time.Duration
	Progress io.Writer
	// StateFile records the bed while the demo runs (default StateFile).
	StateFile string
	// Binary: as in Options, the relays are this executable; without it
	// an in-process forwarder on each node stands in.
	Binary string
}

// FleetNode is one node in the fleet demo's summary.
type FleetNode struct {
	Index int        `json:"index"`
	NetNS string     `json:"netns"`
	Addr  netip.Addr `json:"addr"`
	// Flows: new flows the balancer sent to the node (nft counters).
	Flows uint64 `json:"balanced_flows"`
	// Conns: the demo's MPTCP connections the node held (ss -M on it).
	Conns int `json:"connections"`
	// Joins completed on the node (MPTcpExtMPJoinAckRx) and joins it
	// refused for a token it does not have (MPTcpExtMPJoinNoTokenFound).
	Joins   uint64 `json:"joins"`
	NoToken uint64 `json:"joins_no_token"`
}

// FleetConn is one of the client's MPTCP connections and its subflows,
// as the client's ss shows them (subflows of one connection share the
// connection's inode).
type FleetConn struct {
	Node     int      `json:"node"` // 0: no lte subflow to a node address
	Subflows []string `json:"subflows"`
	Wifi     bool     `json:"wifi"`
	LTE      bool     `json:"lte"`
}

// FleetSummary is the fleet demo's result.
type FleetSummary struct {
	Mode          string      `json:"mode"`
	PathManager   string      `json:"path_manager"`
	Proxies       int         `json:"proxies"`
	Balance       string      `json:"balance"`
	ServiceAddr   netip.Addr  `json:"service_addr"`
	WiFiRate      string      `json:"wifi_rate"`
	LTERate       string      `json:"lte_rate"`
	Bytes         int64       `json:"bytes"`
	Seconds       float64     `json:"seconds"`
	AggregateMbps float64     `json:"aggregate_mbps"`
	WiFiBytes     uint64      `json:"wifi_bytes"`
	LTEBytes      uint64      `json:"lte_bytes"`
	Nodes         []FleetNode `json:"nodes"`
	Connections   []FleetConn `json:"connections"`
	// BothPaths counts the connections with a wifi and an lte subflow.
	BothPaths  int      `json:"both_paths"`
	Namespaces []string `json:"namespaces"`
	// Verified: every download's SHA-256 matched, every connection had
	// both paths, and no node refused a join.
	Verified bool `json:"verified"`
}

func (o *FleetOptions) defaults() {
	if o.WiFiRate == "" {
		o.WiFiRate = "100mbit"
	}
	if o.LTERate == "" {
		o.LTERate = "50mbit"
	}
	if o.Conns == 0 {
		o.Conns = 4 * o.Proxies
	}
	if o.Size == 0 {
		o.Size = 60e6
	}
	if o.Timeout == 0 {
		o.Timeout = 90 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.StateFile == "" {
		o.StateFile = StateFile
	}
}

// The path management of the fleet demo.
const (
	fleetPMDaemons = "daemons: gigapath run on every node (side: server, userspace PM, announce: its own address, initial_address_joins: refuse) and on the client (userspace PM, peer_addresses: use)"
	fleetPMKernel  = "kernel PM: each node a signal endpoint for its own address + the C flag (allow_join_initial_addr_port=0); client lte endpoint subflow fullmesh"
)

// nodePathManager sets up path management on the fleet: with a binary,
// `gigapath run` on every node (side: server: it announces the node's own
// address and sets the "C" flag, so clients join the node, never the
// balanced service address) and on the client (peer_addresses: use: the
// lte subflow goes to the address the node announces). Without one, or
// when the daemons do not start, the in-kernel PM does the same job (the
// reference docs/fleet.md compares with), and the summary says why.
func nodePathManager(ctx context.Context, bed *testbed.Bed, bin, stateFile string) (pm string, stop func(), err error) {
	why := "no gigapath binary"
	if bin != "" {
		stop, err := startFleetDaemons(ctx, bed, bin, stateFile)
		if err == nil {
			return fleetPMDaemons, stop, nil
		}
		if ctx.Err() != nil {
			return "", nil, ctx.Err()
		}
		why = "the daemons did not start: " + err.Error()
	}
	if err := bed.EnableFleetPM(testbed.FleetPM{Signal: true, RefuseInitial: true}); err != nil {
		return "", nil, err
	}
	return fleetPMKernel + " (" + why + ")", func() {}, nil
}

// RunFleet runs the fleet demo: a bed of Proxies nodes behind an nftables
// balancer, Conns connections through the service address downloading a
// share of Size each, held open until every one is checked: which node
// holds it (ss -M on the nodes, the balancer's counters), its subflows on
// the client (a wifi one to the service address, an lte one to its node's
// own address), and the nodes' join counters. Everything it creates is
// removed before it returns, also when ctx is cancelled.
func RunFleet(ctx context.Context, o FleetOptions) (s *FleetSummary, err error) {
	o.defaults()
	if o.Proxies < 2 || o.Proxies > testbed.MaxProxies {
		return nil, fmt.Errorf("proxies %d: the fleet demo needs 2 to %d", o.Proxies, testbed.MaxProxies)
	}
	if o.Conns < 1 || o.Conns > 200 || o.Size < int64(o.Conns) {
		return nil, fmt.Errorf("conns %d and size %d: want 1 to 200 connections and at least a byte each", o.Conns, o.Size)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Fprintf(o.Progress, format+"\n", args...) }

	logf("testbed: %d proxy nodes behind a load balancer, wifi %s + lte %s ...", o.Proxies, o.WiFiRate, o.LTERate)
	bed, closeBed, err := upRecorded(ctx, testbed.Spec{WiFiRate: o.WiFiRate, LTERate: o.LTERate, ClientRouting: true, Proxies: o.Proxies, Balance: o.Balance}, o.StateFile, logf)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := closeBed(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	pm, stopPM, err := nodePathManager(ctx, bed, o.Binary, o.StateFile)
	if err != nil {
		return nil, err
	}
	defer stopPM()
	logf("path manager: %s", pm)

	data := randomData(o.Size)
	origin, err := serveOrigin(bed, data)
	if err != nil {
		return nil, err
	}
	defer origin.Close()

	// Every node listens on all its addresses: the balanced flows arrive
	// at its backend address, the joins at its own address.
	listen := net.JoinHostPort("0.0.0.0", strconv.Itoa(proxyPort))
	var nodes []*testbed.NetNS
	for _, n := range bed.Nodes {
		nodes = append(nodes, n.NetNS)
	}
	dial, mode, stopChain, err := startChain(ctx, bed, o.Binary, nodes, listen,
		"client app | SOCKS5 | gigapath relay (client, local entry) | MPTCP to the service address | nftables balancer | gigapath relay (each node) | TCP | origin",
		"client app | MPTCP to the service address | nftables balancer | TCP forwarder on each node | origin")
	if err != nil {
		return nil, err
	}
	defer stopChain()
	logf("mode: %s", mode)

	c0, err := bed.Counters()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	share := o.Size / int64(o.Conns)
	var got atomic.Int64
	stopProgress := fleetProgress(bed, o.Progress, &got, o.Size)
	conns, err := fetchAll(ctx, dial, originTarget(bed), data, o.Conns, share, &got)
	elapsed := time.Since(start)
	stopProgress()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	c1, err := bed.Counters()
	if err != nil {
		return nil, err
	}
	s = &FleetSummary{
		Mode: mode, PathManager: pm, Proxies: o.Proxies, Balance: bed.Spec.Balance, ServiceAddr: bed.ProxyAddr,
		WiFiRate: o.WiFiRate, LTERate: o.LTERate,
		Bytes: got.Load(), Seconds: elapsed.Seconds(), AggregateMbps: float64(got.Load()) * 8 / elapsed.Seconds() / 1e6,
		WiFiBytes: c1[testbed.WiFi].RxBytes - c0[testbed.WiFi].RxBytes,
		LTEBytes:  c1[testbed.LTE].RxBytes - c0[testbed.LTE].RxBytes,
	}
	for _, n := range bed.Namespaces() {
		s.Namespaces = append(s.Namespaces, n.Name)
	}
	// The connections are still open: look at them.
	if err := s.inspect(ctx, bed, o.Conns); err != nil {
		return s, err
	}
	s.Verified = s.BothPaths == o.Conns && got.Load() == share*int64(o.Conns)
	for _, n := range s.Nodes {
		if n.NoToken != 0 {
			s.Verified = false
		}
	}
	if !s.Verified {
		return s, fmt.Errorf("fleet NOT verified: %d of %d connections with both paths, %d of %d bytes", s.BothPaths, o.Conns, got.Load(), share*int64(o.Conns))
	}
	return s, nil
}

// fetchAll opens n connections with dial and downloads /data?n=share on
// each, checking every body against data, and returns them still open.
func fetchAll(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), target string, data []byte, n int, share int64, got *atomic.Int64) ([]net.Conn, error) {
	want := sha256.Sum256(data[:share])
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dial(ctx, "tcp", target)
			if err != nil {
				errs[i] = fmt.Errorf("connection %d: %w", i, err)
				return
			}
			conns[i] = c
			errs[i] = fetch(ctx, c, target, share, want, got)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("connection %d: %w", i, errs[i])
			}
		}()
	}
	wg.Wait()
	var open []net.Conn
	for _, c := range conns {
		if c != nil {
			open = append(open, c)
		}
	}
	return open, errors.Join(errs...)
}

// fetch sends one keep-alive GET on c and reads the body, which must hash
// to want; c stays open.
func fetch(ctx context.Context, c net.Conn, target string, size int64, want [32]byte, got *atomic.Int64) error {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+target+"/data?n="+strconv.FormatInt(size, 10), nil)
	if err != nil {
		return err
	}
	if err := req.Write(c); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("origin answered %s", resp.Status)
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := resp.Body.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		got.Add(int64(m))
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", n, size, err)
		}
	}
	if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("got %d of %d bytes, SHA-256 mismatch", n, size)
	}
	return nil
}

// fleetProgress prints the per-link receive rates every 0.5 s until the
// returned stop is called.
func fleetProgress(bed *testbed.Bed, w io.Writer, got *atomic.Int64, total int64) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		prev, err := bed.Counters()
		if err != nil {
			return
		}
		start := time.Now()
		rates := &linkRates{bed: bed, prev: prev, at: start}
		tickUntil(done, func() {
			if wifi, lte, ok := rates.sample(); ok {
				fmt.Fprintf(w, "%6.1fs  wifi %6.1f Mbit/s  lte %6.1f Mbit/s  %5.1f/%.1f MB\n",
					time.Since(start).Seconds(), wifi, lte, float64(got.Load())/1e6, float64(total)/1e6)
			}
		})
	}()
	return func() { close(done); <-stopped }
}

// inspect fills the per-node and per-connection parts of s from the
// client's and the nodes' own tools while the connections are open. The
// lte subflows come up a moment after data first flows: it waits (up to
// 5 s) for one per connection.
func (s *FleetSummary) inspect(ctx context.Context, bed *testbed.Bed, conns int) error {
	for deadline := time.Now().Add(5 * time.Second); ; {
		cc, err := bed.ClientConns()
		if err != nil {
			return err
		}
		s.Connections = fleetConns(bed, cc)
		s.BothPaths = 0
		for _, c := range s.Connections {
			if c.Wifi && c.LTE {
				s.BothPaths++
			}
		}
		if s.BothPaths >= conns || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	flows, err := bed.BalancerFlows()
	if err != nil {
		return err
	}
	for _, n := range bed.Nodes {
		fn := FleetNode{Index: n.Index, NetNS: n.Name(), Addr: n.Addr, Flows: flows[n.Index]}
		out, err := n.Run("ss", "-HMn", "state", "established")
		if err != nil {
			return err
		}
		fn.Conns = lines(out)
		c, err := n.NetNS.MPTCPCounters()
		if err != nil {
			return err
		}
		fn.Joins, fn.NoToken = c["MPTcpExtMPJoinAckRx"], c["MPTcpExtMPJoinNoTokenFound"]
		s.Nodes = append(s.Nodes, fn)
	}
	return nil
}

// fleetConns describes the client's connections for the summary, with the
// node each joined (a subflow to a node's own address), sorted by node.
func fleetConns(bed *testbed.Bed, conns []testbed.ClientConn) []FleetConn {
	out := make([]FleetConn, 0, len(conns))
	for _, c := range conns {
		fc := FleetConn{Node: c.Node(bed), Wifi: c.From(bed.WiFiAddr), LTE: c.From(bed.LTEAddr)}
		for _, sf := range c.Subflows {
			fc.Subflows = append(fc.Subflows, sf.Local.String()+" -> "+sf.Remote.String())
		}
		out = append(out, fc)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// String is the human summary.
func (s *FleetSummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode:           %s\n", s.Mode)
	fmt.Fprintf(&b, "path manager:   %s\n", s.PathManager)
	fmt.Fprintf(&b, "fleet:          %d nodes behind an nftables balancer (%s) owning %s\n", s.Proxies, s.Balance, s.ServiceAddr)
	fmt.Fprintf(&b, "links:          wifi %s + lte %s\n", s.WiFiRate, s.LTERate)
	fmt.Fprintf(&b, "downloaded:     %.1f MB over %d connections in %.2f s = %.1f Mbit/s; wifi %.1f MB, lte %.1f MB (client interface counters)\n",
		float64(s.Bytes)/1e6, len(s.Connections), s.Seconds, s.AggregateMbps, float64(s.WiFiBytes)/1e6, float64(s.LTEBytes)/1e6)
	fmt.Fprintf(&b, "nodes:          connections (ss -M on the node), flows the balancer sent (nft), joins completed / refused for an unknown token (nstat)\n")
	for _, n := range s.Nodes {
		fmt.Fprintf(&b, "  node%-2d %-14s %-13s %3d connections  %3d flows  joins %3d ok %d no-token\n", n.Index, n.NetNS, n.Addr, n.Conns, n.Flows, n.Joins, n.NoToken)
	}
	fmt.Fprintf(&b, "connections:    %d of %d with both paths (client ss, subflows grouped by connection)\n", s.BothPaths, len(s.Connections))
	for _, c := range s.Connections {
		node := "no node address"
		if c.Node > 0 {
			node = "node" + strconv.Itoa(c.Node)
		}
		fmt.Fprintf(&b, "  %-7s %s\n", node, strings.Join(c.Subflows, ", "))
	}
	ok := "OK"
	if !s.Verified {
		ok = "NOT VERIFIED"
	}
	fmt.Fprintf(&b, "verified:       %s (every download's SHA-256, both paths on every connection, no join refused)\n", ok)
	return b.String()
}
