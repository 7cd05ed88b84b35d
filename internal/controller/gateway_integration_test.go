//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// The lte link's next hop answers ARP only for its own addresses (the
// proxy's lte1 with arp_ignore=1 and no proxy ARP: a router), and the
// client's main table has no default route through lte0. The managed
// table's on-link default then makes the lte subflow ARP for the service
// address, which nobody answers: the join never gets established. The
// daemon says which next hop lte0's table uses and why, counts the failed
// subflows of lte0 (gigapath_subflow_failures_total) and warns with the
// kernel's error; a reload with interfaces[].gateway set to the router's
// address fixes it: the lte subflow is established (ss is the oracle).
func TestIntegrationGateway(t *testing.T) {
	b := testbed.UpT(t, testbed.Spec{})
	b.Client.MustRun("ip", "route", "add", "default", "via", b.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf)
	b.Proxy.MustRun("sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf."+testbed.ProxyLTEIf+".arp_ignore=1",
		"net.ipv4.conf.all.proxy_arp=0")
	// A join that gets no answer fails after one SYN retransmission (3 s)
	// instead of the default six (127 s).
	b.Client.MustRun("sysctl", "-qw", "net.ipv4.tcp_syn_retries=1")
	b.Proxy.MustRun("ip", "mptcp", "limits", "set", "subflow", "8", "add_addr_accepted", "8")
	const port = 5301
	testbed.ServeT(t, b.Proxy, "tcp", fmt.Sprintf("0.0.0.0:%d", port), true, testbed.Sink)

	const pol = `
path_manager: userspace
steering: aggregate
interfaces:
  - name: wifi0
    role: wifi
  - name: lte0
    role: lte%s
metrics: {listen: ""}
status_socket: ""
log: {level: debug}
`
	p, err := policy.Parse([]byte(fmt.Sprintf(pol, "")))
	if err != nil {
		t.Fatal(err)
	}
	log := &testbed.LockedBuffer{}
	m := metrics.New()
	ctl, _ := runController(t, controller.Config{Policy: p, NetNS: b.Client.Name, Metrics: m, Logger: controller.NewLogger(log, p.Log)})
	if !strings.Contains(log.String(), `msg="next hop" interface=lte0 table=`) || !strings.Contains(log.String(), "next_hop=on-link why=") {
		t.Errorf("no next-hop line saying lte0's table is on-link:\n%s", log)
	}
	c := testbed.DialMPTCPT(t, b.Client, "tcp", "", fmt.Sprintf("%s:%d", b.ProxyAddr, port))
	testbed.KeepSending(t, c)

	failures := func() float64 {
		var v dto.Metric
		m.SubflowFailures.WithLabelValues(testbed.LTEIf).Write(&v)
		return v.GetCounter().GetValue()
	}
	lteEstablished := func() (bool, string) {
		out := b.Client.MustRun("ss", "-tnH", "state", "established", "src", b.LTEAddr.String())
		return strings.Contains(out, fmt.Sprintf("%s:%d", b.ProxyAddr, port)), out
	}
	deadline := time.Now().Add(20 * time.Second)
	for failures() == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if failures() == 0 {
		t.Fatalf("no failed lte subflow counted in 20 s:\n%s", log)
	}
	if ok, out := lteEstablished(); ok {
		t.Fatalf("an lte subflow got established through the on-link default, the topology tests nothing:\n%s", out)
	}
	warn := ""
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, `level=WARN msg="subflow failed to establish" interface=lte0`) {
			warn = l
		}
	}
	if warn == "" || !strings.Contains(warn, "next_hop=on-link") || strings.Contains(warn, `err=""`) {
		t.Fatalf("no warning for lte0 with the kernel's error and the next hop:\n%s", log)
	}
	t.Logf("warning: %s", warn)

	np, err := policy.Parse([]byte(fmt.Sprintf(pol, "\n    gateway: "+b.ProxyLTEAddr.String())))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ctl.Reload(ctx, np); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`msg="next hop" interface=lte0 table=%d family=ipv4 next_hop="via %s" why=interfaces[].gateway`, 1000+linkIndex(t, b.Client, testbed.LTEIf), b.ProxyLTEAddr)
	if !strings.Contains(log.String(), want) {
		t.Errorf("no next-hop line for the gateway (%s):\n%s", want, log)
	}
	testbed.Eventually(t, "the lte subflow established through the gateway", lteEstablished)
}

// linkIndex is the interface index of name in ns.
func linkIndex(t *testing.T, ns *testbed.NetNS, name string) int {
	t.Helper()
	var idx int
	out := ns.MustRun("ip", "-o", "link", "show", name)
	if _, err := fmt.Sscanf(out, "%d:", &idx); err != nil {
		t.Fatalf("ip link show %s: %q: %v", name, out, err)
	}
	return idx
}
