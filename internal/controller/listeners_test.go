package controller

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// A server with the userspace PM listens on every address:port it
// announces with a port: a fixed address (wherever it is), each address of
// an interface entry while the interface counts as up; not for entries
// without a port (the connection's own listener serves those). A port
// another socket holds is tried again after listenRetry, and a reload
// that drops the entry closes its listener.
func TestJoinListeners(t *testing.T) {
	now := time.Unix(7000, 0)
	yaml := strings.Replace(reloadBases["server"], "announce:\n  - interface: lte0\n  - address: 192.0.2.50\n",
		"announce:\n  - interface: lte0\n    port: 1081\n  - address: 192.0.2.50\n  - address: 192.0.2.60\n    port: 1082\n", 1)
	log := &testbed.LockedBuffer{}
	c, k, _ := fakeController(t, yaml, log)
	c.now = func() time.Time { return now }
	// lte0 has 10.1.2.2 and fe80::2 in the fake namespace, and the
	// policy skips link-local addresses.
	want := []string{"10.1.2.2:1081", "192.0.2.60:1082"}
	if got := k.listens(); !slices.Equal(got, want) {
		t.Fatalf("listening on %q, want %q", got, want)
	}

	// lte0 down: held for announceHold like its announcement, then closed.
	st := c.netRaw()
	lte := st.Links[3]
	lte.OperUp = false
	st.Links[3] = lte
	c.netRaw = func() netmon.State { return st }
	c.handleNet(netmon.Event{Type: netmon.LinkDown, Link: lte})
	if got := k.listens(); !slices.Equal(got, want) {
		t.Errorf("lte0 just down: listening on %q, want %q (held)", got, want)
	}
	now = now.Add(announceHold)
	c.tick()
	if got := k.listens(); !slices.Equal(got, []string{"192.0.2.60:1082"}) {
		t.Errorf("lte0 down past the hold: listening on %q", got)
	}

	// The port is taken by someone else when lte0 comes back: tried again
	// only after listenRetry, then opened once it is free.
	busy := netip.MustParseAddrPort("10.1.2.2:1081")
	k.listenErr[busy] = fmt.Errorf("listen on %s: %w", busy, syscall.EADDRINUSE)
	lte.OperUp = true
	st.Links[3] = lte
	c.handleNet(netmon.Event{Type: netmon.LinkUp, Link: lte})
	if got := k.listens(); slices.Contains(got, busy.String()) {
		t.Fatalf("listening on a port in use: %q", got)
	}
	if !strings.Contains(log.String(), "another socket listens on the port") {
		t.Errorf("no log line for the port in use:\n%s", log)
	}
	delete(k.listenErr, busy)
	now = now.Add(listenRetry - time.Second)
	c.tick()
	if got := k.listens(); slices.Contains(got, busy.String()) {
		t.Errorf("retried before listenRetry: %q", got)
	}
	now = now.Add(time.Second)
	c.tick()
	if got := k.listens(); !slices.Contains(got, busy.String()) {
		t.Errorf("not retried after listenRetry: %q", got)
	}

	// A reload without the port closes the listener.
	np, err := policy.Parse([]byte(strings.Replace(yaml, "  - address: 192.0.2.60\n    port: 1082\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.reload(np); err != nil {
		t.Fatal(err)
	}
	if got := k.listens(); slices.Contains(got, "192.0.2.60:1082") {
		t.Errorf("after the reload without port 1082: listening on %q", got)
	}
}

// With the in-kernel PM on the server, announce: entries are its signal
// endpoints (with their ports) instead of one per interface address, and
// the daemon opens no listener: the kernel listens for a signal endpoint
// with a port itself. An address not on the host is tried again every
// tick until it is.
func TestKernelPMAnnounce(t *testing.T) {
	yaml := strings.Replace(reloadBases["server"], "path_manager: userspace", "path_manager: kernel", 1)
	yaml = strings.Replace(yaml, "announce:\n  - interface: lte0\n  - address: 192.0.2.50\n",
		"announce:\n  - interface: lte0\n    port: 1081\n  - address: 10.1.4.2\n", 1)
	c, k, _ := fakeController(t, yaml, &testbed.LockedBuffer{})
	want := []string{"add 1 10.1.2.2 port 1081 dev 3 flags signal", "add 2 10.1.4.2 dev 4"}
	if got := slices.Sorted(slices.Values(k.epCmds)); !slices.Equal(got, want) {
		t.Errorf("endpoints %q, want %q", got, want)
	}
	if got := k.listens(); len(got) != 0 {
		t.Errorf("in-kernel PM: the daemon listens on %q", got)
	}
	for _, e := range k.endpoints {
		if e.Flags != pathmgr.FlagSignal {
			t.Errorf("endpoint %+v is not signal only", e)
		}
	}

	// A fixed address the host does not have (yet).
	k.epCmds = nil
	k.addErr = map[netip.Addr]error{netip.MustParseAddr("192.0.2.99"): fmt.Errorf("create listen socket error: -99")}
	np, err := policy.Parse([]byte(strings.Replace(yaml, "address: 10.1.4.2", "address: 192.0.2.99", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.reload(np); err != nil {
		t.Fatal(err)
	}
	if len(c.kpmFailed) != 1 {
		t.Fatalf("failed endpoints %v", c.kpmFailed)
	}
	delete(k.addErr, netip.MustParseAddr("192.0.2.99"))
	c.tick()
	if len(c.kpmFailed) != 0 || !slices.Contains(k.epCmds, "add 3 192.0.2.99 dev 0") {
		t.Errorf("retried at the tick: failed %v, commands %q", c.kpmFailed, k.epCmds)
	}
}
