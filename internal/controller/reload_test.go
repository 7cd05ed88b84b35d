package controller

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// Bases for TestReloadEveryKey: a client, and variants for the keys that
// only apply to a server, the in-kernel PM or a steering mode.
const reloadClient = `path_manager: userspace
steering: aggregate
peer_addresses: ignore
interfaces:
  - name: wifi0
    role: wifi
    max_subflows: 2
  - name: lte0
    role: lte
    max_subflows: 2
routing:
  mode: managed
metrics: {listen: ""}
status_socket: ""
log: {level: info, format: text}
skip_link_local: true
`

var reloadBases = map[string]string{
	"client": reloadClient,
	"server": `side: server
path_manager: userspace
interfaces:
  - name: wifi0
    role: wifi
  - name: lte0
    role: lte
  - name: eth0
    role: ethernet
announce:
  - interface: lte0
  - address: 192.0.2.50
metrics: {listen: ""}
status_socket: ""
`,
	"kernel":      strings.Replace(reloadClient, "path_manager: userspace", "path_manager: kernel\nlimits: {subflows: 4, add_addr_accepted: 4}", 1),
	"peers":       strings.Replace(strings.ReplaceAll(reloadClient, "max_subflows: 2", "max_subflows: 1"), "peer_addresses: ignore", "peer_addresses: use", 1),
	"routing-off": strings.Replace(reloadClient, "mode: managed", "mode: off", 1),
	"realtime":    strings.Replace(reloadClient, "steering: aggregate", "steering: aggregate\ncreates: {thread: realtime, priority: 10}", 1),
	"priority":    strings.Replace(reloadClient, "steering: aggregate", "steering: priority\npriority: {rtt_ms: 200, loss_percent: 5, reorder_percent: 30, hysteresis_percent: 20, hold: 5s}", 1),
	"handover":    strings.Replace(reloadClient, "steering: aggregate", "steering: handover\nhandover: {rtt_ms: 500, loss_percent: 20, reorder_percent: 10, interval: 1s, failures: 3, hold: 3s}", 1),
}

// reloadCase changes one key (base, with the replacements old→new done in
// order) and checks what the controller did with it; check is nil for a
// key whose fate is Restart (refused, naming the key, old policy kept).
type reloadCase struct {
	base     string
	replace  []string // old, new, old, new, ...
	check    func(t *testing.T, c *Controller, k *fakeKernel, log *testbed.LockedBuffer)
	diffKeys []string // the keys the change shows as, when not the key itself
}

func hasCmd(t *testing.T, k *fakeKernel, want ...string) {
	t.Helper()
	got := k.take()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("commands %q, want %q among them", got, w)
		}
	}
}

