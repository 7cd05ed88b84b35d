// Package policy turns gigapath's YAML configuration into a validated, typed
// Policy, and computes what changed between two policies (for SIGHUP
// reloads).
//
// Decoding is strict: an unknown key, a value of the wrong type or a value
// outside its set is an error that names the key path (interfaces[1].role),
// the line, the bad value and what is valid. Parse returns every problem it
// finds, not only the first.
package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
)

// Side says which end of MPTCP connections this node is.
type Side string

// Sides.
const (
	SideClient Side = "client"
	SideServer Side = "server"
)

// PathManager selects the kernel's in-kernel PM or gigapath as userspace PM.
type PathManager string

// Path managers.
const (
	PMUserspace PathManager = "userspace"
	PMKernel    PathManager = "kernel"
)

// Steering is how traffic is spread over the interfaces.
type Steering string

// Steering modes.
const (
	// SteerAggregate keeps a subflow on every interface, all active.
	SteerAggregate Steering = "aggregate"
	// SteerActiveStandby keeps every subflow established; interfaces marked
	// backup (by default the lte role) carry traffic only when no active
	// path is left.
	SteerActiveStandby Steering = "active-standby"
	// SteerHandover opens the backup interfaces' subflows only while the
	// primary ones are gone or unhealthy (see Handover).
	SteerHandover Steering = "handover"
	// SteerPriority uses the first interface in order until its RTT or loss
	// crosses the Priority thresholds, with hysteresis.
	SteerPriority Steering = "priority"
)

// Role is what kind of link an interface is.
type Role string

// Roles.
const (
	RoleWiFi     Role = "wifi"
	RoleLTE      Role = "lte"
	RoleEthernet Role = "ethernet"
	RoleOther    Role = "other"
)

// PeerAddresses says whether the client side opens subflows to the
// addresses the peer announces (ADD_ADDR).
type PeerAddresses string

// Peer address modes.
const (
	// PeerIgnore opens subflows to the connection's remote address only.
	PeerIgnore PeerAddresses = "ignore"
	// PeerUse also opens subflows to the peer's announced addresses, as
	// far as each interface's max_subflows allows.
	PeerUse PeerAddresses = "use"
)

// InitialJoins says whether the clients of a server may open subflows to
// the address they connected to.
type InitialJoins string

// Initial address join modes.
const (
	// JoinsAllow leaves net.mptcp.allow_join_initial_addr_port as it is
	// (the kernel's default 1: joins to the initial address are allowed).
	JoinsAllow InitialJoins = "allow"
	// JoinsRefuse sets the "C" flag of RFC 8684 §3.1 on the connections
	// the node accepts (net.mptcp.allow_join_initial_addr_port=0 while the
	// daemon runs): clients must not join the address they connected to
	// (a load balancer's shared address), only the announced ones.
	JoinsRefuse InitialJoins = "refuse"
)

// RoutingMode says whether gigapath manages per-interface tables and rules.
type RoutingMode string

// Routing modes.
const (
	RoutingManaged RoutingMode = "managed"
	RoutingOff     RoutingMode = "off"
)

// Defaults applied by Parse where the file says nothing.
const (
	DefaultTableBase        = 1000
	DefaultRulePriority     = 1000
	DefaultMetricsListen    = "127.0.0.1:9477"
	DefaultSubflowSeries    = 1024
	DefaultStatusSocket     = "/run/gigapath/status.sock"
	DefaultLimitSubflows    = 4
	DefaultLimitAddAddr     = 4
	MaxLimit                = 8 // the kernel caps both MPTCP limits at 8
	DefaultMaxSubflows      = 1
	DefaultPriorityRTT      = 200 * time.Millisecond
	DefaultPriorityLoss     = 5.0
	DefaultPriorityReorder  = 30.0
	DefaultHysteresis       = 20.0
	DefaultPriorityHold     = 5 * time.Second
	DefaultHandoverRTT      = 500 * time.Millisecond
	DefaultHandoverLoss     = 20.0
	DefaultHandoverReorder  = 10.0
	DefaultHandoverHold     = 3 * time.Second
	DefaultHandoverPeriod   = time.Second
	DefaultHandoverFailures = 3
)

// MaxSubflowSeries is the largest metrics.subflow_series: the most
// subflows the daemon's telemetry map holds (side: server), so a larger
// value could never be reached.
const MaxSubflowSeries = 131072

