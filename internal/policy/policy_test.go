package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const minimal = `path_manager: userspace        # or: kernel
steering: aggregate            # or: active-standby, handover, priority
interfaces:
  - name: wifi0
    role: wifi                 # wifi | lte | ethernet | other
  - name: lte0
    role: lte
`

// addrEq compares addresses (netip.Addr has unexported fields).
var addrEq = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func mustParse(t *testing.T, s string) *Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse:\n%s\nerror:\n%v", s, err)
	}
	return p
}

func TestParseMinimal(t *testing.T) {
	p := mustParse(t, minimal)
	want := &Policy{
		Side:        SideClient,
		PathManager: PMUserspace,
		Steering:    SteerAggregate,
		Interfaces: []Interface{
			{Name: "wifi0", Role: RoleWiFi, MaxSubflows: 1},
			{Name: "lte0", Role: RoleLTE, MaxSubflows: 1},
		},
		PeerAddresses:       PeerIgnore,
		InitialAddressJoins: JoinsAllow,
		Limits:              Limits{Subflows: DefaultLimitSubflows, AddAddrAccepted: DefaultLimitAddAddr},
		Routing:             Routing{Mode: RoutingManaged, TableBase: 1000, RulePriority: 1000},
		Priority: Priority{RTT: 200 * time.Millisecond, LossPercent: 5, ReorderPercent: 30,
			HysteresisPercent: 20, Hold: 5 * time.Second},
		Handover: Handover{RTT: 500 * time.Millisecond, LossPercent: 20, ReorderPercent: 10,
			Interval: time.Second, Failures: 3, Hold: 3 * time.Second},
		Metrics:       Metrics{Listen: "127.0.0.1:9477", SubflowSeries: 1024},
		StatusSocket:  "/run/gigapath/status.sock",
		Log:           Log{Level: "info", Format: "text"},
		SkipLinkLocal: true,
		Creates:       Creates{Thread: CreatesAuto, Priority: DefaultCreatesPriority},
	}
	if d := cmp.Diff(want, p, addrEq); d != "" {
		t.Errorf("minimal policy (-want +got):\n%s", d)
	}
}

func TestParseFull(t *testing.T) {
	p := mustParse(t, `
side: server
path_manager: kernel
steering: active-standby
scheduler: redundant
interfaces:
  - name: eth0
    role: ethernet
    max_subflows: 2
    congestion: bbr
    mark: 0x10
    gateway: [192.0.2.1, "fe80::1"]
  - match: "wwan*"
    role: lte
    gateway: 10.64.0.1
limits: {subflows: 8, add_addr_accepted: 0}
routing:
  mode: managed
  table_base: 5000
  rule_priority: 200
metrics: {listen: "", subflow_series: 0}
status_socket: ""
log: {level: debug, format: json}
skip_link_local: false
relay:
  listen: 127.0.0.1:1080
  idle_timeout: 5m
  allow_dest: [10.0.0.0/8]
`)
	if p.Side != SideServer || p.PathManager != PMKernel || p.Steering != SteerActiveStandby || p.Scheduler != "redundant" {
		t.Errorf("top level: %+v", p)
	}
	if d := cmp.Diff([]Interface{
		{Name: "eth0", Role: RoleEthernet, MaxSubflows: 2, Congestion: "bbr", Mark: 0x10,
			Gateway: Gateway{V4: netip.MustParseAddr("192.0.2.1"), V6: netip.MustParseAddr("fe80::1")}},
		{Match: "wwan*", Role: RoleLTE, MaxSubflows: 1, Backup: true, // lte is backup under active-standby
			Gateway: Gateway{V4: netip.MustParseAddr("10.64.0.1")}},
	}, p.Interfaces, addrEq); d != "" {
		t.Errorf("interfaces (-want +got):\n%s", d)
	}
	if p.Limits != (Limits{8, 0}) || p.Routing != (Routing{RoutingManaged, 5000, 200}) {
		t.Errorf("limits %+v routing %+v", p.Limits, p.Routing)
	}
	if p.Metrics != (Metrics{Listen: "", SubflowSeries: 0}) || p.StatusSocket != "" || p.Log != (Log{"debug", "json"}) || p.SkipLinkLocal {
		t.Errorf("observation: %+v %q %+v %v", p.Metrics, p.StatusSocket, p.Log, p.SkipLinkLocal)
	}
	// The relay section is decoded into the relay's own Config.
	if p.Relay == nil {
		t.Fatal("relay section lost")
	}
	if p.Relay.Listen != "127.0.0.1:1080" || p.Relay.IdleTimeout != 5*time.Minute || !slices.Equal(p.Relay.AllowDest, []string{"10.0.0.0/8"}) {
		t.Errorf("relay section decoded as %+v", *p.Relay)
	}
	// The server side's announcements, with the userspace PM.
	s := mustParse(t, "side: server\npath_manager: userspace\ninterfaces:\n  - name: eth0\n    role: ethernet\nannounce:\n  - interface: eth0\n  - address: \"2001:db8::10\"\n    port: 8443\n")
	if len(s.Announce) != 2 || s.Announce[0].Interface != "eth0" || s.Announce[1].Address.String() != "2001:db8::10" || s.Announce[1].Port != 8443 {
		t.Errorf("announce: %+v", s.Announce)
	}
	if s.InitialAddressJoins != JoinsAllow {
		t.Errorf("initial_address_joins defaults to %q, want allow", s.InitialAddressJoins)
	}
	if r := mustParse(t, "side: server\npath_manager: kernel\ninitial_address_joins: refuse\ninterfaces: [{name: eth0, role: ethernet}]\n"); r.InitialAddressJoins != JoinsRefuse {
		t.Errorf("initial_address_joins: refuse parsed as %q", r.InitialAddressJoins)
	}
}

