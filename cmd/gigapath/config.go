package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/rtcreate"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "config",
		Usage: "check a policy file, compare two, or print the reference policy",
		Subcommands: []*cli.Command{
			{
				Name:      "check",
				Usage:     "validate a policy file without running (exit 0: valid, 2: invalid)",
				ArgsUsage: "FILE",
				Action:    configCheck,
			},
			{
				Name:      "diff",
				Usage:     "show what reloading from OLD to NEW would change (both are checked first)",
				ArgsUsage: "OLD NEW",
				Action:    configDiff,
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
	p, err := loadForCLI(file)
	if err != nil {
		return err
	}
	if err := buildRefuses(file, p); err != nil {
		return err
	}
	notes := append(p.Notes(), buildNotes(p)...)
	if jsonOutput(c) {
		return printJSON(struct {
			OK     bool           `json:"ok"`
			File   string         `json:"file"`
			Policy *policy.Policy `json:"policy"`
			Notes  []string       `json:"notes"`
		}{true, file, p, notes})
	}
	fmt.Printf("ok: %s: %s\n", file, p.Summary())
	for _, n := range notes {
		fmt.Printf("note: %s\n", n)
	}
	return nil
}

// buildRefuses is what this build of gigapath cannot do of p (bad input,
// exit 2): the real-time create thread is C, absent from a build without
// cgo (the .deb is built with it).
func buildRefuses(file string, p *policy.Policy) error {
	if p.Creates.Thread == policy.CreatesRealtime && !rtcreate.Supported {
		return usageErrorf("%s: creates.thread: realtime needs a gigapath built with cgo (CGO_ENABLED=1 and a C compiler); this one was built without: use creates.thread: auto (the event reader in this build) or reader, or remove the key", file)
	}
	return nil
}

// buildNotes is what this build does of p otherwise than p's reader may
// expect: without cgo, creates.thread: auto is the event reader.
func buildNotes(p *policy.Policy) []string {
	if p.Threaded() && p.Creates.Thread == policy.CreatesAuto && !rtcreate.Supported {
		return []string{"creates.thread: auto: this gigapath was built without cgo and has no real-time create thread: the event reader sends new connections' creates, which under a burst get their second path later (docs/benchmarks.md, \"burst\")"}
	}
	return nil
}

// loadForCLI loads a policy; a bad or missing file is bad input (exit 2).
func loadForCLI(file string) (*policy.Policy, error) {
	p, err := policy.Load(file)
	if err != nil {
		var es policy.Errors
		if errors.As(err, &es) || errors.Is(err, fs.ErrNotExist) {
			return nil, usageErrorf("%v", err)
		}
		return nil, err
	}
	return p, nil
}

func configDiff(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf("config diff: want OLD and NEW, two policy files")
	}
	old, err := loadForCLI(c.Args().Get(0))
	if err != nil {
		return err
	}
	nw, err := loadForCLI(c.Args().Get(1))
	if err != nil {
		return err
	}
	lines := policy.Describe(old, nw)
	if jsonOutput(c) {
		if lines == nil {
			lines = []string{}
		}
		return printJSON(struct {
			Changes []string `json:"changes"`
		}{lines})
	}
	if len(lines) == 0 {
		fmt.Println("no change")
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}

func configExample(c *cli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf("config example: takes no arguments")
	}
	fmt.Print(policy.Example())
	return nil
}
