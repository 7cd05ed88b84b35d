// Package sched registers gigapath's BPF MPTCP packet schedulers (struct_ops
// mptcp_sched_ops) with the kernel and selects a scheduler per network
// namespace through the net.mptcp.scheduler sysctl.
//
// No released kernel can register BPF MPTCP schedulers: the mptcp_net-next
// development tree can, and so can the kernel `make sched-kernel` builds
// (Debian's 7.x source plus ebpf/kernel/mptcp-bpf-sched.patch). Available
// says whether this kernel can; everything else fails with that reason
// where it cannot.
package sched

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/gigapath/gigapath/ebpf/bpffs"
	"github.com/gigapath/gigapath/pathmgr/netns"
)

// Scheduler describes one of the shipped BPF schedulers.
type Scheduler struct {
	// Name is what the kernel registers it under and net.mptcp.scheduler
	// takes (at most 15 bytes).
	Name        string `json:"name"`
	Description string `json:"description"`

	load    func() (*ebpf.CollectionSpec, error)
	mapName string
}

var shipped = []Scheduler{
	{Name: "gp_first", Description: "everything on the first active subflow (waits for it when it is full); fails over in subflow order", load: loadFirst, mapName: "gp_first"},
	{Name: "gp_backup", Description: "first usable non-backup subflow; backup subflows only while no other is active", load: loadBackup, mapName: "gp_backup"},
	{Name: "gp_rr", Description: "round robin over the usable subflows", load: loadRr, mapName: "gp_rr"},
	{Name: "gp_redundant", Description: "the same data on every subflow with room (redundant sends)", load: loadRedundant, mapName: "gp_redundant"},
	{Name: "gp_minrtt", Description: "lowest smoothed RTT first; waits rather than use a path slower than the threshold (default 150 % of the fastest)", load: loadMinrtt, mapName: "gp_minrtt"},
}

// Shipped lists the BPF schedulers gigapath carries.
func Shipped() []Scheduler { return slices.Clone(shipped) }

// Lookup returns the shipped scheduler called name.
func Lookup(name string) (Scheduler, bool) {
	for _, s := range shipped {
		if s.Name == name {
			return s, true
		}
	}
	return Scheduler{}, false
}

// StructOpsType is the kernel BTF type that exists only where BPF MPTCP
// schedulers can be registered.
const StructOpsType = "bpf_struct_ops_mptcp_sched_ops"

// ErrUnsupported is wrapped by errors that say the kernel has no BPF MPTCP
// schedulers.
var ErrUnsupported = errors.New("BTF type " + StructOpsType + " not found: this kernel has no BPF MPTCP schedulers (no released kernel has them; `make sched-kernel` builds one, see docs/kernels.md)")

// Available reports whether this kernel can register BPF MPTCP schedulers,
// and if not, why.
func Available() (bool, string) {
	if err := supported(); err != nil {
		return false, err.Error()
	}
	return true, ""
}

func supported() error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("read kernel BTF (/sys/kernel/btf/vmlinux): %w", err)
	}
	if _, err := spec.AnyTypeByName(StructOpsType); err != nil {
		if errors.Is(err, btf.ErrNotFound) {
			return ErrUnsupported
		}
		return fmt.Errorf("look up %s in kernel BTF: %w", StructOpsType, err)
	}
	return nil
}

// PinDir is where registered schedulers' links are pinned.
var PinDir = filepath.Join(bpffs.Dir, "sched")

func pinPath(name string) string { return filepath.Join(PinDir, name) }

// Options tune a scheduler at registration.
type Options struct {
	// RTTThresholdPercent is gp_minrtt's threshold: a subflow is used only
	// if its RTT is within this percentage of the fastest one's. 0 keeps
	// the default (150).
	RTTThresholdPercent uint32
}

// Register loads the named scheduler and registers it with the kernel. Its
// link is pinned under PinDir, so it stays registered after the process
// exits, until Unregister.
func Register(name string) error { return RegisterOpts(name, Options{}) }

// RegisterOpts is Register with options.
func RegisterOpts(name string, o Options) error {
	s, ok := Lookup(name)
	if !ok {
		return fmt.Errorf("scheduler %q: not one of gigapath's BPF schedulers (%s)", name, strings.Join(names(), ", "))
	}
	if err := supported(); err != nil {
		return fmt.Errorf("register scheduler %s: %w", name, err)
	}
	if Registered(name) {
		return fmt.Errorf("register scheduler %s: already registered (pinned at %s)", name, pinPath(name))
	}
	if _, err := bpffs.Ensure(PinDir); err != nil {
		return fmt.Errorf("register scheduler %s: %w", name, err)
	}
	l, err := load(s, o)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.Pin(pinPath(name)); err != nil {
		return fmt.Errorf("register scheduler %s: pin link at %s: %w", name, pinPath(name), err)
	}
	return nil
}

// load creates the struct_ops map and attaches it; closing the returned link
// unregisters the scheduler unless it is pinned.
func load(s Scheduler, o Options) (link.Link, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("register scheduler %s: raise memlock limit: %w", s.Name, err)
	}
	spec, err := s.load()
	if err != nil {
		return nil, fmt.Errorf("register scheduler %s: %w", s.Name, err)
	}
	if v, ok := spec.Variables["rtt_threshold_pct"]; ok && o.RTTThresholdPercent != 0 {
		if err := v.Set(o.RTTThresholdPercent); err != nil {
			return nil, fmt.Errorf("register scheduler %s: set threshold: %w", s.Name, err)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("register scheduler %s: load: %w", s.Name, err)
	}
	defer coll.Close()
	m := coll.Maps[s.mapName]
	if m == nil {
		return nil, fmt.Errorf("register scheduler %s: object has no struct_ops map %q", s.Name, s.mapName)
	}
	l, err := link.AttachStructOps(link.StructOpsOptions{Map: m})
	if err != nil {
		return nil, fmt.Errorf("register scheduler %s: %w", s.Name, err)
	}
	return l, nil
}

