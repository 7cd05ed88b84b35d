package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/status"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "status",
		Usage: "show the running daemon's policy, interfaces and connections",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Value: policy.DefaultStatusSocket, Usage: "the daemon's status socket `PATH`"},
		},
		Action: showStatus,
	})
}

func showStatus(c *cli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf("status: no arguments expected, got %q", c.Args().Slice())
	}
	ctx, cancel := context.WithTimeout(c.Context, 5*time.Second)
	defer cancel()
	s, err := status.Query(ctx, c.String("socket"))
	if err != nil {
		return err
	}
	if jsonOutput(c) {
		return printJSON(s)
	}
	if s.Version != "" {
		fmt.Printf("gigapath %s, pid %d, up %s\n", s.Version, s.PID, s.Time.Sub(s.Started).Round(time.Second))
	}
	fmt.Printf("policy: %s\n", s.Summary)
	if s.NetNS != "" {
		fmt.Printf("netns: %s\n", s.NetNS)
	}
	if s.Creates != "" {
		fmt.Printf("creates: %s\n", s.Creates)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nINTERFACE\tROLE\tSTATE\tBACKUP\tHEALTH\tADDRESSES")
	for _, i := range s.Interfaces {
		st, h := "down", "ok"
		if i.Up {
			st = "up"
		}
		if !i.Healthy {
			h = "unhealthy"
		}
		if i.Primary {
			h += " primary"
		}
		var as []string
		for _, a := range i.Addrs {
			as = append(as, a.String())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\n", i.Name, i.Role, st, i.Backup, h, strings.Join(as, ","))
	}
	tw.Flush()
	fmt.Printf("\nconnections: %d\n", len(s.Connections))
	for _, k := range s.Connections {
		c := ""
		if k.NoJoinRemote {
			c = " (peer refuses joins to " + k.Remote.Addr().String() + ": C flag)"
		}
		fmt.Printf("token %08x %s -> %s%s\n", k.Token, k.Local, k.Remote, c)
		for _, a := range k.PeerAddrs {
			fmt.Printf("  peer address id %d %s\n", a.ID, a.Addr)
		}
		for _, f := range k.Subflows {
			b := ""
			if f.Backup {
				b = " backup"
			}
			fmt.Printf("  id %d %s -> %s dev %s%s\n", f.LocalID, f.Local, f.Remote, f.Interface, b)
		}
	}
	return nil
}
