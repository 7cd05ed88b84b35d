package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/pathmgr"
)

func init() {
	register(&cli.Command{
		Name:  "conn",
		Usage: "live MPTCP connections and their subflows (sock_diag, like ss -M)",
		Description: `Lists the MPTCP connections of a network namespace with their token, the
   addresses of the connection, and every subflow: addresses, interface,
   MPTCP ids, backup flags, RTT and byte counters. Needs CAP_NET_ADMIN to
   see tokens (and so to match subflows to connections).
   gigapath conn list
   gigapath --netns cli conn list -j
   gigapath conn list --listeners`,
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list MPTCP connections and their subflows",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print a JSON array"},
					&cli.BoolFlag{Name: "listeners", Aliases: []string{"l"}, Usage: "include listening MPTCP sockets"},
				},
				Action: connList,
			},
		},
	})
}

func connList(c *cli.Context) error {
	if c.Args().Present() {
		return usageErrorf("conn list: unexpected argument %q (valid: -j, --listeners)", c.Args().First())
	}
	conns, err := pathmgr.Connections(&pathmgr.Config{NetNS: netnsName(c)}, pathmgr.ListOptions{ListenersToo: c.Bool("listeners")})
	if err != nil {
		return err
	}
	if jsonOutput(c) {
		return printJSON(conns)
	}
	writeConns(os.Stdout, conns)
	return nil
}

// writeConns prints one line per connection and an indented line per
// subflow, in the spirit of ss -M.
func writeConns(w io.Writer, conns []pathmgr.Connection) {
	for _, cn := range conns {
		fmt.Fprintf(w, "token %d %s %s -> %s", cn.Token, cn.State, cn.Local, cn.Remote)
		if cn.Info != nil && cn.State.String() != "listen" {
			fmt.Fprintf(w, " subflows %d/%d", cn.Info.Subflows, cn.Info.SubflowsMax)
			if cn.Info.Fallback() {
				fmt.Fprint(w, " fallback")
			}
		}
		fmt.Fprintln(w)
		for _, s := range cn.Subflows {
			var flags []string
			if s.Backup {
				flags = append(flags, "backup")
			}
			if s.BackupRemote {
				flags = append(flags, "backup_remote")
			}
			if s.Join() {
				flags = append(flags, "join")
			}
			dev := s.IfName
			if dev == "" {
				dev = "?"
			}
			fmt.Fprintf(w, "    %s -> %s dev %s locid %d remid %d %s rtt %.3fms retrans %d acked %d received %d rcv_rtt %.3fms rcv_ooopack %d",
				s.Local, s.Remote, dev, s.LocalID, s.RemoteID, s.State,
				float64(s.RTT.Microseconds())/1000, s.Retrans, s.BytesAcked, s.BytesReceived,
				float64(s.RcvRTT.Microseconds())/1000, s.RcvOOOPack)
			if len(flags) > 0 {
				fmt.Fprintf(w, " %s", strings.Join(flags, " "))
			}
			fmt.Fprintln(w)
		}
	}
}
