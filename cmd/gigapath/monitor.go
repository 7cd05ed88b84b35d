package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/pathmgr"
)

func init() {
	register(&cli.Command{
		Name:  "monitor",
		Usage: "print the MPTCP path manager's events as they happen (like ip mptcp monitor)",
		Description: `One line per event; with -j one JSON object per line, with "type"
   (created, established, closed, announced, removed, sub_established,
   sub_closed, sub_priority, listener_created, listener_closed) and the
   attributes the event carries (token, family, saddr, daddr, sport, dport,
   loc_id, rem_id, backup, if_idx, server_side, error, ...). When the kernel
   drops events because the reader was too slow, a warning line (JSON:
   {"type":"lost",...}) says so. Ctrl-C or SIGTERM ends it. Needs
   CAP_NET_ADMIN.
   gigapath monitor
   gigapath --netns cli monitor -j`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "one JSON object per line"},
		},
		Action: monitor,
	})
}

func monitor(c *cli.Context) error {
	if c.Args().Present() {
		return usageErrorf("monitor: unexpected argument %q (valid: -j)", c.Args().First())
	}
	l, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: netnsName(c)})
	if err != nil {
		return err
	}
	defer l.Close()
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runMonitor(ctx, l, os.Stdout, jsonOutput(c))
}

// eventSource is what runMonitor reads; *pathmgr.EventListener in use, a
// fake in tests.
type eventSource interface {
	Receive(ctx context.Context) ([]pathmgr.Event, error)
}

// runMonitor prints events until ctx is done (then it returns nil).
func runMonitor(ctx context.Context, src eventSource, w io.Writer, asJSON bool) error {
	enc := json.NewEncoder(w)
	for {
		evs, err := src.Receive(ctx)
		for _, e := range evs {
			if asJSON {
				if err := enc.Encode(e); err != nil {
					return err
				}
			} else if _, err := fmt.Fprintln(w, e); err != nil {
				return err
			}
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, pathmgr.ErrEventsLost):
			if asJSON {
				if err := enc.Encode(map[string]string{"type": "lost", "error": err.Error()}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(w, "[%16s] warning: %v; events were dropped, resynchronise with `gigapath conn list`\n", "LOST", err)
			}
		default:
			return err
		}
	}
}
