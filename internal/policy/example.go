package policy

// example is the commented reference configuration printed by
// `gigapath config example`. A test checks that it parses and that its
// values are the documented defaults where it says so.
const example = `# gigapath policy — reference configuration.
# Every key is shown with its default. A '#' directly before a key marks
# an optional setting: delete the '#' to use it.
# Reference: docs/policy.md. Check a file with: gigapath config check FILE

# Which end of MPTCP connections this node is: client | server.
side: client

# Which path manager: "userspace" (gigapath itself, net.mptcp.path_manager
# userspace) or "kernel" (the in-kernel PM; gigapath keeps its endpoints
# and limits).
path_manager: userspace

# aggregate | active-standby | handover | priority (docs/policy.md)
steering: aggregate

# Optional MPTCP packet scheduler (kernel or BPF, see gigapath sched list).
#scheduler: default

# Cgroup v2 whose sockets get the interfaces' congestion/mark (eBPF
# sockops); default: the cgroup v2 root, i.e. every socket of the managed
# network namespace.
#path_cgroup: system.slice/app.service

# Cgroups (systemd unit names or cgroup v2 paths) whose TCP sockets are
# made MPTCP by eBPF, where the kernel allows tracing programs.
#mptcpify: [app.service]

# The interfaces MPTCP may use. Each has name (exact) or match (a glob).
interfaces:
  - name: wifi0
    role: wifi            # wifi | lte | ethernet | other
    #backup: false        # subflows marked backup (MP_PRIO); default: true
                          # for role lte under active-standby and handover
    #max_subflows: 1      # subflows per connection from this interface (1-8):
                          # one per destination (remote, then peer_addresses)
    #congestion: cubic    # TCP congestion control of its subflows (eBPF sockops)
    #mark: 0              # fwmark of its subflows (0: none)
    #gateway: 192.0.2.1   # next hop of its table's default route (one per
                          # family); default: its default route in the main
                          # table, else on-link
  - name: lte0
    role: lte
  #- match: "eth*"        # a glob instead of a name
  #  role: ethernet

# Client side, userspace PM: "use" also opens subflows to the addresses
# the peer announces (ADD_ADDR), from each interface, as far as its
# max_subflows allows (the connection's remote address comes first);
# "ignore": only to the connection's remote address.
peer_addresses: ignore

# Server side only: what to advertise to each connection (ADD_ADDR; with
# path_manager: kernel, the in-kernel PM's signal endpoints).
#announce:
#  - interface: lte0      # every address of this interface, or
#  - address: 192.0.2.10  # one address
#    port: 443            # optional; default: the connection's port; with a
                          # port the daemon listens there for joins

# Server side only: "refuse" sets the "C" flag of RFC 8684 on the
# connections this node accepts (net.mptcp.allow_join_initial_addr_port=0
# while the daemon runs): clients join only the announced addresses, never
# the address they connected to. For nodes behind a load balancer, whose
# shared address must not get joins (docs/fleet.md).
initial_address_joins: allow

# path_manager: kernel only — the in-kernel PM's limits per connection
# (the kernel allows at most 8 each).
#limits:
#  subflows: 4
#  add_addr_accepted: 4

# Mode "managed": a routing table and a "from ADDR lookup TABLE" rule per
# interface, so each subflow leaves by its own interface; "off": leave
# routing alone. Short form: "routing: off".
routing:
  mode: managed
  table_base: 1000        # table of an interface = table_base + ifindex
  rule_priority: 1000     # below the main table's rule (32766)

# steering: priority — leave the first interface when its RTT or loss
# crosses a threshold; come back when both are below the thresholds
# lowered by hysteresis_percent for hold. Both directions count: rtt_ms
# applies to the smoothed RTT (sending) and to the receiver's RTT estimate
# (downloads), loss_percent to retransmitted bytes sent, reorder_percent to
# the out-of-order share of the data segments received (loss on the way in).
# 0 turns a check off.
priority:
  rtt_ms: 200
  loss_percent: 5
  reorder_percent: 30
  hysteresis_percent: 20
  hold: 5s

# steering: handover — open backup subflows when the primary is gone or
# fails "failures" checks in a row (every interval); close them after the
# primary has been healthy for hold.
handover:
  rtt_ms: 500
  loss_percent: 20
  reorder_percent: 10
  interval: 1s
  failures: 3
  hold: 3s

# Prometheus /metrics; "" disables. Keep it on loopback unless protected.
# subflow_series: the eBPF telemetry's per-subflow series are exported
# while there are at most this many subflows (0: never); the srtt
# histogram per interface always is.
metrics:
  listen: 127.0.0.1:9477
  subflow_series: 1024

# Unix socket for gigapath status; "" disables.
status_socket: /run/gigapath/status.sock

log:
  level: info             # debug | info | warn | error
  format: text            # text | json

# Ignore link-local addresses (fe80::/10, 169.254.0.0/16).
skip_link_local: true

# Which thread answers a new connection with its subflow creates (a
# client on the userspace PM; elsewhere auto and reader do nothing, and
# realtime is an error).
# auto: a C thread at SCHED_FIFO priority 10 where it can run there (a
# build with cgo and CAP_SYS_NICE or LimitRTPRIO, which the packaged unit
# grants: docs/deploy.md), else the daemon's event reader; the log says
# which and why. reader: always the event reader. realtime: always the
# thread, at the daemon's own scheduling when SCHED_FIFO is refused.
# Under a burst of new connections only the thread at SCHED_FIFO gives
# them their second path about as fast as the in-kernel PM
# (docs/benchmarks.md, "burst").
creates:
  thread: auto
  #priority: 10           # SCHED_FIFO priority of the thread (1-99; auto and realtime only)

# The SOCKS5 relay's section: gigapath relay --config FILE reads it when
# it starts (docs/relay.md); the daemon does not use it.
#relay:
#  listen: 127.0.0.1:1080
#  idle_timeout: 5m
`

// Example returns the commented reference configuration. It parses as is.
func Example() string { return example }
