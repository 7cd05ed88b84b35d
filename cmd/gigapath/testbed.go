//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/internal/demo"
	"github.com/gigapath/gigapath/internal/testbed"
)

func init() {
	register(&cli.Command{
		Name:  "testbed",
		Usage: "bring up, inspect and remove the built-in test network (namespaces cli, prx, org; lb and n1..nN for a fleet)",
		Description: `A phone-like client namespace with two access links (wifi0, lte0) to an
   MPTCP proxy namespace, which reaches an origin namespace. With --proxies N
   (2 or more) the access links end at a load balancer that owns the service
   address and spreads new flows over N proxy nodes with nftables; each node
   has its own address, reachable from both links (docs/fleet.md).
   Addresses and interfaces are in docs/testbed.md. The bed is recorded in
   ` + testbed.StateFile + `.
   gigapath testbed up --wifi-rate 100mbit --lte-rate 50mbit
   gigapath testbed up --proxies 3 --balance numgen
   gigapath testbed status -j
   gigapath testbed down          (the recorded bed)
   gigapath testbed down --all    (every gp-* namespace, e.g. after a crash)
   down also removes the bed of a demo that was killed (` + "/run/gigapath/demo.json" + `).
   GIGAPATH_TESTBED_STATE=FILE records the bed in FILE instead
   (GIGAPATH_DEMO_STATE=FILE for the demo's).`,
		Subcommands: []*cli.Command{
			{
				Name:  "up",
				Usage: "build a bed and record it",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "wifi-rate", Usage: "shape wifi to `RATE` (tc syntax, e.g. 100mbit); empty = unshaped"},
					&cli.StringFlag{Name: "lte-rate", Usage: "shape lte to `RATE`"},
					&cli.BoolFlag{Name: "no-client-routing", Usage: "leave the client's routes and rules to the daemon"},
					&cli.BoolFlag{Name: "kernel-pm", Usage: "configure the in-kernel PM: limits and a subflow endpoint on lte0 (a fleet: also a signal endpoint per node address and the C flag on every node)"},
					&cli.IntFlag{Name: "proxies", Value: 1, Usage: "`N` proxy nodes: 1 = a single proxy; 2 to " + strconv.Itoa(testbed.MaxProxies) + " = a fleet behind an nftables load balancer"},
					&cli.BoolFlag{Name: "dnat-to-node-addr", Usage: "fleet: the balancer DNATs to each node's own address (as kube-proxy does for hostNetwork pods), not to its backend address"},
					&cli.StringFlag{Name: "balance", Usage: "how the fleet's balancer spreads new flows: " + testbed.BalanceJHash + " (hash of source address and port, the default) or " + testbed.BalanceNumgen + " (round robin)"},
					&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print JSON"},
				},
				Action: testbedUp,
			},
			{
				Name:   "status",
				Usage:  "show the recorded bed: namespaces, links, addresses, rates",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print JSON"}},
				Action: testbedStatus,
			},
			{
				Name:  "down",
				Usage: "remove the recorded bed",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "all", Usage: "also remove every namespace named " + testbed.NamePrefix + "* (and kill what runs in it), including beds of tests running now"},
				},
				Action: testbedDown,
			},
		},
	})
}

func testbedUp(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return usageErrorf("testbed up: unexpected argument %q: only flags are accepted", c.Args().First())
	}
	spec := testbed.Spec{
		WiFiRate:      c.String("wifi-rate"),
		LTERate:       c.String("lte-rate"),
		ClientRouting: !c.Bool("no-client-routing"),
		Proxies:       c.Int("proxies"),
		Balance:       c.String("balance"),

		DNATToNodeAddr: c.Bool("dnat-to-node-addr"),
	}
	if spec.Proxies < 1 || spec.Proxies > testbed.MaxProxies {
		return usageErrorf("--proxies %d: valid is 1 (a single proxy) to %d (a fleet)", spec.Proxies, testbed.MaxProxies)
	}
	if (spec.Balance != "" || spec.DNATToNodeAddr) && spec.Proxies < 2 {
		return usageErrorf("--balance and --dnat-to-node-addr need a fleet: --proxies 2 or more")
	}
	if b := spec.Balance; b != "" && b != testbed.BalanceJHash && b != testbed.BalanceNumgen {
		return usageErrorf("--balance %q: valid is %s or %s", b, testbed.BalanceJHash, testbed.BalanceNumgen)
	}
	for _, f := range []struct{ flag, v string }{{"--wifi-rate", spec.WiFiRate}, {"--lte-rate", spec.LTERate}} {
		if f.v != "" {
			if _, err := testbed.ParseRate(f.v); err != nil {
				return usageErrorf("%s: %v", f.flag, err)
			}
		}
	}
	if old, err := testbed.Load(testbedStateFile()); err == nil && old.Client.Exists() {
		return fmt.Errorf("a testbed is already up (client namespace %s, recorded in %s): run `gigapath testbed down` first", old.Client.Name, testbedStateFile())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := testbed.Up(ctx, spec)
	if err != nil {
		return fmt.Errorf("testbed up: %w", err)
	}
	if c.Bool("kernel-pm") {
		enable := b.EnableKernelPM
		if b.IsFleet() {
			enable = func() error { return b.EnableFleetPM(testbed.FleetPM{Signal: true, RefuseInitial: true}) }
		}
		if err := enable(); err != nil {
			b.Close()
			return fmt.Errorf("testbed up: kernel PM: %w", err)
		}
	}
	if err := b.Save(testbedStateFile()); err != nil {
		b.Close()
		return fmt.Errorf("testbed up: record the bed: %w", err)
	}
	if jsonOutput(c) {
		return printJSON(b.Describe())
	}
	printBedStatus(b)
	return nil
}

