//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// joinPhase is one configuration of the fleet's nodes in
// BenchmarkFleetJoins.
type joinPhase struct {
	name     string
	announce bool // the node announces its own address
	refuse   bool // initial_address_joins: refuse
}

// joinResult is what one phase measured.
type joinResult struct {
	conns, withSecond int       // connections, those with a second subflow within the window
	tried, completed  uint64    // joins the client sent (MPJoinSynTx), joins the nodes completed (MPJoinAckRx)
	noToken           uint64    // joins the nodes refused for an unknown token
	toSecond          []float64 // time from the connection's created event to its first sub_established, ms
}

func (r joinResult) pct(q float64) float64 {
	if len(r.toSecond) == 0 {
		return 0
	}
	s := slices.Clone(r.toSecond)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// BenchmarkFleetJoins measures, on one fleet bed (3 nodes behind the
// nftables balancer, jhash) and in one run, the join success rate and the
// time to the second path of 200 MPTCP connections (a Python client; the
// client's daemon with peer_addresses: use) with the nodes' daemons in
// three configurations, switched by reloading their policy, in turn, twice:
// the feature (each node announces its own address and refuses joins to
// the initial one), announcing without the C flag, and neither (the
// client joins the service address). Timestamps come from an mptcp_pm
// event listener of the benchmark's own in the client namespace: the
// connection's created event to its first sub_established. The join
// counts are the client's MPTcpExtMPJoinSynTx and the nodes'
// MPTcpExtMPJoinAckRx / MPTcpExtMPJoinNoTokenFound.
//
//	go test -run '^$' -bench BenchmarkFleetJoins -benchtime 1x ./internal/controller
func BenchmarkFleetJoins(b *testing.B) {
	const conns = 200
	const window = 15 * time.Second
	bed := testbed.UpT(b, testbed.Spec{ClientRouting: true, Proxies: 3})
	phases := []joinPhase{
		{"feature: announce + C flag", true, true},
		{"announce, no C flag", true, false},
		{"neither (joins to the service address)", false, false},
	}
	nodePolicy := func(n *testbed.Node, ph joinPhase) *policy.Policy {
		joins, ann := "allow", ""
		if ph.refuse {
			joins = "refuse"
		}
		if ph.announce {
			ann = fmt.Sprintf("announce:\n  - address: %s\n", n.Addr)
		}
		p, err := policy.Parse([]byte(fmt.Sprintf("side: server\npath_manager: userspace\ninitial_address_joins: %s\nrouting: off\n"+
			"interfaces:\n  - {name: %s, role: ethernet}\n%smetrics: {listen: \"\"}\nstatus_socket: \"\"\n", joins, testbed.NodeUplinkIf, ann)))
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	var nodes []*controller.Controller
	for _, n := range bed.Nodes {
		testbed.StartEchoServer(b, n.NetNS, fleetAppPort)
		ctl, _ := runController(b, controller.Config{Policy: nodePolicy(n, phases[0]), NetNS: n.Name(), Logger: infoLogger(b)})
		nodes = append(nodes, ctl)
	}
	cp, err := policy.Parse([]byte(fleetClientPolicy))
	if err != nil {
		b.Fatal(err)
	}
	runController(b, controller.Config{Policy: cp, NetNS: bed.Client.Name, Logger: infoLogger(b)})

	// The timestamp source: the client's mptcp_pm events.
	el, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { el.Close() })
	var mu sync.Mutex
	created, second := map[uint32]time.Time{}, map[uint32]time.Time{}
	testbed.Collect(b, el.Receive, func(evs []pathmgr.Event, err error) bool {
		at := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range evs {
			switch ev.Type {
			case pathmgr.EventCreated:
				created[ev.Token] = at
			case pathmgr.EventSubEstablished:
				if _, ok := second[ev.Token]; !ok {
					second[ev.Token] = at
				}
			}
		}
		return true
	})

	run := func(ph joinPhase) joinResult {
		for i, n := range bed.Nodes {
			if err := nodes[i].Reload(context.Background(), nodePolicy(n, ph)); err != nil {
				b.Fatal(err)
			}
		}
		mu.Lock()
		clear(created)
		clear(second)
		mu.Unlock()
		cli0, nodes0 := countersOf(b, bed.Client), joinCounters(b, bed)
		p := testbed.StartPyClients(b, bed.Client, testbed.PyClientsSpec{Dst: bed.ProxyAddr, Port: fleetAppPort, Count: conns, MPTCP: true})
		deadline := time.Now().Add(window)
		for time.Now().Before(deadline) {
			mu.Lock()
			n := len(second)
			mu.Unlock()
			if n >= conns {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		cli1, nodes1 := countersOf(b, bed.Client), joinCounters(b, bed)
		if f := p.Stop().Failed(); len(f) > 0 {
			b.Errorf("%s: %d connections failed, first %+v", ph.name, len(f), f[0])
		}
		r := joinResult{conns: conns,
			tried:     cli1["MPTcpExtMPJoinSynTx"] - cli0["MPTcpExtMPJoinSynTx"],
			completed: nodes1["MPTcpExtMPJoinAckRx"] - nodes0["MPTcpExtMPJoinAckRx"],
			noToken:   nodes1["MPTcpExtMPJoinNoTokenFound"] - nodes0["MPTcpExtMPJoinNoTokenFound"]}
		mu.Lock()
		for tok, t0 := range created {
			if t1, ok := second[tok]; ok {
				r.withSecond++
				r.toSecond = append(r.toSecond, float64(t1.Sub(t0).Microseconds())/1000)
			}
		}
		mu.Unlock()
		// The next phase starts with no connection left.
		eventually(b, "the connections closed", 30*time.Second, func() (bool, string) {
			n, err := bed.Client.MPTCPConns()
			return err == nil && n == 0, fmt.Sprintf("%d MPTCP connections left, %v", n, err)
		})
		return r
	}

	for range b.N {
		results := map[string][]joinResult{}
		for round := 0; round < 2; round++ {
			for _, ph := range phases {
				results[ph.name] = append(results[ph.name], run(ph))
			}
		}
		var lines []string
		for _, ph := range phases {
			for i, r := range results[ph.name] {
				lines = append(lines, fmt.Sprintf("%-42s round %d: second path %3d/%d within %v, joins %3d tried %3d completed (%5.1f %%) %3d no token, time to second path p50 %7.1f ms p90 %7.1f ms max %7.1f ms",
					ph.name, i+1, r.withSecond, r.conns, window, r.tried, r.completed, 100*float64(r.completed)/float64(max(r.tried, 1)), r.noToken, r.pct(0.5), r.pct(0.9), r.pct(1)))
			}
		}
		// Printed rather than logged: a benchmark's log is cut at a few
		// lines.
		fmt.Printf("fleet joins, 3 nodes, %d connections per phase:\n%s\n", conns, strings.Join(lines, "\n"))
		feat, none := results[phases[0].name], results[phases[2].name]
		var fp50, np50 float64
		for i := range feat {
			fp50 += feat[i].pct(0.5) / float64(len(feat))
			np50 += none[i].pct(0.5) / float64(len(none))
		}
		b.ReportMetric(fp50, "feature-p50-ms")
		b.ReportMetric(np50, "without-p50-ms")
		if fp50 > 0 {
			b.ReportMetric(np50/fp50, "p50-ratio")
		}
	}
}
