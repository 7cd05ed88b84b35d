//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
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
   gigapath demo
   gigapath demo --wifi-rate 200mbit --lte-rate 100mbit --size 100MB -j`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "wifi-rate", Value: "100mbit", Usage: "wifi link `RATE` (tc syntax)"},
			&cli.StringFlag{Name: "lte-rate", Value: "50mbit", Usage: "lte link `RATE`"},
			&cli.Int64Flag{Name: "size-mb", Value: 60, Usage: "download `MB` (10^6 bytes)"},
			&cli.DurationFlag{Name: "down-for", Value: 2 * time.Second, Usage: "how long wifi stays down"},
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
	if s != nil {
		if jsonOutput(c) {
			if perr := printJSON(s); perr != nil && err == nil {
				err = perr
			}
		} else {
			fmt.Print(s)
		}
	}
	return err
}
