//go:build linux

package controller_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// Server side, `announce: - interface: lte1`: the proxy's lte1 address is
// added only after the connection is up, and the daemon announces it to
// that live connection; removing it sends RM_ADDR. Oracles in the client
// namespace: `ip mptcp monitor` (ANNOUNCED, REMOVED with the address) and
// `ss` (the subflow the client's in-kernel PM opens to the address, gone
// after the withdrawal). Added again, it is announced again; removed while
// no daemon runs, the next daemon withdraws it on adopt. Every byte
// arrives. The address comes and goes halfway through the download, on an
// idle connection: RM_ADDR is sent once, and while segments move the
// kernel can lose it (TestIntegrationPeerAddresses says how).
func TestIntegrationServerAnnounceFollows(t *testing.T) {
	const size = 48 << 20
	e := setupMode(t, size, "pause")
	b := e.bed
	b.Client.MustRun("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	lteAddr := b.ProxyLTEAddr.String() + "/24"
	b.Proxy.MustRun("ip", "addr", "del", lteAddr, "dev", testbed.ProxyLTEIf)
	t.Cleanup(func() { b.Proxy.Run("ip", "addr", "add", lteAddr, "dev", testbed.ProxyLTEIf) })
	p, err := policy.Parse([]byte(`
side: server
path_manager: userspace
steering: aggregate
routing: off
interfaces:
  - name: wifi1
    role: wifi
  - name: lte1
    role: lte
announce:
  - interface: lte1
metrics:
  listen: ""
status_socket: ""
`))
	if err != nil {
		t.Fatal(err)
	}
	_, stop := runController(t, controller.Config{Policy: p, NetNS: b.Proxy.Name})

	mon := &testbed.LockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := b.Client.Command(ctx, "ip", "mptcp", "monitor")
	cmd.Stdout = mon
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	time.Sleep(200 * time.Millisecond)

	toLTE := func() bool {
		out, _ := b.Client.Run("ss", "-tnH", "state", "established", "dst", b.ProxyLTEAddr.String())
		return strings.TrimSpace(out) != ""
	}
	wait := e.download(t, size)
	waitFor(t, b, "the connection established", 10*time.Second, func() bool {
		return strings.Contains(mon.String(), "ESTABLISHED")
	})
	time.Sleep(500 * time.Millisecond)
	if strings.Contains(mon.String(), "ANNOUNCED") || toLTE() {
		t.Fatalf("announced before lte1 had an address:\n%s", mon)
	}
	e.waitPaused(t)

	events := func(kind string) int {
		n := 0
		for _, l := range strings.Split(mon.String(), "\n") {
			if strings.Contains(l, kind) && (kind == "REMOVED" || strings.Contains(l, "daddr4="+b.ProxyLTEAddr.String())) {
				n++
			}
		}
		return n
	}
	rounds := 2
	pm, err := pathmgr.Dial(&pathmgr.Config{NetNS: b.Proxy.Name})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := pm.SupportsConnectionAddrs(); err != nil || !ok {
		// Round 2 needs GET_ADDR with a token to see what was announced.
		t.Logf("GET_ADDR by connection token (Linux 6.7) missing (%v): the restart round is not run", err)
		rounds = 1
	}
	pm.Close()
	for round := 1; round <= rounds; round++ {
		b.Proxy.MustRun("ip", "addr", "add", lteAddr, "dev", testbed.ProxyLTEIf)
		waitFor(t, b, fmt.Sprintf("ADD_ADDR %d of the lte1 address at the client", round), 10*time.Second, func() bool {
			return events("ANNOUNCED") == round
		})
		waitFor(t, b, "the client's subflow to the announced address", 10*time.Second, toLTE)
		if round == 2 {
			// The address goes while no daemon runs: the next one finds
			// it announced in the kernel (GET_ADDR) and withdraws it.
			stop()
		}
		b.Proxy.MustRun("ip", "addr", "del", lteAddr, "dev", testbed.ProxyLTEIf)
		if round == 2 {
			time.Sleep(300 * time.Millisecond)
			if events("REMOVED") != 1 {
				t.Fatalf("RM_ADDR with no daemon running:\n%s", mon)
			}
			runController(t, controller.Config{Policy: p, NetNS: b.Proxy.Name})
		}
		waitFor(t, b, fmt.Sprintf("RM_ADDR %d at the client", round), 10*time.Second, func() bool {
			return events("REMOVED") == round
		})
		waitFor(t, b, "the subflow to the withdrawn address gone", 10*time.Second, func() bool { return !toLTE() })
	}
	e.resume(t)
	wait()
}

// joinListenerPolicy announces the proxy's lte1 address with port 7443,
// not the connection's port (5201).
const joinListenerPolicy = `
side: server
path_manager: userspace
routing: off
interfaces:
  - name: wifi1
    role: wifi
  - name: lte1
    role: lte
announce:
  - address: %s
    port: 7443
metrics:
  listen: ""
status_socket: ""
`

// The userspace PM opens no listener for an announced address:port, and
// the kernel accepts a join to a port other than the connection's only
// through a listener bound to exactly that address and port. The daemon
// keeps one: the proxy's `ss -Mltn` shows it bound to the lte1 address
// (not the wildcard), the client's in-kernel PM joins the announced
// address and port (client `ss`; MPTcpExtMPJoinPortSynRx on the proxy),
// every byte arrives, and a new connection to that port is reset
// (Python) and counted. When a wildcard socket of someone else's holds
// the port, the daemon cannot listen and the same join is refused
// (MPTcpExtMismatchPortSynRx): the listener is what makes it work.
func TestIntegrationJoinListener(t *testing.T) {
	const size = 24 << 20
	for _, taken := range []bool{false, true} {
		t.Run(fmt.Sprintf("port taken %v", taken), func(t *testing.T) {
			e := setup(t, size)
			b := e.bed
			resendAddAddrSoon(b)
			b.Client.MustRun("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
			announced := netip.AddrPortFrom(b.ProxyLTEAddr, 7443)
			if taken {
				// A wildcard MPTCP listener of someone else's on 7443.
				ctx, cancel := context.WithCancel(context.Background())
				cmd := b.Proxy.Command(ctx, "python3", "-c", `import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.bind(("0.0.0.0", 7443)); s.listen(8)
print("ok", flush=True); sys.stdin.read()`)
				in, _ := cmd.StdinPipe()
				out, _ := cmd.StdoutPipe()
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { in.Close(); cancel(); cmd.Wait() })
				if l, _ := bufio.NewReader(out).ReadString('\n'); l != "ok\n" {
					t.Fatalf("wildcard listener: %q", l)
				}
			}
			p, err := policy.Parse([]byte(fmt.Sprintf(joinListenerPolicy, b.ProxyLTEAddr)))
			if err != nil {
				t.Fatal(err)
			}
			m := metrics.New()
			runController(t, controller.Config{Policy: p, NetNS: b.Proxy.Name, Metrics: m})
			ln := b.Proxy.MustRun("ss", "-MltnH")
			if got := strings.Contains(ln, announced.String()); got == taken {
				t.Fatalf("proxy's MPTCP listeners (ss -Mltn), taken %v:\n%s", taken, ln)
			}
			if got := metricValue(m.JoinListeners); got != float64(b2i(!taken)) {
				t.Errorf("%s = %v", metrics.JoinListeners, got)
			}

			wait := e.download(t, size)
			c0 := countersOf(t, b.Proxy)
			toPort := func() bool {
				out, _ := b.Client.Run("ss", "-tnH", "state", "established", "dst", announced.String())
				return strings.TrimSpace(out) != ""
			}
			if !taken {
				waitFor(t, b, "the client's subflow to "+announced.String(), 10*time.Second, toPort)
				wait()
				if c := countersOf(t, b.Proxy); c["MPTcpExtMPJoinPortSynRx"] < 1 || c["MPTcpExtMismatchPortSynRx"] != 0 {
					t.Errorf("proxy counters %v: want a join to another port and no mismatch", c)
				}
				// A new connection to the join port: reset, counted. The
				// reset can beat connect's wake-up (ECONNRESET from
				// connect: established, then reset; a refused SYN would
				// be ECONNREFUSED).
				out, err := b.Client.Run("python3", "-c", `import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.settimeout(5)
try:
    s.connect((sys.argv[1], 7443))
    print("read", len(s.recv(1)))
except ConnectionResetError:
    print("reset")`, b.ProxyLTEAddr.String())
				if err != nil || (strings.TrimSpace(out) != "reset" && strings.TrimSpace(out) != "read 0") {
					t.Errorf("a new connection to the join port: %v %q, want it reset or closed", err, out)
				}
				waitFor(t, b, "the refused connection counted", 5*time.Second, func() bool { return metricValue(m.JoinPortRefused) == 1 })
				return
			}
			waitFor(t, b, "the refused join", 10*time.Second, func() bool {
				return countersOf(t, b.Proxy)["MPTcpExtMismatchPortSynRx"] > c0["MPTcpExtMismatchPortSynRx"]
			})
			if toPort() {
				t.Error("a subflow to the announced port although no listener was bound to it")
			}
			wait()
		})
	}
}

func countersOf(t testing.TB, n *testbed.NetNS) map[string]uint64 {
	t.Helper()
	c, err := n.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// metricValue reads a gauge's or counter's value.
func metricValue(m prometheus.Metric) float64 {
	var v dto.Metric
	m.Write(&v)
	if v.Gauge != nil {
		return v.GetGauge().GetValue()
	}
	return v.GetCounter().GetValue()
}