func TestRoutingShortForm(t *testing.T) {
	p := mustParse(t, "routing: off\n"+minimal)
	if p.Routing.Mode != RoutingOff || p.Routing.TableBase != DefaultTableBase {
		t.Errorf("routing: off gave %+v", p.Routing)
	}
}

// TestParseErrors covers every bad-config class of the issue and more: the
// message must name the line, the key path, the bad value and what is valid.
func TestParseCreates(t *testing.T) {
	const server = "side: server\npath_manager: userspace\ninterfaces:\n  - name: eth0\n    role: wifi\n"
	const kernelPM = "path_manager: kernel\ninterfaces:\n  - name: eth0\n    role: wifi\n"
	for _, tc := range []struct {
		in   string
		want Creates
	}{
		{minimal, Creates{Thread: CreatesAuto, Priority: DefaultCreatesPriority}},
		{minimal + "creates: {}\n", Creates{Thread: CreatesAuto, Priority: DefaultCreatesPriority}},
		{minimal + "creates: {priority: 20}\n", Creates{Thread: CreatesAuto, Priority: 20}},
		{minimal + "creates:\n  thread: realtime\n", Creates{Thread: CreatesRealtime, Priority: DefaultCreatesPriority}},
		{minimal + "creates:\n  thread: realtime\n  priority: 30\n", Creates{Thread: CreatesRealtime, Priority: 30}},
		{minimal + "creates:\n  thread: reader\n", Creates{Thread: CreatesReader}},
		// Nothing for a thread to do: auto stays what the file says (the
		// daemon uses no thread: internal/controller, startCreates).
		{server, Creates{Thread: CreatesAuto, Priority: DefaultCreatesPriority}},
		{server + "creates: {thread: auto, priority: 20}\n", Creates{Thread: CreatesAuto, Priority: 20}},
		{kernelPM, Creates{Thread: CreatesAuto, Priority: DefaultCreatesPriority}},
	} {
		if p := mustParse(t, tc.in); p.Creates != tc.want {
			t.Errorf("%q: creates = %+v, want %+v", tc.in, p.Creates, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	const ifs = "interfaces:\n  - name: wifi0\n    role: wifi\n  - name: lte0\n    role: lte\n"
	tests := []struct {
		name, in string
		want     []string
	}{
		{"unknown key at top", "path_manager: userspace\nsteerin: aggregate\n" + ifs,
			[]string{`line 2: steerin: unknown key; valid keys: side, path_manager, steering, scheduler, path_cgroup, mptcpify, interfaces, peer_addresses, announce, initial_address_joins, limits, routing, priority, handover, metrics, status_socket, log, skip_link_local, creates, relay`}},
		{"unknown key in interface", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    rol: wifi\n",
			[]string{`line 3: interfaces[0].role: missing; use one of wifi, lte, ethernet, other`,
				`line 4: interfaces[0].rol: unknown key; valid keys: name, match, role, backup, max_subflows, congestion, mark, gateway`}},
		{"bad role", "path_manager: userspace\n" + strings.Replace(ifs, "role: lte", "role: 4g", 1),
			[]string{`line 6: interfaces[1].role: "4g" is not valid; use one of wifi, lte, ethernet, other`}},
		{"missing interface name", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n  - role: lte\n",
			[]string{`line 5: interfaces[1]: has neither name nor match; set name (an interface name such as "wlan0") or match (a glob such as "wwan*")`}},
		{"name and match", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    match: wl*\n    role: wifi\n",
			[]string{`line 3: interfaces[0]: has both name and match; set only one`}},
		{"bad interface name", "path_manager: userspace\ninterfaces:\n  - name: a/very/long/interface\n    role: wifi\n",
			[]string{`line 3: interfaces[0].name: "a/very/long/interface" is not a valid interface name; want 1-15 characters without '/', ':' or whitespace`}},
		{"bad glob", "path_manager: userspace\ninterfaces:\n  - match: \"wl[\"\n    role: wifi\n",
			[]string{`line 3: interfaces[0].match: "wl[" is not a valid glob; use *, ? and [...] as in "wlan*"`}},
		{"duplicate interface", "path_manager: userspace\n" + ifs + "  - name: wifi0\n    role: other\n",
			[]string{`line 7: interfaces[2].name: "wifi0" is already used by interfaces[0]; list each interface once`}},
		{"bad address", "side: server\npath_manager: userspace\n" + ifs + "announce:\n  - address: 10.0.0.300\n",
			[]string{`line 9: announce[0].address: "10.0.0.300" is not an IP address; want e.g. 192.0.2.10 or 2001:db8::10`}},
		{"realtime creates on a server", "side: server\npath_manager: userspace\ncreates:\n  thread: realtime\n" + ifs,
			[]string{`line 4: creates.thread: realtime is only valid with side: client and path_manager: userspace (the thread answers new connections with the userspace PM's creates); use auto or reader, or remove the key`}},
		{"realtime creates, in-kernel PM", "path_manager: kernel\ncreates:\n  thread: realtime\n" + ifs,
			[]string{`line 3: creates.thread: realtime is only valid with side: client and path_manager: userspace (the thread answers new connections with the userspace PM's creates); use auto or reader, or remove the key`}},
		{"bad creates thread", "path_manager: userspace\ncreates:\n  thread: fast\n" + ifs,
			[]string{`line 3: creates.thread: "fast" is not valid; use one of auto, reader, realtime`}},
		{"bad creates priority", "path_manager: userspace\ncreates:\n  thread: realtime\n  priority: 100\n" + ifs,
			[]string{`line 4: creates.priority: 100 is out of range; use 1 to 99 (SCHED_FIFO priority)`}},
		{"creates priority for the reader", "path_manager: userspace\ncreates:\n  thread: reader\n  priority: 20\n" + ifs,
			[]string{`line 4: creates.priority: only valid with creates.thread: auto or realtime (the reader runs at the daemon's own scheduling)`}},
		{"refuse on a client", "path_manager: userspace\ninitial_address_joins: refuse\n" + ifs,
			[]string{`line 2: initial_address_joins: refuse is only valid with side: server (the C flag is sent by the end that accepts connections); use allow or remove the key`}},
		{"bad initial_address_joins", "side: server\npath_manager: userspace\ninitial_address_joins: deny\n" + ifs,
			[]string{`line 3: initial_address_joins: "deny" is not valid; use one of allow, refuse`}},
		{"loopback announce", "side: server\npath_manager: userspace\n" + ifs + "announce:\n  - address: 127.0.0.1\n",
			[]string{`line 9: announce[0].address: "127.0.0.1" cannot be announced; want a unicast address of this host`}},
		{"announce unknown interface", "side: server\npath_manager: userspace\n" + ifs + "announce:\n  - interface: eth9\n",
			[]string{`line 9: announce[0].interface: "eth9" is not in interfaces; list it there first`}},
		{"announce on client", "path_manager: userspace\n" + ifs + "announce:\n  - interface: lte0\n",
			[]string{`line 8: announce: only valid with side: server (the client side does not advertise addresses)`}},
		{"bad port", "side: server\npath_manager: userspace\n" + ifs + "announce:\n  - interface: lte0\n    port: 70000\n",
			[]string{`line 10: announce[0].port: "70000" is not valid; want an integer from 0 to 65535`}},
		{"bad steering", "path_manager: userspace\nsteering: fastest\n" + ifs,
			[]string{`line 2: steering: "fastest" is not valid; use one of aggregate, active-standby, handover, priority`}},
		{"bad path manager", "path_manager: mptcpd\n" + ifs,
			[]string{`line 1: path_manager: "mptcpd" is not valid; use one of userspace, kernel`}},
		{"missing path manager", ifs,
			[]string{`path_manager: missing; use one of userspace, kernel`}},
		{"bad side", "side: both\npath_manager: userspace\n" + ifs,
			[]string{`line 1: side: "both" is not valid; use one of client, server`}},
		{"limits above 8", "path_manager: kernel\nlimits:\n  subflows: 9\n  add_addr_accepted: 12\n" + ifs,
			[]string{`line 3: limits.subflows: 9 is out of range; use 0 to 8 (the kernel's maximum)`,
				`line 4: limits.add_addr_accepted: 12 is out of range; use 0 to 8 (the kernel's maximum)`}},
		{"limits not a number", "path_manager: kernel\nlimits: {subflows: many}\n" + ifs,
			[]string{`line 2: limits.subflows: "many" is not valid; want an integer`}},
		{"no interfaces", "path_manager: userspace\n",
			[]string{`interfaces: missing; list at least one interface (name and role)`}},
		{"active-standby without backup", "path_manager: userspace\nsteering: active-standby\ninterfaces:\n  - name: wifi0\n    role: wifi\n",
			[]string{`line 2: steering: active-standby needs at least one active and one backup interface (backup: true; the lte role is backup by default under active-standby and handover)`}},
		{"bad routing mode", "path_manager: userspace\nrouting: auto\n" + ifs,
			[]string{`line 2: routing: "auto" is not valid; use one of managed, off`}},
		{"bad routing table", "path_manager: userspace\nrouting:\n  mode: managed\n  table_base: 254\n" + ifs,
			[]string{`line 4: routing.table_base: 254 is out of range; use 256 to 4294901759 (tables 253-255 are the kernel's; the table of an interface is table_base + its index)`}},
		{"bad rule priority", "path_manager: userspace\nrouting: {rule_priority: 32766}\n" + ifs,
			[]string{`line 2: routing.rule_priority: 32766 is out of range; use 1 to 32765 (below the main table's rule at 32766)`}},
		{"bad duration", "path_manager: userspace\npriority:\n  hold: soon\n" + ifs,
			[]string{`line 3: priority.hold: "soon" is not valid; want a positive duration such as 500ms, 3s or 1m`}},
		{"bad percent", "path_manager: userspace\nhandover: {loss_percent: 150}\n" + ifs,
			[]string{`line 2: handover.loss_percent: 150 is out of range; use 0 to 100`}},
		{"bad reorder percent", "path_manager: userspace\npriority:\n  reorder_percent: -1\nhandover: {reorder_percent: 101}\n" + ifs,
			[]string{`line 3: priority.reorder_percent: -1 is out of range; use 0 to 100`,
				`line 4: handover.reorder_percent: 101 is out of range; use 0 to 100`}},
		{"reorder percent not a number", "path_manager: userspace\npriority: {reorder_percent: high}\n" + ifs,
			[]string{`line 2: priority.reorder_percent: "high" is not valid; want a number`}},
		{"bad metrics listen", "path_manager: userspace\nmetrics: {listen: localhost}\n" + ifs,
			[]string{`line 2: metrics.listen: "localhost" is not valid; want HOST:PORT such as 127.0.0.1:9477 or [::1]:9477, or "" to disable`}},
		{"subflow_series negative", "path_manager: userspace\nmetrics:\n  subflow_series: -1\n" + ifs,
			[]string{`line 3: metrics.subflow_series: -1 is out of range; use 0 (no per-subflow series) to 131072 (every subflow the telemetry map can hold)`}},
		{"subflow_series too large", "path_manager: userspace\nmetrics: {subflow_series: 131073}\n" + ifs,
			[]string{`line 2: metrics.subflow_series: 131073 is out of range; use 0 (no per-subflow series) to 131072 (every subflow the telemetry map can hold)`}},
		{"subflow_series not a number", "path_manager: userspace\nmetrics: {subflow_series: all}\n" + ifs,
			[]string{`line 2: metrics.subflow_series: "all" is not valid; want an integer`}},
		{"relative status socket", "path_manager: userspace\nstatus_socket: gp.sock\n" + ifs,
			[]string{`line 2: status_socket: "gp.sock" is not valid; want an absolute path such as /run/gigapath/status.sock, or "" to disable`}},
		{"bad log format", "path_manager: userspace\nlog: {format: xml}\n" + ifs,
			[]string{`line 2: log.format: "xml" is not valid; use one of text, json`}},
		{"bad peer_addresses", "path_manager: userspace\npeer_addresses: yes\n" + ifs,
			[]string{`line 2: peer_addresses: "yes" is not valid; use one of ignore, use`}},
		{"peer_addresses not a string", "path_manager: userspace\npeer_addresses: [use]\n" + ifs,
			[]string{`line 2: peer_addresses: a list is not valid here; want a string`}},
		{"peer_addresses use on server", "side: server\npath_manager: userspace\npeer_addresses: use\n" + ifs,
			[]string{`line 3: peer_addresses: use is only valid with side: client (the server side does not open subflows); use ignore or remove the key`}},
		{"max_subflows 0", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n    max_subflows: 0\n",
			[]string{`line 5: interfaces[0].max_subflows: 0 is out of range; use 1 to 8`}},
		{"max_subflows 9", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n    max_subflows: 9\n",
			[]string{`line 5: interfaces[0].max_subflows: 9 is out of range; use 1 to 8`}},
		{"bad congestion", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n    congestion: \"Reno!\"\n",
			[]string{`line 5: interfaces[0].congestion: "Reno!" is not a valid congestion control name; want 1-15 of a-z, 0-9, _ such as cubic or bbr (see sysctl net.ipv4.tcp_available_congestion_control)`}},
		{"relay not a mapping", "path_manager: userspace\nrelay: yes\n" + ifs,
			[]string{`line 2: relay: "yes" is not valid; want a mapping of the relay's keys (see docs/relay.md)`}},
		{"unknown relay key", "path_manager: userspace\nrelay:\n  listen: 127.0.0.1:1080\n  lisen: 127.0.0.1:1081\n" + ifs,
			[]string{`line 4: relay.lisen: unknown key; valid keys: listen, no_mptcp, upstream, upstream_mptcp, credentials, allow_clients, allow_dest, deny_dest, handshake_timeout, dial_timeout, idle_timeout, drain_timeout, max_conns, max_conns_per_client, disable_udp, reuse_port, scheduler_poll, congestion, transparent`}},
		{"bad relay duration", "path_manager: userspace\nrelay:\n  idle_timeout: soon\n" + ifs,
			[]string{`line 3: relay.idle_timeout: "soon" is not valid; want a duration such as 500ms, 10s or 5m`}},
		{"open relay", "path_manager: userspace\nrelay:\n  listen: 0.0.0.0:1080\n" + ifs,
			[]string{`line 3: relay: refusing to run an open relay on 0.0.0.0:1080: anyone who can reach it could use it; add --credentials FILE or --allow-client CIDR, or listen on 127.0.0.1`}},
		{"bad gateway", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n    gateway: router\n",
			[]string{`line 5: interfaces[0].gateway: "router" is not an IP address; want e.g. 192.0.2.1 or fe80::1 (no %zone: the interface is the zone)`}},
		{"two IPv4 gateways", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n    gateway: [10.0.0.1, 10.0.0.2]\n",
			[]string{`line 5: interfaces[0].gateway: two IPv4 gateways (10.0.0.1 and 10.0.0.2); give at most one per family`}},
		{"gateway with routing off", "path_manager: userspace\nrouting: off\ninterfaces:\n  - name: wifi0\n    role: wifi\n    gateway: 10.0.0.1\n",
			[]string{`line 6: interfaces[0].gateway: only used with routing: managed (it is the next hop of the interface's table); with routing: off set the route yourself`}},
		{"peer_addresses use with kernel PM", "path_manager: kernel\npeer_addresses: use\n" + ifs,
			[]string{`line 2: peer_addresses: use is only valid with path_manager: userspace (the in-kernel PM accepts announcements up to limits.add_addr_accepted); use ignore or remove the key`}},
		{"priority with kernel PM", "path_manager: kernel\nsteering: priority\n" + ifs,
			[]string{`line 2: steering: priority needs path_manager: userspace (it opens, closes and re-flags subflows itself; the in-kernel PM supports aggregate and active-standby)`}},
		{"limits with userspace PM", "path_manager: userspace\nlimits: {subflows: 2}\n" + ifs,
			[]string{`line 2: limits: only valid with path_manager: kernel (the kernel's limits do not bound the userspace PM; max_subflows per interface does); remove it or use the in-kernel PM`}},
		{"top level list", "- a\n- b\n",
			[]string{`line 1: the top level must be a mapping of keys (side, path_manager, steering, interfaces, ...)`}},
		{"empty", "", []string{"the file is empty; see `gigapath config example`"}},
		{"syntax", "path_manager: [\n", []string{"line 1: did not find expected node content"}},
		{"duplicate key", "path_manager: userspace\npath_manager: kernel\n" + ifs,
			[]string{`line 2: mapping key "path_manager" already defined at line 1`}},
		{"several problems at once", "path_manager: userspace\nsteering: fast\nbogus: 1\ninterfaces:\n  - name: wifi0\n    role: 5g\n",
			[]string{`line 2: steering: "fast" is not valid; use one of aggregate, active-standby, handover, priority`,
				`line 3: bogus: unknown key; valid keys: side, path_manager, steering, scheduler, path_cgroup, mptcpify, interfaces, peer_addresses, announce, initial_address_joins, limits, routing, priority, handover, metrics, status_socket, log, skip_link_local, creates, relay`,
				`line 6: interfaces[0].role: "5g" is not valid; use one of wifi, lte, ethernet, other`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse accepted bad config:\n%s\ngot %+v", tt.in, p)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T is not policy.Errors: %v", err, err)
			}
			var got []string
			for _, e := range es {
				got = append(got, e.Error())
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("errors (-want +got):\n%s", d)
			}
		})
	}
}

func TestExampleParses(t *testing.T) {
	p := mustParse(t, Example())
	// The example shows the defaults: it must mean the same as the minimal
	// form plus its two interfaces.
	if d := cmp.Diff(mustParse(t, minimal), p, addrEq); d != "" {
		t.Errorf("example differs from the defaults (-minimal +example):\n%s", d)
	}
	// Its optional settings ('#' directly before a key, or '#' and two
	// spaces for a continuation line) are valid too once uncommented:
	// the limits block with the in-kernel PM, everything else with the
	// userspace PM on the server side.
	uncomment := func(limits bool) (string, int) {
		var out []string
		n, inLimits := 0, false
		for _, l := range strings.Split(Example(), "\n") {
			trim := strings.TrimLeft(l, " ")
			if strings.HasPrefix(trim, "#limits:") {
				inLimits = true
			} else if !strings.HasPrefix(trim, "#  ") {
				inLimits = false
			}
			if inLimits == limits && strings.HasPrefix(trim, "#") && len(trim) > 1 && (trim[1] != ' ' || strings.HasPrefix(trim, "#  ")) {
				l = l[:len(l)-len(trim)] + trim[1:]
				n++
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n"), n
	}
	text, n := uncomment(false)
	if n < 10 {
		t.Fatalf("found only %d optional lines in the example", n)
	}
	text = strings.Replace(text, "side: client", "side: server", 1)
	full, err := Parse([]byte(text))
	if err != nil {
		t.Fatalf("example with its commented keys turned on does not parse:\n%s\n%v", text, err)
	}
	if full.Scheduler != "default" || len(full.Interfaces) != 3 || len(full.Announce) != 2 || full.Relay == nil || full.Interfaces[0].Gateway.IsZero() {
		t.Errorf("uncommented example: scheduler %q, %d interfaces, %d announce, relay %v, gateway %v", full.Scheduler, len(full.Interfaces), len(full.Announce), full.Relay, full.Interfaces[0].Gateway)
	}
	text, n = uncomment(true)
	text = strings.Replace(text, "path_manager: userspace", "path_manager: kernel", 1)
	kern, err := Parse([]byte(text))
	if err != nil || n != 3 {
		t.Fatalf("example with the limits block turned on (%d lines) under path_manager: kernel: %v", n, err)
	}
	if kern.Limits != (Limits{DefaultLimitSubflows, DefaultLimitAddAddr}) {
		t.Errorf("the example's limits are not the defaults: %+v", kern.Limits)
	}
}

func TestInterfaceFor(t *testing.T) {
	p := mustParse(t, `path_manager: userspace
interfaces:
  - match: "wl*"
    role: wifi
  - name: wlan1
    role: other
  - match: "*"
    role: lte
`)
	for _, tt := range []struct {
		ifname string
		role   Role
	}{{"wlan0", RoleWiFi}, {"wlan1", RoleOther}, {"rmnet0", RoleLTE}} {
		i, ok := p.InterfaceFor(tt.ifname)
		if !ok || i.Role != tt.role {
			t.Errorf("InterfaceFor(%q) = %+v, %v; want role %s", tt.ifname, i, ok, tt.role)
		}
	}
	p = mustParse(t, minimal)
	if i, ok := p.InterfaceFor("eth0"); ok {
		t.Errorf("InterfaceFor(eth0) = %+v, want none", i)
	}
}

func TestDiff(t *testing.T) {
	old := mustParse(t, minimal)
	if d := old.Diff(mustParse(t, minimal)); !d.Empty() {
		t.Errorf("same policy: diff %+v", d)
	}
	nw := mustParse(t, `path_manager: kernel
steering: active-standby
limits: {subflows: 2}
routing: {table_base: 2000}
relay: {listen: "127.0.0.1:1081"}
interfaces:
  - name: wifi0
    role: wifi
  - name: lte0
    role: lte
    max_subflows: 2
  - name: eth0
    role: ethernet
`)
	d := Compare(old, nw)
	want := Diff{
		Added:              []Interface{{Name: "eth0", Role: RoleEthernet, MaxSubflows: 1}},
		Changed:            []InterfaceChange{{Old: old.Interfaces[1], New: nw.Interfaces[1]}},
		PathManagerChanged: true,
		SteeringChanged:    true,
		LimitsChanged:      true,
		RoutingChanged:     true,
		RelayChanged:       true,
		Keys: []string{"path_manager", "steering", "interfaces", "interfaces[].backup", "interfaces[].max_subflows",
			"limits.subflows", "routing.table_base", "relay"},
		NeedsRestart: []string{"path_manager"},
	}
	if diff := cmp.Diff(want, d, addrEq); diff != "" {
		t.Errorf("diff (-want +got):\n%s", diff)
	}
	back := Compare(nw, old)
	if len(back.Removed) != 1 || back.Removed[0].Name != "eth0" || len(back.Added) != 0 {
		t.Errorf("reverse diff: added %v removed %v", back.Added, back.Removed)
	}
	if all := Compare(nil, old); len(all.Added) != 2 {
		t.Errorf("diff from nothing: %+v", all)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "gigapath.yaml")
	if err := os.WriteFile(f, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(f); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte("path_manager: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(f)
	if err == nil || !strings.HasPrefix(err.Error(), f+":\nline 1: path_manager:") {
		t.Errorf("Load error does not name the file and line: %v", err)
	}
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Errorf("Load error is not Errors with 2 problems: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(Example()))
	f.Add([]byte("routing: off\nrelay: {a: b}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err == nil && (p == nil || len(p.Interfaces) == 0) {
			t.Fatalf("accepted a policy without interfaces: %q", b)
		}
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a non-empty Errors: %v", err)
			}
		}
	})
}

func TestParseAliases(t *testing.T) {
	// Anchors and aliases work (each anchored node is checked once).
	p := mustParse(t, `path_manager: userspace
interfaces:
  - &wifi {name: wifi0, role: wifi}
  - {name: lte0, role: lte}
priority: &thr {rtt_ms: 100}
handover: *thr
`)
	if p.Handover.RTT != 100*time.Millisecond || p.Interfaces[0].Name != "wifi0" {
		t.Errorf("aliases: %+v", p)
	}
	// An anchored unknown key is still an unknown key.
	_, err := Parse([]byte("path_manager: userspace\nx: &l [1, 2]\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2: x: unknown key") {
		t.Errorf("unknown anchored key: %v", err)
	}
}

func TestBackupDefaults(t *testing.T) {
	for _, tt := range []struct {
		steering string
		lte      bool
	}{{"aggregate", false}, {"active-standby", true}, {"handover", true}, {"priority", false}} {
		p := mustParse(t, strings.Replace(minimal, "steering: aggregate", "steering: "+tt.steering, 1))
		if p.Interfaces[0].Backup || p.Interfaces[1].Backup != tt.lte {
			t.Errorf("%s: wifi backup %v, lte backup %v; want false, %v", tt.steering, p.Interfaces[0].Backup, p.Interfaces[1].Backup, tt.lte)
		}
	}
	// An explicit value wins.
	p := mustParse(t, strings.Replace(minimal, "role: lte", "role: lte\n    backup: false\n  - name: eth0\n    role: ethernet\n    backup: true", 1))
	if p.Interfaces[1].Backup || !p.Interfaces[2].Backup {
		t.Errorf("explicit backup: %+v", p.Interfaces)
	}
}

func TestDescribe(t *testing.T) {
	old := mustParse(t, minimal)
	nw := mustParse(t, `path_manager: kernel
steering: active-standby
routing: off
interfaces:
  - name: wifi0
    role: wifi
  - name: eth0
    role: ethernet
    backup: true
    congestion: bbr
`)
	want := []string{
		"- interface lte0 (lte)",
		"+ interface eth0 (ethernet backup max_subflows 1 congestion bbr)",
		"~ path_manager: userspace -> kernel",
		"~ steering: aggregate -> active-standby",
		"~ routing: managed table_base 1000 rule_priority 1000 -> off",
		"! needs a restart: path_manager",
	}
	if d := cmp.Diff(want, Describe(old, nw)); d != "" {
		t.Errorf("Describe (-want +got):\n%s", d)
	}
	if got := Describe(old, mustParse(t, minimal+"metrics: {subflow_series: 100000}\n")); !slices.Equal(got, []string{"~ metrics.subflow_series: 1024 -> 100000"}) {
		t.Errorf("subflow_series described as %q", got)
	}
	if got, want := Describe(old, mustParse(t, minimal+"creates: {thread: reader}\n")), []string{
		"~ creates: {Thread:auto Priority:10} -> {Thread:reader Priority:0}",
		"! needs a restart: creates.thread, creates.priority",
	}; !slices.Equal(got, want) {
		t.Errorf("creates described as %q, want %q", got, want)
	}
	// A server sends no connection's creates: the key changes nothing
	// that needs a restart.
	const server = "side: server\npath_manager: userspace\ninterfaces:\n  - name: eth0\n    role: wifi\n"
	if got, want := Describe(mustParse(t, server), mustParse(t, server+"creates: {thread: reader}\n")), []string{
		"~ creates: {Thread:auto Priority:10} -> {Thread:reader Priority:0}",
	}; !slices.Equal(got, want) {
		t.Errorf("a server's creates described as %q, want %q", got, want)
	}
	if got := Describe(old, mustParse(t, minimal)); len(got) != 0 {
		t.Errorf("no change described as %q", got)
	}
}