// Policy is a validated configuration. Build one with Parse or Load.
type Policy struct {
	Side        Side        `json:"side"`
	PathManager PathManager `json:"path_manager"`
	Steering    Steering    `json:"steering"`
	// Scheduler names an MPTCP packet scheduler (kernel or BPF) to select
	// with net.mptcp.scheduler; empty keeps the kernel's.
	Scheduler string `json:"scheduler"`
	// PathCgroup is the cgroup v2 (absolute, or relative to the cgroup v2
	// mount) whose sockets get the per-interface congestion/mark; empty =
	// the root, i.e. every socket of the machine.
	PathCgroup string `json:"path_cgroup,omitempty"`
	// Mptcpify lists cgroups whose TCP sockets are made MPTCP (eBPF): a
	// name without '/' is a systemd unit (system.slice/NAME), anything
	// else a cgroup v2 path, absolute or relative to the mount.
	Mptcpify   []string    `json:"mptcpify,omitempty"`
	Interfaces []Interface `json:"interfaces"`
	// PeerAddresses: subflows to the peer's announced addresses or not
	// (client side, userspace PM).
	PeerAddresses PeerAddresses `json:"peer_addresses"`
	// Announce lists what the server side advertises: ADD_ADDR to each
	// connection (userspace PM), or the in-kernel PM's signal endpoints,
	// instead of one per interface address.
	Announce []Announce `json:"announce"`
	// InitialAddressJoins: refuse sets the C flag on accepted connections
	// (server side).
	InitialAddressJoins InitialJoins `json:"initial_address_joins"`
	Limits              Limits       `json:"limits"`
	Routing             Routing      `json:"routing"`
	Priority            Priority     `json:"priority"`
	Handover            Handover     `json:"handover"`
	Metrics             Metrics      `json:"metrics"`
	StatusSocket        string       `json:"status_socket"` // empty disables the status socket
	Log                 Log          `json:"log"`
	SkipLinkLocal       bool         `json:"skip_link_local"`
	// Creates is which thread answers a new connection with its
	// SUBFLOW_CREATEs (client side, userspace PM).
	Creates Creates `json:"creates"`
	// Relay is the `relay:` section, nil when absent: the configuration of
	// `gigapath relay --config FILE`, decoded as strictly as the rest. The
	// daemon does not use it. Not in the JSON form: an upstream URL may
	// carry a password.
	Relay *relay.Config `json:"-" key:"relay"`
}

// Interface is one entry of `interfaces:`. Exactly one of Name and Match is
// set.
type Interface struct {
	Name  string `json:"name,omitempty"`  // exact interface name
	Match string `json:"match,omitempty"` // glob (path.Match syntax), e.g. "wlan*"
	Role  Role   `json:"role"`
	// Backup marks the interface's subflows as backup (MP_PRIO). Defaults to
	// true for the lte role under active-standby and handover, false
	// otherwise.
	Backup bool `json:"backup"`
	// MaxSubflows caps the subflows of one connection from this interface:
	// one per destination (the connection's remote address, then the
	// peer's announced addresses), never two to the same destination.
	MaxSubflows int    `json:"max_subflows"`
	Congestion  string `json:"congestion,omitempty"` // TCP congestion control for its subflows, "" = host default
	Mark        uint32 `json:"mark,omitempty"`       // fwmark for its subflows, 0 = none
	// Gateway is the next hop of the interface's default route in its
	// managed table (routing: managed), per family; a zero address leaves
	// the choice to the main table's default route through the interface,
	// or else an on-link default.
	Gateway Gateway `json:"gateway,omitzero"`
}

// Gateway holds an interface's next hops, at most one per family.
type Gateway struct {
	V4, V6 netip.Addr
}

// IsZero reports whether no gateway is set.
func (g Gateway) IsZero() bool { return !g.V4.IsValid() && !g.V6.IsValid() }

// For returns the gateway of the family (v6 or not), if set.
func (g Gateway) For(v6 bool) (netip.Addr, bool) {
	a := g.V4
	if v6 {
		a = g.V6
	}
	return a, a.IsValid()
}

// String lists the set gateways ("10.0.2.1 fe80::1"), "" if none.
func (g Gateway) String() string {
	var s []string
	for _, a := range []netip.Addr{g.V4, g.V6} {
		if a.IsValid() {
			s = append(s, a.String())
		}
	}
	return strings.Join(s, " ")
}

