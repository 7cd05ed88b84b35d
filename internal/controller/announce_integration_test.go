//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/controller"
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
// arrives.
func TestIntegrationServerAnnounceFollows(t *testing.T) {
	const size = 48 << 20
	e := setup(t, size)
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

	mon := &lockedBuf{}
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
	wait()
}