var reloadCases = map[string]reloadCase{
	"side":         {base: "client", replace: []string{"path_manager: userspace", "side: server\npath_manager: userspace"}},
	"path_manager": {base: "client", replace: []string{"path_manager: userspace", "path_manager: kernel"}},
	"steering": {base: "client", replace: []string{"steering: aggregate", "steering: active-standby"},
		diffKeys: []string{"steering", "interfaces[].backup"}, // lte's default backup follows the mode
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			hasCmd(t, k, "backup "+fakeLTE.String()+" true") // lte is backup under active-standby
		}},
	"scheduler": {base: "client", replace: []string{"steering: aggregate", "steering: aggregate\nscheduler: redundant"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if !slices.Equal(k.scheds, []string{"redundant"}) {
				t.Errorf("schedulers selected %q, want redundant", k.scheds)
			}
		}},
	"path_cgroup": {base: "client", replace: []string{"steering: aggregate", "steering: aggregate\npath_cgroup: gigapath/x"}},
	"mptcpify":    {base: "client", replace: []string{"steering: aggregate", "steering: aggregate\nmptcpify: [app.service]"}},
	"interfaces": {base: "client", replace: []string{"routing:", "  - name: eth0\n    role: ethernet\nrouting:"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if _, ok := c.ifs[4]; !ok {
				t.Errorf("eth0 added to the policy: interfaces %v", c.ifs)
			}
			hasCmd(t, k, "create 4>10.0.0.1:443 id 2 backup false")
		}},
	"interfaces[].name": {base: "client", replace: []string{"name: lte0", "name: eth0"}, diffKeys: []string{"interfaces"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if _, ok := c.ifs[4]; !ok || c.ifs[3] != nil {
				t.Errorf("interfaces after renaming lte0 to eth0: %v", c.ifs)
			}
			hasCmd(t, k, "create 4>10.0.0.1:443 id 2 backup false")
		}},
	"interfaces[].match": {base: "client", replace: []string{"name: lte0", `match: "lte*"`}, diffKeys: []string{"interfaces"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if i := c.ifs[3]; i == nil || i.pol.Match != "lte*" {
				t.Errorf("lte0 under match lte*: %+v", i)
			}
		}},
	"interfaces[].role": {base: "client", replace: []string{"role: lte", "role: other"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if s := c.snapshot(); s.Interfaces[1].Role != "other" {
				t.Errorf("status shows lte0 as %q, want other", s.Interfaces[1].Role)
			}
		}},
	"interfaces[].backup": {base: "client", replace: []string{"role: lte", "role: lte\n    backup: true"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			hasCmd(t, k, "backup "+fakeLTE.String()+" true")
		}},
	"interfaces[].max_subflows": {base: "peers", replace: []string{"role: lte\n    max_subflows: 1", "role: lte\n    max_subflows: 2"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			hasCmd(t, k, "create 3>"+fakePeer.String()+" id 1 backup false")
		}},
	"interfaces[].congestion": {base: "client", replace: []string{"role: lte", "role: lte\n    congestion: cubic"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if pp := c.pathPolicies()[netip.MustParseAddr("10.1.2.2")]; pp.Congestion != "cubic" {
				t.Errorf("lte0's socket policy %+v, want cubic", pp)
			}
		}},
	"interfaces[].mark": {base: "client", replace: []string{"role: lte", "role: lte\n    mark: 7"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if pp := c.pathPolicies()[netip.MustParseAddr("10.1.2.2")]; pp.Mark != 7 {
				t.Errorf("lte0's socket policy %+v, want mark 7", pp)
			}
		}},
	"interfaces[].gateway": {base: "client", replace: []string{"role: lte", "role: lte\n    gateway: 10.1.2.1"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, log *testbed.LockedBuffer) {
			if gw := k.ensured[3].Gateway4; gw != netip.MustParseAddr("10.1.2.1") {
				t.Errorf("lte0's table default via %v, want 10.1.2.1", gw)
			}
			if !strings.Contains(log.String(), `msg="next hop" interface=lte0 table=1003 family=ipv4 next_hop="via 10.1.2.1" why=interfaces[].gateway`) {
				t.Errorf("no next-hop line for lte0's gateway:\n%s", log)
			}
		}},
	"peer_addresses": {base: "client", replace: []string{"peer_addresses: ignore", "peer_addresses: use"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			hasCmd(t, k, "create 2>"+fakePeer.String()+" id 2 backup false", "create 3>"+fakePeer.String()+" id 1 backup false")
		}},
	"announce": {base: "server", replace: []string{"  - address: 192.0.2.50\n", "  - address: 192.0.2.50\n  - address: 192.0.2.60\n"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			hasCmd(t, k, "announce 192.0.2.60:0")
		}},
	"announce[].address": {base: "server", replace: []string{"address: 192.0.2.50", "address: 192.0.2.51"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			hasCmd(t, k, "announce 192.0.2.51:0", "remove 2")
		}},
	"announce[].interface": {base: "server", replace: []string{"interface: lte0", "interface: eth0"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			hasCmd(t, k, "announce 10.1.4.2:0", "remove 1")
		}},
	"announce[].port": {base: "server", replace: []string{"address: 192.0.2.50", "address: 192.0.2.50\n    port: 8443"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			hasCmd(t, k, "announce 192.0.2.50:8443", "remove 2")
		}},
	"initial_address_joins": {base: "server", replace: []string{"side: server", "side: server\ninitial_address_joins: refuse"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if v := k.sysctls[joinsSysctl]; v != "0" {
				t.Errorf("%s = %q after the reload to refuse, want 0", joinsKey, v)
			}
		}},
	"limits.subflows": {base: "kernel", replace: []string{"subflows: 4,", "subflows: 2,"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if l := k.limits[len(k.limits)-1]; l != "subflows 2 add_addr_accepted 4" {
				t.Errorf("limits set to %q", l)
			}
		}},
	"limits.add_addr_accepted": {base: "kernel", replace: []string{"add_addr_accepted: 4", "add_addr_accepted: 1"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if l := k.limits[len(k.limits)-1]; l != "subflows 4 add_addr_accepted 1" {
				t.Errorf("limits set to %q", l)
			}
		}},
	// off -> managed: a reload used to keep routing off.
	"routing.mode": {base: "routing-off", replace: []string{"mode: off", "mode: managed"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if c.rt == nil || len(k.routers) != 1 || len(k.ensured) != 2 {
				t.Errorf("routing off -> managed: manager %v, made %v, tables %v", c.rt, k.routers, k.ensured)
			}
		}},
	"routing.table_base": {base: "client", replace: []string{"mode: managed", "mode: managed\n  table_base: 2000"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if k.cleanups != 1 || len(k.routers) != 1 || k.routers[0].TableBase != 2000 || len(k.ensured) != 2 {
				t.Errorf("table_base 2000: cleanups %d, managers made %v, tables %v", k.cleanups, k.routers, k.ensured)
			}
		}},
	"routing.rule_priority": {base: "client", replace: []string{"mode: managed", "mode: managed\n  rule_priority: 500"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if k.cleanups != 1 || len(k.routers) != 1 || k.routers[0].RulePriority != 500 {
				t.Errorf("rule_priority 500: cleanups %d, managers made %v", k.cleanups, k.routers)
			}
		}},
	"priority.rtt_ms":             thrCase("priority", "rtt_ms: 200", "rtt_ms: 100", func(th *thresholds) bool { return th.rtt == 100*time.Millisecond }),
	"priority.loss_percent":       thrCase("priority", "loss_percent: 5", "loss_percent: 7", func(th *thresholds) bool { return th.loss == 7 }),
	"priority.reorder_percent":    thrCase("priority", "reorder_percent: 30", "reorder_percent: 40", func(th *thresholds) bool { return th.reorder == 40 }),
	"priority.hysteresis_percent": thrCase("priority", "hysteresis_percent: 20", "hysteresis_percent: 10", func(th *thresholds) bool { return th.hysteresis == 10 }),
	"priority.hold":               thrCase("priority", "hold: 5s", "hold: 9s", func(th *thresholds) bool { return th.hold == 9*time.Second }),
	"handover.rtt_ms":             thrCase("handover", "rtt_ms: 500", "rtt_ms: 300", func(th *thresholds) bool { return th.rtt == 300*time.Millisecond }),
	"handover.loss_percent":       thrCase("handover", "loss_percent: 20", "loss_percent: 15", func(th *thresholds) bool { return th.loss == 15 }),
	"handover.reorder_percent":    thrCase("handover", "reorder_percent: 10", "reorder_percent: 12", func(th *thresholds) bool { return th.reorder == 12 }),
	"handover.failures":           thrCase("handover", "failures: 3", "failures: 5", func(th *thresholds) bool { return th.failures == 5 }),
	"handover.hold":               thrCase("handover", "hold: 3s", "hold: 4s", func(th *thresholds) bool { return th.hold == 4*time.Second }),
	// The health sampling interval: a reload used to keep the old tick.
	"handover.interval": {base: "handover", replace: []string{"interval: 1s", "interval: 250ms"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			select {
			case d := <-c.sampler.every:
				if d != 250*time.Millisecond {
					t.Errorf("sampler interval set to %v, want 250ms", d)
				}
			default:
				t.Error("the sampler was not given the new interval")
			}
		}},
	"metrics.listen": {base: "client", replace: []string{`metrics: {listen: ""}`, `metrics: {listen: "127.0.0.1:9999"}`}},
	"status_socket":  {base: "client", replace: []string{`status_socket: ""`, `status_socket: /run/gigapath-test.sock`}},
	"creates.thread": {base: "client", replace: []string{"steering: aggregate", "steering: aggregate\ncreates: {thread: reader}"},
		diffKeys: []string{"creates.thread", "creates.priority"}}, // the reader has no priority
	"creates.priority": {base: "realtime", replace: []string{"priority: 10", "priority: 20"}},
	// What the collector registered with the sockops program reads at
	// each scrape: four subflows are above the new 3 (the default 1,024
	// would export them one by one); the srtt histogram names their
	// interfaces.
	"metrics.subflow_series": {base: "client", replace: []string{`metrics: {listen: ""}`, `metrics: {listen: "", subflow_series: 3}`},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			src := fakeTelemetry{fakeWiFi, fakeLTE, netip.MustParseAddrPort("10.1.4.2:40002"), netip.MustParseAddrPort("192.0.2.9:40003")}
			reg := prometheus.NewRegistry()
			reg.MustRegister(c.newPathPolicyCollector(src))
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var hist []string
			for _, mf := range mfs {
				switch mf.GetName() {
				case metrics.SubflowSRTT:
					t.Errorf("%d per-subflow srtt series with 4 subflows and subflow_series 3", len(mf.GetMetric()))
				case metrics.TelemetrySRTT:
					for _, m := range mf.GetMetric() {
						var ls []string
						for _, l := range m.GetLabel() {
							ls = append(ls, l.GetValue())
						}
						hist = append(hist, strings.Join(ls, " "))
					}
				}
			}
			slices.Sort(hist)
			if want := []string{"eth0 none", "lte0 lte", "other none", "wifi0 wifi"}; !slices.Equal(hist, want) {
				t.Errorf("srtt histograms for %q, want %q", hist, want)
			}
		}},
	"log.level": {base: "client", replace: []string{"level: info", "level: debug"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, log *testbed.LockedBuffer) {
			c.log.Debug("probe after the reload")
			if !strings.Contains(log.String(), "probe after the reload") {
				t.Errorf("log.level debug: a debug line is not written:\n%s", log)
			}
		}},
	"log.format": {base: "client", replace: []string{"format: text", "format: json"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, log *testbed.LockedBuffer) {
			c.log.Info("probe after the reload")
			if !strings.Contains(log.String(), `{"time":`) || !strings.Contains(log.String(), `"msg":"probe after the reload"`) {
				t.Errorf("log.format json: not JSON:\n%s", log)
			}
		}},
	// A reload used to keep link-local addresses out.
	"skip_link_local": {base: "client", replace: []string{"skip_link_local: true", "skip_link_local: false"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if !slices.Contains(c.ifs[3].addrs, netip.MustParseAddr("fe80::2")) {
				t.Errorf("lte0's addresses %v, want fe80::2 among them", c.ifs[3].addrs)
			}
			if got := k.ensured[3].Addrs; !slices.Contains(got, netip.MustParsePrefix("fe80::2/64")) {
				t.Errorf("lte0's table is for %v, want fe80::2/64 among them", got)
			}
		}},
	"relay": {base: "client", replace: []string{"steering: aggregate", "steering: aggregate\nrelay: {listen: 127.0.0.1:1080}"},
		check: func(t *testing.T, c *Controller, k *fakeKernel, log *testbed.LockedBuffer) {
			if !strings.Contains(log.String(), "restart the relay to apply it") {
				t.Errorf("the reload does not say the relay reads the section at its start:\n%s", log)
			}
		}},
}

