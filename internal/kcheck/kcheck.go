// Package kcheck probes what the running kernel offers gigapath: MPTCP, its
// path managers and schedulers, the mptcp_pm netlink family and its
// commands, endpoint flags, socket options, sock_diag, lockdown, the BPF
// program types gigapath loads and the cgroup v2 hierarchy. Every item is
// probed (a socket opened, a request sent, a program loaded), never
// inferred from the kernel version, and comes with a one-line consequence
// for gigapath. It backs `gigapath check` and the kernel matrix in
// docs/kernels.md.
package kcheck

// Item is one line of the report. The JSON keys are stable: tools and the
// kernel matrix generator read them.
type Item struct {
	// Name identifies the item ("mptcp", "bpf_tracing", ...); the set of
	// names is fixed, see Names.
	Name string `json:"name"`
	// OK is true when the feature is there and usable as gigapath wants.
	OK bool `json:"ok"`
	// Value is what was found, e.g. "kernel userspace (active: kernel)" or
	// "refused: operation not permitted (lockdown=integrity)".
	Value string `json:"value"`
	// Consequence says in one line what this means for gigapath.
	Consequence string `json:"consequence"`
}

// Config selects where the namespace-dependent items are probed.
type Config struct {
	// NetNS names the network namespace whose MPTCP settings are read: a
	// name from `ip netns list` (resolved under /run/netns) or an absolute
	// path to a namespace file. Empty means the caller's namespace.
	NetNS string
}

// Names lists the item names in report order.
var Names = []string{
	"kernel",
	"mptcp",
	"path_managers",
	"schedulers",
	"mptcp_pm_family",
	"pm_commands",
	"endpoint_flags",
	"userspace_pm_get_addr",
	"mptcp_full_info",
	"mptcp_diag",
	"lockdown",
	"bpf_tracing",
	"bpf_lsm",
	"bpf_sockops",
	"bpf_sched_cls",
	"bpf_cgroup_sock_addr",
	"bpf_struct_ops",
	"bpf_raw_tracepoint",
	"bpf_mptcp_sched",
	"cgroup2",
	"mptcpify",
	"path_policy",
	"send_share",
}

// Run probes everything and returns one Item per name in Names, in that
// order. Missing features are items with OK false, not errors; the error
// is for a report that cannot be made at all (e.g. the namespace does not
// exist).
func Run(cfg Config) ([]Item, error) { return run(cfg) }