// testbedStateFile is where the bed is recorded; GIGAPATH_TESTBED_STATE
// overrides it (tests use a file of their own).
func testbedStateFile() string {
	if p := os.Getenv("GIGAPATH_TESTBED_STATE"); p != "" {
		return p
	}
	return testbed.StateFile
}

func loadBed() (*testbed.Bed, error) {
	b, err := testbed.Load(testbedStateFile())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no testbed recorded in %s: run `gigapath testbed up`", testbedStateFile())
	}
	return b, err
}

func testbedStatus(c *cli.Context) error {
	b, err := loadBed()
	if err != nil {
		return err
	}
	if jsonOutput(c) {
		return printJSON(struct {
			testbed.Description
			Status testbed.Status `json:"status"`
		}{b.Describe(), b.Status()})
	}
	printBedStatus(b)
	return nil
}

func printBedStatus(b *testbed.Bed) {
	s := b.Status()
	fmt.Println("namespaces:")
	for _, n := range s.Namespaces {
		state := "present"
		if !n.Present {
			state = "MISSING"
		}
		fmt.Printf("  %-8s %-16s %s\n", n.Role, n.Name, state)
	}
	fmt.Println("links (client end):")
	for _, l := range s.Links {
		rate := l.Rate
		if rate == "" {
			rate = "unshaped"
		}
		fmt.Printf("  %-5s %s<->%s  %-7s rate %-9s rx %d B  tx %d B\n", l.Link, l.ClientIf, l.ProxyIf, l.State, rate, l.RxBytes, l.TxBytes)
	}
	fmt.Println("addresses:")
	for _, a := range s.Addresses {
		fmt.Printf("  %-19s %-16s %-6s %-13s %s\n", a.Name, a.NetNS, a.Iface, a.Addr, a.Addr6)
	}
	if len(s.Nodes) > 0 {
		fmt.Printf("balancer (%s, nft table inet %s in %s): service %s %s\n", b.Spec.Balance, testbed.LBTable, b.Proxy.Name, b.ProxyAddr, b.ProxyAddr6)
		for _, n := range s.Nodes {
			state := "in"
			if !n.InBalancer {
				state = "OUT"
			}
			fmt.Printf("  node%-2d %-16s %-3s new flows %d\n", n.Index, n.Name, state, n.Flows)
		}
	}
}

// nsNames lists the namespaces of b, space-separated.
func nsNames(b *testbed.Bed) string {
	var names []string
	for _, n := range b.Namespaces() {
		names = append(names, n.Name)
	}
	return strings.Join(names, " ")
}

// demoLeftover reports whether a demo's bed is recorded.
func demoLeftover() bool {
	_, err := os.Stat(demoStateFile())
	return err == nil
}

func testbedDown(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return usageErrorf("testbed down: unexpected argument %q: only --all is accepted", c.Args().First())
	}
	var errs []error
	b, err := loadBed()
	switch {
	case err == nil:
		if err := b.Close(); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(os.Stderr, "removed %s\n", nsNames(b))
		}
		if err := os.Remove(testbedStateFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	case !c.Bool("all") && !demoLeftover():
		return err
	}
	// A demo killed before it could clean up (SIGKILL) leaves its bed
	// recorded in demo.StateFile, and its daemons' files in demo.WorkDir.
	if d, derr := testbed.Load(demoStateFile()); derr == nil {
		if err := d.Close(); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(os.Stderr, "removed the demo's %s\n", nsNames(d))
			os.Remove(demoStateFile())
			if err := os.RemoveAll(demo.WorkDir(demoStateFile())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.Bool("all") {
		removed, err := testbed.Cleanup()
		for _, n := range removed {
			fmt.Fprintf(os.Stderr, "removed %s\n", n)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