// fakeTelemetry is a sockops telemetry map holding a subflow from each
// local address:port, to fakePeer, srtt 20 ms.
type fakeTelemetry []netip.AddrPort

func (f fakeTelemetry) AppendTelemetry(dst []pathpolicy.SubflowStats) ([]pathpolicy.SubflowStats, error) {
	out := dst[:0]
	for _, l := range f {
		out = append(out, pathpolicy.SubflowStats{Local: l, Remote: fakePeer, SRTT: 20 * time.Millisecond})
	}
	return out, nil
}

func (fakeTelemetry) SendShares() ([]pathpolicy.PathShare, error) {
	return nil, pathpolicy.ErrNoSendShare
}

func thrCase(base, old, new string, ok func(*thresholds) bool) reloadCase {
	return reloadCase{base: base, replace: []string{old, new},
		check: func(t *testing.T, c *Controller, k *fakeKernel, _ *testbed.LockedBuffer) {
			if th := c.strat.thresholds(); th == nil || !ok(th) {
				t.Errorf("%s -> %s: thresholds %+v", old, new, th)
			}
		}}
}

// TestReloadEveryKey walks every key of the policy (policy.Keys, by
// reflection over the Policy type: a key added later without a case here
// fails) and reloads a change of it alone into a controller over a fake
// kernel: a key whose fate is Restart is refused naming the key and the
// old policy stays; any other takes effect, checked where it shows
// (commands sent, routing, thresholds, sampler, logger, addresses).
func TestReloadEveryKey(t *testing.T) {
	for _, key := range policy.Keys() {
		tc, ok := reloadCases[key]
		if !ok {
			t.Errorf("key %s has no reload case: decide its fate in internal/policy/fate.go, make the controller carry it out and add a case here", key)
			continue
		}
		t.Run(key, func(t *testing.T) {
			base := reloadBases[tc.base]
			next := base
			for i := 0; i+1 < len(tc.replace); i += 2 {
				if !strings.Contains(next, tc.replace[i]) {
					t.Fatalf("base %s has no %q", tc.base, tc.replace[i])
				}
				next = strings.Replace(next, tc.replace[i], tc.replace[i+1], 1)
			}
			np, err := policy.Parse([]byte(next))
			if err != nil {
				t.Fatalf("changed policy:\n%s\n%v", next, err)
			}
			log := &testbed.LockedBuffer{}
			c, k, _ := fakeController(t, base, log)
			old := c.pol
			want := tc.diffKeys
			if want == nil {
				want = []string{key}
			}
			if d := old.Diff(np); !slices.Equal(d.Keys, want) {
				t.Fatalf("the change shows as keys %v, want %v", d.Keys, want)
			}
			fate, _ := policy.FateOf(key)
			err = c.reload(np)
			switch fate {
			case policy.Restart:
				if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "needs a restart") {
					t.Fatalf("reload: %v, want it refused naming %s as needing a restart", err, key)
				}
				if c.pol != old {
					t.Fatal("a refused reload changed the policy")
				}
				if tc.check != nil {
					t.Fatal("a check for a refused key")
				}
			default:
				if err != nil {
					t.Fatalf("reload: %v", err)
				}
				if c.pol != np {
					t.Fatal("the reload did not take the new policy")
				}
				if tc.check == nil {
					t.Fatalf("fate %v and nothing checks its effect", fate)
				}
				tc.check(t, c, k, log)
			}
		})
	}
}

