package main

import (
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/pathmgr"
)

func init() {
	register(pmCommand(&cli.Command{
		Name:  "limits",
		Usage: "in-kernel path manager limits (like ip mptcp limits)",
		Description: `Per network namespace: how many extra subflows a connection may have
   (subflow) and how many of the peer's ADD_ADDR announcements it acts on
   (add_addr_accepted). Both are 0..8 on current kernels.
   gigapath limits show
   gigapath -j limits show
   gigapath --netns cli limits set subflow 4 add_addr_accepted 4`,
		Subcommands: []*cli.Command{
			{
				Name:  "show",
				Usage: "print the limits",
				Description: `Examples:
   gigapath limits show      (add_addr_accepted 0 subflows 2)
   gigapath limits show -j   ({"subflows":2,"add_addr_accepted":0})`,
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print JSON"}},
				Action: limitsShow,
			},
			{
				Name:      "set",
				Usage:     "set one or both limits; the one not given is kept",
				ArgsUsage: "[subflow N] [add_addr_accepted N]",
				Description: `Examples:
   gigapath limits set subflow 4
   gigapath limits set subflow 4 add_addr_accepted 4`,
				Action: limitsSet,
			},
		},
	}, "show"))
}

func limitsShow(c *cli.Context) error {
	p := newPMArgs("limits show", c.Args().Slice())
	if p.more() {
		return p.unknown(p.next(), "no arguments")
	}
	pm, err := pmDial(c)
	if err != nil {
		return err
	}
	defer pm.Close()
	l, err := pm.Limits()
	if err != nil {
		return err
	}
	if p.json || jsonOutput(c) {
		return printJSON(l)
	}
	fmt.Printf("add_addr_accepted %d subflows %d\n", l.AddAddrAccepted, l.Subflows)
	return nil
}

// parseLimitsSet parses `limits set [subflow N] [add_addr_accepted N]`.
func parseLimitsSet(args []string) (pathmgr.LimitsUpdate, error) {
	p := newPMArgs("limits set", args)
	var u pathmgr.LimitsUpdate
	for p.more() {
		tok := p.next()
		var dst **uint32
		switch tok {
		case "subflow", "subflows":
			dst = &u.Subflows
		case "add_addr_accepted":
			dst = &u.AddAddrAccepted
		default:
			return u, p.unknown(tok, "subflow N, add_addr_accepted N")
		}
		v, err := p.value(tok, fmt.Sprintf("0..%d", pathmgr.MaxLimit))
		if err != nil {
			return u, err
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n > pathmgr.MaxLimit {
			return u, usageErrorf("limits set: %s %q: want 0..%d", tok, v, pathmgr.MaxLimit)
		}
		n32 := uint32(n)
		*dst = &n32
	}
	if u.Subflows == nil && u.AddAddrAccepted == nil {
		return u, usageErrorf("limits set: nothing to set: gigapath limits set [subflow N] [add_addr_accepted N]")
	}
	return u, nil
}

func limitsSet(c *cli.Context) error {
	u, err := parseLimitsSet(c.Args().Slice())
	if err != nil {
		return err
	}
	return withPM(c, func(pm *pathmgr.Client) error { return pm.SetLimits(u) })
}
