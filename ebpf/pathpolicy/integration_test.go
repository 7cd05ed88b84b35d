//go:build linux

package pathpolicy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestIntegrationPolicyAndTelemetry: a real MPTCP bulk transfer from a
// client in a fresh cgroup over two shaped links. The policy asks for cubic
// on the lte address while the namespace's default is bbr; `ss -ti` must
// show exactly that per subflow, and the telemetry map's RTT must agree with
// ss's within 20 %.
func TestIntegrationPolicyAndTelemetry(t *testing.T) {
	tp := newTopo(t)
	defCC := "bbr"
	if avail, _ := AvailableCongestion(); !strings.Contains(" "+strings.Join(avail, " ")+" ", " bbr ") {
		defCC = "reno"
	}
	if err := tp.cli.Sysctl("net.ipv4.tcp_congestion_control", defCC); err != nil {
		t.Fatal(err)
	}
	// Queueing in tbf makes the two paths' RTTs distinct and steady while
	// the sender keeps both queues full.
	for _, a := range [][]string{
		{"tc", "qdisc", "add", "dev", "wifi0", "root", "tbf", "rate", "40mbit", "burst", "16kb", "latency", "20ms"},
		{"tc", "qdisc", "add", "dev", "lte0", "root", "tbf", "rate", "10mbit", "burst", "16kb", "latency", "60ms"},
	} {
		tp.cli.MustRun(a...)
	}

	p, err := Load(Options{Cgroup: tp.cgroup, NetNS: tp.cli.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := p.SetInterfacePolicy(netip.MustParseAddr(lteAddr), Policy{Congestion: "cubic", Mark: 0x77}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetInterfacePolicy(netip.MustParseAddr(lteAddr), Policy{Congestion: "nosuchcc"}); err == nil || !strings.Contains(err.Error(), "tcp_available_congestion_control") {
		t.Fatalf("unknown congestion control: err = %v, want it to name the available ones", err)
	}

	tp.startServer(t)
	done := tp.startClient(t, 6*time.Second)
	time.Sleep(2 * time.Second) // both subflows up, tbf queues full

	// ss's view and the map's while the sender keeps both tbf queues full,
	// so the RTTs are steady: the map (updated once per round trip, on
	// RTT_CB) is read right before and right after ss, and ss's value must
	// lie within 20 % of what the map showed around it. A few rounds are
	// allowed for each subflow.
	agreed := map[string]bool{}
	var last string
	for round := 0; round < 5 && len(agreed) < 2; round++ {
		before, err := p.Telemetry()
		if err != nil {
			t.Fatal(err)
		}
		socks := ssTCP(t, tp.cli)
		stats, err := p.Telemetry()
		if err != nil {
			t.Fatal(err)
		}
		prev := map[string]time.Duration{}
		for _, s := range before {
			prev[s.Local.String()] = s.SRTT
		}
		byLocal := map[string]SubflowStats{}
		for _, s := range stats {
			byLocal[s.Local.String()] = s
			if a := s.Local.Addr().String(); a != wifiAddr && a != lteAddr {
				t.Fatalf("telemetry holds %v → %v: a socket outside the cgroup", s.Local, s.Remote)
			}
		}
		last = ""
		for _, ss := range socks {
			if !strings.HasSuffix(ss.remote, ":"+srvPort) {
				continue
			}
			addr := ss.local[:strings.LastIndex(ss.local, ":")]
			want := defCC
			if addr == lteAddr {
				want = "cubic"
			}
			if ss.cc != want {
				t.Fatalf("ss -ti: subflow %s → %s uses %q, want %q (%s)", ss.local, ss.remote, ss.cc, want, ss.info)
			}
			s, ok := byLocal[ss.local]
			if !ok {
				t.Fatalf("no telemetry for subflow %s (have %v)", ss.local, stats)
			}
			if s.Applied.Congestion != (addr == lteAddr) || s.Applied.Mark != (addr == lteAddr) || !s.MPTCP {
				t.Fatalf("subflow %s: applied %+v mptcp %v", ss.local, s.Applied, s.MPTCP)
			}
			lo, hi := s.SRTT, s.SRTT
			if r, ok := prev[ss.local]; ok {
				lo, hi = min(lo, r), max(hi, r)
			}
			last += " " + ss.local + ": ss " + ss.rtt.String() + " map " + lo.String() + ".." + hi.String()
			if float64(ss.rtt) >= 0.8*float64(lo) && float64(ss.rtt) <= 1.2*float64(hi) {
				agreed[addr] = true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("RTTs:%s", last)
	if !agreed[wifiAddr] || !agreed[lteAddr] {
		t.Fatalf("telemetry RTT never within 20%% of ss -ti for both subflows (agreed %v); last round:%s", agreed, last)
	}
	<-done
	// Closed sockets leave the map (once the kernel has sent what the
	// client left queued and the connection is torn down).
	deadline := time.Now().Add(15 * time.Second)
	for {
		stats, err := p.Telemetry()
		if err != nil {
			t.Fatal(err)
		}
		if len(stats) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("telemetry still holds %d entries after the client closed: %+v", len(stats), stats)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
