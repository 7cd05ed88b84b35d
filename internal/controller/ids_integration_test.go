//go:build linux

package controller_test

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

var endpointLine = regexp.MustCompile(`^(\S+) id (\d+) .*dev (\S+)`)

// With the in-kernel PM, interfaces whose indexes are 121 and 241
// (ifindex%120+1 gave both id 2, so the kernel took one endpoint and
// refused the other) get an endpoint each, with ids of their own; an
// endpoint made by hand on interface 122 with id 3 (what ifindex%120+1
// gives it: the old test of ownership took it for the daemon's and
// deleted it) is never touched, through an interface flap and the stop.
// `ip mptcp endpoint show` is the oracle.
func TestIntegrationLocalIDs(t *testing.T) {
	b := testbed.UpT(t, testbed.Spec{})
	for _, l := range []struct {
		name  string
		index int
	}{{"eth121", 121}, {"eth241", 241}, {"dum122", 122}} {
		// A veth with both ends here (no dummy driver on this kernel).
		peer := fmt.Sprintf("peer%d", l.index)
		b.Client.MustRun("ip", "link", "add", l.name, "index", fmt.Sprint(l.index), "type", "veth", "peer", "name", peer)
		b.Client.MustRun("ip", "addr", "add", fmt.Sprintf("10.77.%d.2/24", l.index), "dev", l.name)
		b.Client.MustRun("ip", "link", "set", peer, "up")
		b.Client.MustRun("ip", "link", "set", l.name, "up")
	}
	b.Client.MustRun("ip", "mptcp", "endpoint", "add", "10.77.122.2", "id", "3", "dev", "dum122", "subflow")
	pol := strings.Replace(fmt.Sprintf(basePolicy, "aggregate", ""), "path_manager: userspace", "path_manager: kernel", 1)
	pol = strings.Replace(pol, "metrics:", "  - match: \"eth*\"\n    role: ethernet\nmetrics:", 1)
	p, err := policy.Parse([]byte(pol))
	if err != nil {
		t.Fatal(err)
	}
	_, stop := runController(t, controller.Config{Policy: p, NetNS: b.Client.Name, StateDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})

	endpoints := func() map[string]string { // dev -> "addr id N"
		out, _ := b.Client.Run("ip", "mptcp", "endpoint", "show")
		m := map[string]string{}
		for _, l := range strings.Split(out, "\n") {
			if f := endpointLine.FindStringSubmatch(l); f != nil {
				m[f[3]] = f[1] + " id " + f[2]
			}
		}
		return m
	}
	distinct := func() (bool, string) {
		m := endpoints()
		ids := map[string]bool{}
		for _, dev := range []string{"wifi0", "lte0", "eth121", "eth241"} {
			e, ok := m[dev]
			if !ok {
				return false, fmt.Sprint(m)
			}
			id := e[strings.LastIndex(e, " ")+1:]
			if ids[id] {
				return false, fmt.Sprint(m)
			}
			ids[id] = true
		}
		return m["dum122"] == "10.77.122.2 id 3", fmt.Sprint(m)
	}
	testbed.Eventually(t, "an endpoint with an id of its own for wifi0, lte0, eth121 and eth241, the hand-made one as it was", distinct)

	b.Client.MustRun("ip", "link", "set", "eth121", "down")
	testbed.Eventually(t, "eth121's endpoint gone while it is down", func() (bool, string) {
		m := endpoints()
		_, ok := m["eth121"]
		return !ok && m["dum122"] == "10.77.122.2 id 3", fmt.Sprint(m)
	})
	b.Client.MustRun("ip", "link", "set", "eth121", "up")
	testbed.Eventually(t, "eth121's endpoint back", distinct)
	stop()
	time.Sleep(100 * time.Millisecond)
	if m := endpoints(); m["dum122"] != "10.77.122.2 id 3" {
		t.Errorf("after the stop the hand-made endpoint is %q: %v", m["dum122"], m)
	}
}
