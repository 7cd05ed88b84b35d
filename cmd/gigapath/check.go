package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/internal/kcheck"
)

func init() {
	register(&cli.Command{
		Name:  "check",
		Usage: "report what this kernel supports for gigapath, each item with its consequence",
		Description: `Probes (never guesses from the version): MPTCP in the namespace, path
   managers, schedulers, the mptcp_pm netlink family and its commands,
   endpoint flags, GET_ADDR with a token, MPTCP_FULL_INFO, MPTCP sock_diag,
   lockdown, the BPF program types gigapath loads, BPF MPTCP schedulers,
   cgroup v2, and what that means for mptcpify and the per-path policy.
   Exits 0 even when features are missing (it is a report), 1 only when it
   cannot run.
   gigapath check
   gigapath -j check
   gigapath --netns relay check -j`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print a JSON array of {name, ok, value, consequence}"},
			&cli.StringFlag{Name: "netns", Aliases: []string{"n"}, Usage: "read the MPTCP settings of network namespace `NAME`"},
		},
		Action: checkAction,
	})
}

func checkAction(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return usageErrorf("check: unexpected argument %q (check takes only -j and --netns)", c.Args().First())
	}
	items, err := kcheck.Run(kcheck.Config{NetNS: netnsName(c)})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if jsonOutput(c) {
		return printJSON(items)
	}
	return printCheck(os.Stdout, items)
}

// printCheck writes one line per item (name, yes/no, value) and the
// consequence indented below it.
func printCheck(w io.Writer, items []kcheck.Item) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, it := range items {
		ok := "no"
		if it.OK {
			ok = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", it.Name, ok, oneLine(it.Value))
		fmt.Fprintf(tw, "\t\t-> %s\n", oneLine(it.Consequence))
	}
	return tw.Flush()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
