package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/ebpf/sched"
)

func init() {
	register(&cli.Command{
		Name:  "sched",
		Usage: "list, select and unload MPTCP packet schedulers (kernel and BPF)",
		Description: `The scheduler decides which subflow carries each piece of data. The kernel
   has its own ("default"); gigapath ships BPF schedulers for kernels that can
   register them (no released one; "make sched-kernel" builds one, see
   docs/kernels.md). The choice is per network namespace (sysctl
   net.mptcp.scheduler) and applies on the sending side to connections
   created after it; "gigapath relay" re-opens its listener to follow it.
   E.g. in the namespace the relay runs in:
   gigapath sched list -j
   gigapath --netns relay sched use gp_minrtt
   gigapath sched unload gp_minrtt`,
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "list the kernel's and gigapath's schedulers",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print JSON"}},
				Action: schedList,
			},
			{
				Name:      "use",
				Usage:     "select a scheduler in a network namespace (registering a BPF one first)",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "netns", Aliases: []string{"n"}, Usage: "network namespace `NAME` (default: the current one)"},
					&cli.UintFlag{Name: "rtt-threshold", Usage: "gp_minrtt: use a path only if its RTT is within `PERCENT` of the fastest (default 150)"},
				},
				Action: schedUse,
			},
			{
				Name:      "unload",
				Usage:     "unregister one of gigapath's BPF schedulers (the namespace that selects it goes back to default)",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "netns", Aliases: []string{"n"}, Usage: "network namespace `NAME` whose net.mptcp.scheduler is reset to default if it names the scheduler (default: the current one)"},
				},
				Action: schedUnload,
			},
		},
	})
}

// schedEntry is one row of `sched list`.
type schedEntry struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"` // kernel or bpf
	Available  bool   `json:"available"`
	Active     bool   `json:"active"`
	Registered bool   `json:"registered,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

func schedEntries(netns string) ([]schedEntry, error) {
	st, err := sched.State(netns)
	if err != nil {
		return nil, err
	}
	ok, reason := sched.Available()
	// Active is what a new connection gets: net.mptcp.scheduler naming a
	// scheduler that was unregistered since means "default".
	eff := st.Effective()
	var out []schedEntry
	for _, name := range st.Available {
		if _, ours := sched.Lookup(name); ours {
			continue
		}
		out = append(out, schedEntry{Name: name, Kind: "kernel", Available: true, Active: eff == name})
	}
	for _, s := range sched.Shipped() {
		e := schedEntry{Name: s.Name, Kind: "bpf", Available: ok, Active: eff == s.Name,
			Registered: slices.Contains(st.Available, s.Name)}
		switch {
		case !ok:
			e.Reason = reason
		case st.Active == s.Name && !e.Registered:
			e.Reason = "net.mptcp.scheduler names it but it is not registered: new connections get default"
		}
		out = append(out, e)
	}
	return out, nil
}

func schedList(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErrorf("sched list: unexpected argument %q", c.Args().First())
	}
	entries, err := schedEntries(netnsName(c))
	if err != nil {
		return err
	}
	if jsonOutput(c) {
		return printJSON(entries)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tKIND\tAVAILABLE\tACTIVE\tNOTE")
	for _, e := range entries {
		note := e.Reason
		if e.Registered {
			note = "registered"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", e.Name, e.Kind, schedYesNo(e.Available), schedYesNo(e.Active), note)
	}
	return w.Flush()
}

func schedYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func schedNames(netns string) string {
	var names []string
	if st, err := sched.State(netns); err == nil {
		for _, n := range st.Available {
			if _, ours := sched.Lookup(n); !ours {
				names = append(names, n)
			}
		}
	}
	for _, s := range sched.Shipped() {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

func schedUse(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("sched use: want one scheduler NAME (one of: %s)", schedNames(netnsName(c)))
	}
	name, netns := c.Args().First(), netnsName(c)
	st, err := sched.State(netns)
	if err != nil {
		return err
	}
	if _, ours := sched.Lookup(name); !ours && !slices.Contains(st.Available, name) {
		return usageErrorf("sched use: unknown scheduler %q (one of: %s)", name, schedNames(netns))
	}
	registered := false
	if c.IsSet("rtt-threshold") {
		if name != "gp_minrtt" {
			return usageErrorf("sched use: --rtt-threshold applies to gp_minrtt only, not %q", name)
		}
		if schedOps.registered(name) {
			return fmt.Errorf("sched use: gp_minrtt is already registered; `gigapath sched unload gp_minrtt` first to change its threshold")
		}
		if err := schedOps.registerOpts(name, sched.Options{RTTThresholdPercent: uint32(c.Uint("rtt-threshold"))}); err != nil {
			return err
		}
		registered = true
	}
	if err := schedOps.use(netns, name); err != nil {
		if errors.Is(err, sched.ErrUnsupported) {
			err = fmt.Errorf("sched use %s: %w", name, sched.ErrUnsupported)
		}
		// Registered here for the threshold: do not leave it behind.
		if registered {
			if uerr := schedOps.unregister(name); uerr != nil {
				err = fmt.Errorf("%w (unregistering %s again failed too: %v)", err, name, uerr)
			}
		}
		return err
	}
	return nil
}

// schedOps are the kernel-changing steps of sched use; tests replace them
// (BPF schedulers do not load on every kernel) to check the rollback.
var schedOps = struct {
	registered   func(string) bool
	registerOpts func(string, sched.Options) error
	use          func(netns, name string) error
	unregister   func(string) error
}{sched.Registered, sched.RegisterOpts, sched.Use, sched.Unregister}

func schedUnload(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("sched unload: want one BPF scheduler NAME")
	}
	name := c.Args().First()
	if _, ours := sched.Lookup(name); !ours {
		var names []string
		for _, s := range sched.Shipped() {
			names = append(names, s.Name)
		}
		return usageErrorf("sched unload: %q is not one of gigapath's BPF schedulers (%s)", name, strings.Join(names, ", "))
	}
	netns := netnsName(c)
	if st, err := sched.State(netns); err == nil && st.Active == name {
		// New connections would fall back to default anyway; say so in
		// the sysctl too, so it does not name a scheduler that is gone.
		if err := sched.Use(netns, "default"); err != nil {
			return fmt.Errorf("sched unload %s: reset net.mptcp.scheduler to default first: %w", name, err)
		}
		fmt.Fprintf(os.Stderr, "net.mptcp.scheduler was %s: now default\n", name)
	}
	// Connections that started under it keep it (they hold a reference)
	// until they end.
	return sched.Unregister(name)
}