// A log change with a logger the controller cannot switch (a caller's
// own) is refused rather than accepted and ignored.
func TestReloadLogNeedsNewLogger(t *testing.T) {
	c, _, _ := fakeController(t, reloadClient, &testbed.LockedBuffer{})
	c.log = c.log.With() // still NewLogger's
	np, _ := policy.Parse([]byte(strings.Replace(reloadClient, "level: info", "level: warn", 1)))
	if err := c.reload(np); err != nil {
		t.Fatalf("NewLogger's logger: %v", err)
	}
	c2, _, _ := fakeController(t, reloadClient, &testbed.LockedBuffer{})
	c2.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	np2, _ := policy.Parse([]byte(strings.Replace(reloadClient, "level: info", "level: warn", 1)))
	if err := c2.reload(np2); err == nil || !strings.Contains(err.Error(), "log") || !strings.Contains(err.Error(), "needs a restart") {
		t.Fatalf("a caller's logger: %v, want the log change refused", err)
	}
}

// initial_address_joins: refuse sets the sysctl to 0; a reload back to
// allow puts back the value found, and only while it is still 0; a value
// an upgrading predecessor found (the handoff) is the one restored.
func TestInitialJoinsRestored(t *testing.T) {
	refuse := strings.Replace(reloadBases["server"], "side: server", "side: server\ninitial_address_joins: refuse", 1)
	allow, err := policy.Parse([]byte(reloadBases["server"]))
	if err != nil {
		t.Fatal(err)
	}
	c, k, _ := fakeController(t, refuse, &testbed.LockedBuffer{})
	if err := c.applyInitialJoins(); err != nil { // as Run does
		t.Fatal(err)
	}
	if k.sysctls[joinsSysctl] != "0" || c.joinsWas != "1" {
		t.Fatalf("refuse: sysctl %q, was %q; want 0 and 1", k.sysctls[joinsSysctl], c.joinsWas)
	}
	if err := c.reload(allow); err != nil {
		t.Fatal(err)
	}
	if k.sysctls[joinsSysctl] != "1" || c.joinsWas != "" {
		t.Errorf("back to allow: sysctl %q, was %q; want 1 and nothing", k.sysctls[joinsSysctl], c.joinsWas)
	}

	// Someone set it to 2 meanwhile: the stop leaves it.
	c2, k2, _ := fakeController(t, refuse, &testbed.LockedBuffer{})
	c2.applyInitialJoins()
	k2.sysctls[joinsSysctl] = "2"
	c2.restoreInitialJoins()
	if k2.sysctls[joinsSysctl] != "2" {
		t.Errorf("a value set by someone else was overwritten: %q", k2.sysctls[joinsSysctl])
	}

	// Started by an upgrade: the sysctl is already 0, the predecessor
	// found 1, and that is what a stop restores.
	c3, k3, _ := fakeController(t, refuse, &testbed.LockedBuffer{})
	k3.sysctls[joinsSysctl] = "0"
	c3.joinsWas = "1" // from the handoff
	c3.applyInitialJoins()
	c3.restoreInitialJoins()
	if k3.sysctls[joinsSysctl] != "1" {
		t.Errorf("after an upgrade, the stop restored %q, want 1", k3.sysctls[joinsSysctl])
	}
	if h, err := parseHandoff(c.makeHandoff()); err != nil || h.JoinsWas != "" {
		t.Errorf("handoff %+v, %v", h, err)
	}
	c3.joinsWas = "1"
	if h, err := parseHandoff(c3.makeHandoff()); err != nil || h.JoinsWas != "1" {
		t.Errorf("handoff %+v, %v: want allow_join_initial_was 1", h, err)
	}
}