// Registered reports whether the named scheduler's link is pinned, i.e.
// gigapath registered it and it has not been unregistered.
func Registered(name string) bool {
	_, err := os.Stat(pinPath(name))
	return err == nil
}

// Unregister removes a scheduler registered by Register. Namespaces whose
// net.mptcp.scheduler names it should be switched away first.
func Unregister(name string) error {
	if _, ok := Lookup(name); !ok {
		return fmt.Errorf("scheduler %q: not one of gigapath's BPF schedulers (%s)", name, strings.Join(names(), ", "))
	}
	p := pinPath(name)
	l, err := link.LoadPinnedLink(p, nil)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unregister scheduler %s: not registered (nothing pinned at %s)", name, p)
		}
		return fmt.Errorf("unregister scheduler %s: %w", name, err)
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unregister scheduler %s: unpin %s: %w", name, p, err)
	}
	return nil
}

func names() []string {
	var n []string
	for _, s := range shipped {
		n = append(n, s.Name)
	}
	return n
}

const (
	sysctlScheduler = "/proc/sys/net/mptcp/scheduler"
	sysctlAvailable = "/proc/sys/net/mptcp/available_schedulers"
)

// KernelState is what a network namespace's MPTCP sysctls say about
// schedulers.
type KernelState struct {
	// Active is net.mptcp.scheduler.
	Active string
	// Available is net.mptcp.available_schedulers: every scheduler
	// registered with the kernel (built-in and BPF).
	Available []string
	// Fixed is true on kernels without the net.mptcp.scheduler sysctl
	// (before Linux 6.3): only the built-in scheduler runs there, reported
	// as "default".
	Fixed bool
}

// Effective is the scheduler a connection created now gets: Active when
// the kernel has it registered, else the built-in "default" (the kernel
// falls back to it when net.mptcp.scheduler names a scheduler that was
// unregistered since).
func (st KernelState) Effective() string {
	if slices.Contains(st.Available, st.Active) {
		return st.Active
	}
	return "default"
}

// ErrNoSchedulerSysctl is wrapped when a scheduler other than "default" is
// asked for on a kernel without net.mptcp.scheduler.
var ErrNoSchedulerSysctl = errors.New("this kernel has no net.mptcp.scheduler sysctl (Linux 6.3 or newer): only its built-in scheduler runs")

// State reads the scheduler sysctls of the network namespace netns (a name
// from `ip netns list`, a namespace file path, or "" for the caller's).
func State(netnsPath string) (KernelState, error) {
	var st KernelState
	err := netns.Do(netnsPath, func() error {
		a, err := os.ReadFile(sysctlScheduler)
		if errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat("/proc/sys/net/mptcp"); err != nil {
				return fmt.Errorf("read net.mptcp sysctls: %w (is MPTCP built into this kernel?)", err)
			}
			st = KernelState{Active: "default", Available: []string{"default"}, Fixed: true}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read net.mptcp.scheduler: %w", err)
		}
		b, err := os.ReadFile(sysctlAvailable)
		if err != nil {
			return fmt.Errorf("read net.mptcp.available_schedulers: %w", err)
		}
		st.Active = strings.TrimSpace(string(a))
		st.Available = strings.Fields(string(b))
		return nil
	})
	return st, err
}

// Use sets net.mptcp.scheduler in the network namespace netns (as for
// State). New MPTCP connections in that namespace use it. The name
// must be registered with the kernel (see State().Available); a shipped
// BPF scheduler is registered first if needed.
func Use(netnsPath, name string) error {
	_, ours := Lookup(name)
	if ours {
		if err := supported(); err != nil {
			return fmt.Errorf("use scheduler %s: %w", name, err)
		}
	}
	st, err := State(netnsPath)
	if err != nil {
		return err
	}
	if st.Fixed {
		if name == "default" {
			return nil
		}
		return fmt.Errorf("use scheduler %s: %w", name, ErrNoSchedulerSysctl)
	}
	need := ours && !Registered(name) && !slices.Contains(st.Available, name)
	return registerFor(need, name, Register, Unregister, func() error {
		return netns.Do(netnsPath, func() error {
			b, err := os.ReadFile(sysctlAvailable)
			if err != nil {
				return fmt.Errorf("read net.mptcp.available_schedulers: %w", err)
			}
			if avail := strings.Fields(string(b)); !slices.Contains(avail, name) {
				return fmt.Errorf("scheduler %q is not registered with the kernel (net.mptcp.available_schedulers: %s)", name, strings.Join(avail, " "))
			}
			if err := os.WriteFile(sysctlScheduler, []byte(name), 0); err != nil {
				return fmt.Errorf("set net.mptcp.scheduler=%s: %w", name, err)
			}
			return nil
		})
	})
}

// registerFor registers name with reg when need is set, then runs next.
// If next fails after this call registered name, it unregisters it again
// with unreg, so a failed Use leaves no struct_ops registered or pinned.
func registerFor(need bool, name string, reg, unreg func(string) error, next func() error) error {
	if need {
		if err := reg(name); err != nil {
			return err
		}
	}
	err := next()
	if err != nil && need {
		if uerr := unreg(name); uerr != nil {
			return fmt.Errorf("%w (unregistering %s again failed too: %v)", err, name, uerr)
		}
	}
	return err
}
