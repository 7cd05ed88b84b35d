//go:build linux

package pathmgr_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/gigapath/gigapath/pathmgr"
)

// Print the path manager's events of namespace "cli" until Ctrl-C, and
// resynchronise from the inventory when events were lost.
func ExampleListenEvents() {
	cfg := &pathmgr.Config{NetNS: "cli"}
	l, err := pathmgr.ListenEvents(cfg)
	if err != nil {
		log.Fatal(err) // errors.Is(err, os.ErrPermission): needs CAP_NET_ADMIN
	}
	defer l.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	for {
		evs, err := l.Receive(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, pathmgr.ErrEventsLost):
			conns, err := pathmgr.Connections(cfg, pathmgr.ListOptions{})
			if err != nil {
				log.Fatal(err)
			}
			fmt.Println("events lost; live connections:", len(conns))
			continue
		case err != nil:
			log.Fatal(err)
		}
		for _, e := range evs {
			fmt.Println(e) // [     ESTABLISHED] token=... saddr=... daddr=...
			if e.Type == pathmgr.EventSubEstablished {
				fmt.Println("new subflow", e.Local, "->", e.Remote, "ifindex", e.IfIndex)
			}
		}
	}
}

// List the MPTCP connections of namespace "cli" with their subflows.
func ExampleConnections() {
	conns, err := pathmgr.Connections(&pathmgr.Config{NetNS: "cli"}, pathmgr.ListOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range conns {
		fmt.Printf("token %d %v -> %v\n", c.Token, c.Local, c.Remote)
		for _, s := range c.Subflows {
			fmt.Printf("  %v dev %s id %d backup %v rtt %v acked %d\n",
				s.Local, s.IfName, s.LocalID, s.Backup, s.RTT, s.BytesAcked)
		}
	}
}
