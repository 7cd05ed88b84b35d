//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/demo"
	"github.com/gigapath/gigapath/internal/testbed"
)

func init() {
	register(&cli.Command{
		Name:  "demo",
		Usage: "download through MPTCP over wifi+lte in a throw-away testbed while wifi drops out (needs root)",
		Description: `Builds the testbed (docs/testbed.md), serves a random file from the origin,
   downloads it from the client over MPTCP through the proxy, takes wifi down
   halfway and brings it back, then prints the aggregate rate against the
   sum of the link rates, the handover gap and the SHA-256 check. Progress
   goes to stderr, the summary to stdout (-j: JSON). Removes everything it
   made, also on Ctrl-C.
   With --proxies N (2 or more) it shows a fleet instead: N proxy nodes
   behind an nftables load balancer that owns the service address, --conns
   connections through it, and for each node the connections it holds and
   for each connection its two paths: wifi to the service address, lte to
   its own node's address (docs/fleet.md). The nodes run the kernel's path
   manager for now (a signal endpoint per node address and the C flag), not
   the daemon; the summary says so.
   gigapath demo
   gigapath demo --wifi-rate 200mbit --lte-rate 100mbit --size-mb 100 -j
   gigapath demo --proxies 3`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "wifi-rate", Value: "100mbit", Usage: "wifi link `RATE` (tc syntax)"},
			&cli.StringFlag{Name: "lte-rate", Value: "50mbit", Usage: "lte link `RATE`"},
			&cli.Int64Flag{Name: "size-mb", Value: 60, Usage: "download `MB` (10^6 bytes)"},
			&cli.DurationFlag{Name: "down-for", Value: 2 * time.Second, Usage: "how long wifi stays down"},
			&cli.IntFlag{Name: "proxies", Value: 1, Usage: "`N` proxy nodes: 1 = one proxy and a wifi outage; 2 to " + strconv.Itoa(testbed.MaxProxies) + " = a fleet behind a load balancer"},
			&cli.StringFlag{Name: "balance", Usage: "fleet only: " + testbed.BalanceJHash + " (the default) or " + testbed.BalanceNumgen},
			&cli.IntFlag{Name: "conns", Usage: "fleet only: `N` connections through the service address (default 4 per node)"},
			&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print the summary as JSON"},
		},
		Action: runDemo,
	})
}

// demoStateFile is where a running demo records its bed;
// GIGAPATH_DEMO_STATE overrides it (tests).
func demoStateFile() string {
	if p := os.Getenv("GIGAPATH_DEMO_STATE"); p != "" {
		return p
	}
	return demo.StateFile
}

func runDemo(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return usageErrorf("demo: unexpected argument %q: only flags are accepted", c.Args().First())
	}
	for _, f := range []string{"wifi-rate", "lte-rate"} {
		if _, err := testbed.ParseRate(c.String(f)); err != nil {
			return usageErrorf("--%s: %v", f, err)
		}
	}
	if n := c.Int64("size-mb"); n < 1 || n > 2000 {
		return usageErrorf("--size-mb %d: valid is 1 to 2000", n)
	}
	if d := c.Duration("down-for"); d <= 0 || d > 20*time.Second {
		return usageErrorf("--down-for %v: valid is more than 0 and at most 20s", d)
	}
	proxies := c.Int("proxies")
	if proxies < 1 || proxies > testbed.MaxProxies {
		return usageErrorf("--proxies %d: valid is 1 to %d", proxies, testbed.MaxProxies)
	}
	if proxies == 1 {
		for _, f := range []string{"balance", "conns"} {
			if c.IsSet(f) {
				return usageErrorf("--%s needs a fleet: --proxies 2 or more", f)
			}
		}
	} else if c.IsSet("down-for") {
		return usageErrorf("--down-for is for the single-proxy demo; the fleet demo takes no link down")
	}
	if b := c.String("balance"); b != "" && b != testbed.BalanceJHash && b != testbed.BalanceNumgen {
		return usageErrorf("--balance %q: valid is %s or %s", b, testbed.BalanceJHash, testbed.BalanceNumgen)
	}
	if n := c.Int("conns"); c.IsSet("conns") && (n < 1 || n > 200) {
		return usageErrorf("--conns %d: valid is 1 to 200", n)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("demo: needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, ttyErr := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	// The relays run as this binary (`gigapath relay`) in the namespaces.
	bin, err := os.Executable()
	if err != nil {
		bin = ""
	}
	if proxies >= 2 {
		s, err := demo.RunFleet(ctx, demo.FleetOptions{
			Proxies:   proxies,
			Balance:   c.String("balance"),
			WiFiRate:  c.String("wifi-rate"),
			LTERate:   c.String("lte-rate"),
			Conns:     c.Int("conns"),
			Size:      c.Int64("size-mb") * 1e6,
			Progress:  os.Stderr,
			StateFile: demoStateFile(),
			Binary:    bin,
		})
		return printSummary(c, s, err)
	}
	s, err := demo.Run(ctx, demo.Options{
		WiFiRate:  c.String("wifi-rate"),
		LTERate:   c.String("lte-rate"),
		Size:      c.Int64("size-mb") * 1e6,
		FlapFor:   c.Duration("down-for"),
		Progress:  os.Stderr,
		Live:      ttyErr == nil,
		StateFile: demoStateFile(),
		Binary:    bin,
	})
	return printSummary(c, s, err)
}

// printSummary prints a demo's summary (if any) as text or JSON and
// returns the demo's error.
func printSummary[S interface {
	*demo.Summary | *demo.FleetSummary
	fmt.Stringer
}](c *cli.Context, s S, err error) error {
	if s == nil {
		return err
	}
	if jsonOutput(c) {
		if perr := printJSON(s); perr != nil && err == nil {
			err = perr
		}
	} else {
		fmt.Print(s)
	}
	return err
}
