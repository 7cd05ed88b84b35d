// Command gigapath is the MPTCP control plane: path-manager client, daemon,
// SOCKS5 relay and eBPF loader in one binary.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/gigapath/gigapath/internal/buildinfo"
	"github.com/urfave/cli/v2"
)

// commands is filled by register() from the init functions of the files of
// this package, one file per command group (endpoint.go, relay.go, ...), so
// that each group lives on its own and main stays small.
var commands []*cli.Command

func register(c *cli.Command) { commands = append(commands, c) }

func newApp() *cli.App {
	sort.Slice(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
	return &cli.App{
		Name:    "gigapath",
		Version: buildinfo.Version(),
		Usage:   "MPTCP control plane: path manager, daemon, SOCKS5 relay, eBPF",
		Description: `Commands follow iproute2's syntax. Examples:
   gigapath endpoint add 10.0.2.2 dev lte0 id 7 subflow backup
   gigapath -j endpoint show
   gigapath --netns cli limits set subflow 4 add_addr_accepted 4
   gigapath monitor -j
   gigapath check`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "netns", Aliases: []string{"n"}, Usage: "run in network namespace `NAME` (like ip -n)"},
			&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print JSON"},
		},
		Commands: commands,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				var names []string
				for _, cmd := range c.App.VisibleCommands() {
					names = append(names, cmd.Name)
				}
				return usageErrorf("unknown command %q; commands: %s (see gigapath --help)", c.Args().First(), strings.Join(names, ", "))
			}
			return cli.ShowAppHelp(c)
		},
		EnableBashCompletion:   true,
		UseShortOptionHandling: true,
		HideHelpCommand:        true,
		ExitErrHandler:         func(*cli.Context, error) {}, // main decides the exit code
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageErrorf("%v", err)
		},
	}
}

func main() {
	os.Exit(run(os.Args))
}

// run executes the CLI and maps errors to exit codes: 2 for usage errors,
// 1 for runtime errors (kernel refusals included), 0 on success.
func run(args []string) int {
	err := newApp().Run(args)
	if err == nil {
		return 0
	}
	fmt.Fprintf(os.Stderr, "gigapath: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}
