//go:build linux

package testbed

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestFleetSpecRejected(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{Proxies: -1}, "valid is 1"},
		{Spec{Proxies: MaxProxies + 1}, "valid is 1"},
		{Spec{Proxies: 3, Balance: "random"}, `balance "random"`},
		{Spec{Balance: BalanceNumgen}, "needs a fleet"},
	} {
		// Refused before anything is built (no root needed).
		_, err := Up(context.Background(), c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Up(%+v) = %v, want an error with %q", c.spec, err, c.want)
		}
	}
}

func TestFleetRuleset(t *testing.T) {
	b := newBed(Spec{Proxies: 3, Balance: BalanceJHash}, &NetNS{Name: "c"}, &NetNS{Name: "lb"}, &NetNS{Name: "o"})
	for i := 1; i <= 3; i++ {
		b.Nodes = append(b.Nodes, newNode(i, &NetNS{Name: "n"}))
	}
	rs := b.ruleset(true)
	for _, want := range []string{
		"table inet gp_lb {",
		"chain node2 {\n\t\tmeta nfproto ipv4 counter dnat ip to 10.201.12.2\n\t\tmeta nfproto ipv6 counter dnat ip6 to fd00:201:12::2\n\t}",
		"type nat hook prerouting priority dstnat; policy accept;",
		"add rule inet gp_lb service ip daddr 10.201.0.1 meta l4proto tcp counter jhash ip saddr . tcp sport mod 3 vmap { 0 : goto node1, 1 : goto node2, 2 : goto node3 }",
		"add rule inet gp_lb service ip6 daddr fd00:201::1 meta l4proto tcp counter jhash ip6 saddr . tcp sport mod 3 vmap { 0 : goto node1, 1 : goto node2, 2 : goto node3 }",
	} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}
	// Out of the balancer: the service chain alone is replaced.
	b.out[2] = true
	b.Spec.Balance = BalanceNumgen
	rs = b.ruleset(false)
	if strings.Contains(rs, "table inet") || !strings.HasPrefix(rs, "flush chain inet gp_lb service\n") {
		t.Errorf("update rewrites more than the service chain:\n%s", rs)
	}
	if !strings.Contains(rs, "numgen inc mod 2 vmap { 0 : goto node1, 1 : goto node3 }") {
		t.Errorf("node 2 still balanced or wrong slots:\n%s", rs)
	}
	b.out[1], b.out[3] = true, true
	if rs = b.ruleset(false); !strings.Contains(rs, "ip daddr 10.201.0.1 meta l4proto tcp counter reject with tcp reset") {
		t.Errorf("no node left: want a reset:\n%s", rs)
	}
}

func TestParseNodeFlows(t *testing.T) {
	js := `{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "gp_lb"}},
{"rule": {"family": "inet", "table": "gp_lb", "chain": "node1", "expr": [{"match": {}}, {"counter": {"packets": 5, "bytes": 300}}, {"dnat": {}}]}},
{"rule": {"family": "inet", "table": "gp_lb", "chain": "node1", "expr": [{"match": {}}, {"counter": {"packets": 2, "bytes": 160}}, {"dnat": {}}]}},
{"rule": {"family": "inet", "table": "gp_lb", "chain": "node12", "expr": [{"counter": {"packets": 7, "bytes": 1}}]}},
{"rule": {"family": "inet", "table": "gp_lb", "chain": "service", "expr": [{"counter": {"packets": 99, "bytes": 1}}]}}]}`
	got, err := parseNodeFlows(js)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1] != 7 || got[12] != 7 {
		t.Errorf("parseNodeFlows = %v, want node1 7, node12 7", got)
	}
	if _, err := parseNodeFlows("not json"); err == nil {
		t.Error("bad JSON gave no error")
	}
}

func TestParseClientConns(t *testing.T) {
	ss := `0 0 10.201.1.2:45172 10.201.0.1:1080 ino:11 sk:1 <->
0 0 10.201.2.2%lte0:38529 10.201.100.1:1080 ino:11 sk:2 <->
0 0 10.201.1.2:45173 10.201.0.1:1080 ino:12 sk:3 <->
0 0 127.0.0.1:1080 127.0.0.1:5000 ino:13 sk:4 <->
`
	b := &Bed{ProxyAddr: netip.MustParseAddr("10.201.0.1"), Nodes: []*Node{newNode(1, nil)}}
	got := parseClientConns(ss, b)
	if len(got) != 2 {
		t.Fatalf("parseClientConns = %+v, want 2 connections", got)
	}
	wifi, lte := netip.MustParseAddr("10.201.1.2"), netip.MustParseAddr("10.201.2.2")
	if c := got[1]; c.Node(b) != 0 || !c.From(wifi) || c.From(lte) || len(c.Subflows) != 1 {
		t.Errorf("wifi-only connection: %+v", c)
	}
	if c := got[0]; c.Node(b) != 1 || !c.From(wifi) || !c.From(lte) || c.Subflows[1].Remote != netip.MustParseAddrPort("10.201.100.1:1080") {
		t.Errorf("two-path connection: %+v", c)
	}
	if in, ok := got[0].Initial(b); !ok || in.Local != netip.MustParseAddrPort("10.201.1.2:45172") {
		t.Errorf("initial subflow %+v %v", in, ok)
	}
}