// MarshalJSON writes the set gateways as a list of addresses.
func (g Gateway) MarshalJSON() ([]byte, error) {
	out := []netip.Addr{}
	for _, a := range []netip.Addr{g.V4, g.V6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return json.Marshal(out)
}

// Key is the name or the pattern that identifies the entry.
func (i *Interface) Key() string {
	if i.Name != "" {
		return i.Name
	}
	return i.Match
}

// Matches reports whether the entry applies to the interface named ifname.
func (i *Interface) Matches(ifname string) bool {
	if i.Name != "" {
		return i.Name == ifname
	}
	ok, _ := path.Match(i.Match, ifname)
	return ok
}

// Announce is one address (or the addresses of one interface) to advertise.
type Announce struct {
	Address   netip.Addr `json:"address,omitzero"`    // set, or
	Interface string     `json:"interface,omitempty"` // the interface whose addresses are advertised
	Port      uint16     `json:"port,omitempty"`      // 0 = the connection's port
}

// Limits are the MPTCP per-connection limits (net.mptcp limits).
type Limits struct {
	Subflows        int `json:"subflows"`
	AddAddrAccepted int `json:"add_addr_accepted"`
}

// Routing configures the per-interface tables and source rules.
type Routing struct {
	Mode         RoutingMode `json:"mode"`
	TableBase    uint32      `json:"table_base"`    // table of an interface = TableBase + ifindex
	RulePriority uint32      `json:"rule_priority"` // priority of the `from ADDR lookup TABLE` rules
}

// Priority holds the thresholds of the priority steering mode: the primary
// path is left when its RTT exceeds RTT (the sending side's smoothed RTT or
// the receiving side's rcv_rtt), its send loss exceeds LossPercent or the
// out-of-order share of the data it received exceeds ReorderPercent, and
// taken back once all are below the thresholds lowered by
// HysteresisPercent for at least Hold. A direction that carried no data in
// a sample gives no evidence; 0 turns a check off.
type Priority struct {
	RTT               time.Duration `json:"rtt" key:"rtt_ms"`
	LossPercent       float64       `json:"loss_percent"`
	ReorderPercent    float64       `json:"reorder_percent"`
	HysteresisPercent float64       `json:"hysteresis_percent"`
	Hold              time.Duration `json:"hold"`
}

// Handover holds the health checks of the handover mode: a primary path is
// unhealthy after Failures consecutive checks (every Interval) with RTT
// above RTT (either direction), send loss above LossPercent or receive
// reorder share above ReorderPercent (see Priority); backup subflows are
// closed again once the primary has been healthy for Hold.
type Handover struct {
	RTT            time.Duration `json:"rtt" key:"rtt_ms"`
	LossPercent    float64       `json:"loss_percent"`
	ReorderPercent float64       `json:"reorder_percent"`
	Interval       time.Duration `json:"interval"`
	Failures       int           `json:"failures"`
	Hold           time.Duration `json:"hold"`
}

// Metrics configures the Prometheus endpoint. Empty Listen disables it.
type Metrics struct {
	Listen string `json:"listen"`
	// SubflowSeries: the sockops telemetry's per-subflow series are
	// exported while its map holds at most this many subflows, none above
	// (and none with 0); the per-interface srtt histogram always is.
	SubflowSeries int `json:"subflow_series"`
}

// CreatesThread is the thread that sends a new connection's creates.
type CreatesThread string

// Create threads.
const (
	// CreatesAuto, the default: the realtime thread where it can run at
	// SCHED_FIFO (a client on the userspace PM, a build with cgo, the
	// right to the real-time class), else the reader; the daemon decides
	// at its start and logs which and why (internal/controller/rtcreates.go).
	// The thread helps only at SCHED_FIFO: without it, it measured no
	// better than the reader (docs/benchmarks.md, "burst").
	CreatesAuto CreatesThread = "auto"
	// CreatesReader: the daemon's event reader, in Go, at the daemon's
	// scheduling (internal/controller/early.go).
	CreatesReader CreatesThread = "reader"
	// CreatesRealtime: a thread of its own, in C, at SCHED_FIFO
	// (internal/rtcreate); for bursts of new connections. Needs a build
	// with cgo; without the right to SCHED_FIFO it runs at the daemon's
	// scheduling, with a warning.
	CreatesRealtime CreatesThread = "realtime"
)

// DefaultCreatesPriority is the realtime thread's SCHED_FIFO priority
// unless creates.priority says otherwise: above every SCHED_OTHER thread,
// below the kernel's threaded interrupts (50).
const DefaultCreatesPriority = 10

// Creates is the `creates:` section.
type Creates struct {
	Thread   CreatesThread `json:"thread"`
	Priority int           `json:"priority,omitempty"` // SCHED_FIFO priority of the realtime thread (auto, realtime)
}

// Threaded reports whether p is a client's on the userspace PM: the only
// daemon that sends new connections' creates, and so the only one a
// create thread (creates.thread) serves.
func (p *Policy) Threaded() bool {
	return p.Side == SideClient && p.PathManager == PMUserspace
}

// Log configures logging.
type Log struct {
	Level  string `json:"level"`  // debug, info, warn, error
	Format string `json:"format"` // text, json
}

// InterfaceFor returns the policy entry for the interface named ifname:
// an exact name entry wins over patterns; among patterns, the first in file
// order wins.
func (p *Policy) InterfaceFor(ifname string) (*Interface, bool) {
	for i := range p.Interfaces {
		if p.Interfaces[i].Name != "" && p.Interfaces[i].Name == ifname {
			return &p.Interfaces[i], true
		}
	}
	for i := range p.Interfaces {
		if p.Interfaces[i].Name == "" && p.Interfaces[i].Matches(ifname) {
			return &p.Interfaces[i], true
		}
	}
	return nil, false
}

// Summary is a one-line description, e.g. for `gigapath config check`.
func (p *Policy) Summary() string {
	var ifs []string
	for _, i := range p.Interfaces {
		s := i.Key() + " " + string(i.Role)
		if i.Backup {
			s += " backup"
		}
		ifs = append(ifs, s)
	}
	noun := "interfaces"
	if len(ifs) == 1 {
		noun = "interface"
	}
	return fmt.Sprintf("side %s, path_manager %s, steering %s, routing %s, %d %s (%s)",
		p.Side, p.PathManager, p.Steering, p.Routing.Mode, len(ifs), noun, strings.Join(ifs, ", "))
}

// Notes explain, in sentences, what the policy makes the daemon do beyond
// the summary where that is easy to get wrong: the C flag, the listeners
// behind announced ports, what a raised metrics.subflow_series costs.
// `gigapath config check` prints them.
func (p *Policy) Notes() []string {
	var out []string
	if n := p.Metrics.SubflowSeries; n > DefaultSubflowSeries {
		out = append(out, fmt.Sprintf("metrics.subflow_series: %d: up to that many subflows, /metrics has four series per subflow of the sockops telemetry, and every scrape takes about 36-43 µs and 370 bytes per subflow (%.1f s and %d MB at %d, as measured on 2 loaded cores; docs/benchmarks.md); the srtt histogram per interface does not need them",
			n, float64(n)*40e-6, n*370/1_000_000, n))
	}
	if p.Side != SideServer {
		return out
	}
	if p.InitialAddressJoins == JoinsRefuse {
		out = append(out, `initial_address_joins: refuse: the connections this node accepts carry the "C" flag (RFC 8684 §3.1): clients must not open subflows to the address they connected to, only to the addresses announced to them; the daemon sets net.mptcp.allow_join_initial_addr_port=0 in its network namespace while it runs and puts the value it found back when it stops`)
		if len(p.Announce) == 0 && p.PathManager == PMUserspace {
			out = append(out, "initial_address_joins: refuse with nothing to announce: clients get no second path (list the node's own address under announce:)")
		}
	}
	for i, a := range p.Announce {
		if a.Port == 0 {
			continue
		}
		what := a.Address.String()
		if a.Interface != "" {
			what = "the address of " + a.Interface
		}
		if p.PathManager == PMKernel {
			out = append(out, fmt.Sprintf("announce[%d]: %s port %d is a signal endpoint with a port: the kernel listens there for joins itself", i, what, a.Port))
			continue
		}
		out = append(out, fmt.Sprintf("announce[%d]: the daemon keeps an MPTCP listener on %s port %d for the peers' joins while it is announced, unless another socket listens there (the kernel accepts a join to another port than the connection's only through a listener bound to exactly that address and port)", i, what, a.Port))
	}
	return out
}

// MptcpifyCgroup is the cgroup path of a `mptcpify:` entry: a systemd unit
// name (no '/') lives under system.slice; anything else is a cgroup path.
func MptcpifyCgroup(entry string) string {
	if !strings.Contains(entry, "/") {
		return "system.slice/" + entry
	}
	return entry
}
