package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "config",
		Usage: "check a policy file or print the reference policy",
		Subcommands: []*cli.Command{
			{
				Name:      "check",
				Usage:     "validate a policy file without running (exit 0: valid, 2: invalid)",
				ArgsUsage: "FILE",
				Action:    configCheck,
			},
			{
				Name:   "example",
				Usage:  "print a commented reference policy (every key, its default)",
				Action: configExample,
			},
		},
	})
}

func configCheck(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("config check: want exactly one FILE, the policy to check (e.g. /etc/gigapath/gigapath.yaml)")
	}
	file := c.Args().First()
	p, err := policy.Load(file)
	if err != nil {
		var es policy.Errors
		if errors.As(err, &es) || errors.Is(err, fs.ErrNotExist) {
			// A bad or missing policy is bad input: exit 2.
			return usageErrorf("%v", err)
		}
		return err
	}
	if jsonOutput(c) {
		return printJSON(struct {
			OK     bool           `json:"ok"`
			File   string         `json:"file"`
			Policy *policy.Policy `json:"policy"`
		}{true, file, p})
	}
	fmt.Printf("ok: %s: %s\n", file, p.Summary())
	return nil
}

func configExample(c *cli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf("config example: takes no arguments")
	}
	fmt.Print(policy.Example())
	return nil
}
