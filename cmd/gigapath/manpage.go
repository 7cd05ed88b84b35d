package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/urfave/cli/v2"
)

// The manual pages are rendered from the same cli.Command tree that --help
// prints, so they cannot drift from it. urfave/cli's own App.ToMan leaves
// out ArgsUsage and every command's Description (where the examples are),
// so the roff is written here: gigapath(8) for the program and its global
// options, and gigapath-CMD(8) per command, as iproute2 has ip(8) and
// ip-mptcp(8).

func init() {
	register(&cli.Command{
		Name:      "man",
		Usage:     "write the manual pages gigapath(8) and gigapath-CMD(8) into DIR (for packaging)",
		ArgsUsage: "DIR",
		Hidden:    true,
		Description: `The date in the pages' header is SOURCE_DATE_EPOCH's when it is set
(reproducible builds), else today's. Example:
   gigapath man dist/man && man -l dist/man/gigapath-run.8`,
		Action: writeManPages,
	})
}

func writeManPages(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("man: want exactly one DIR, where the pages are written")
	}
	date := time.Now().UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return usageErrorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", s)
		}
		date = time.Unix(n, 0).UTC()
	}
	dir := c.Args().First()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, text := range manPages(c.App, date) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// manPages returns the pages by file name (gigapath.8, gigapath-run.8,
// ...): one for the program, one per visible command.
func manPages(app *cli.App, date time.Time) map[string]string {
	pages := map[string]string{}
	var cmds []*cli.Command
	for _, cmd := range app.Commands {
		if !cmd.Hidden {
			cmds = append(cmds, cmd)
		}
	}
	header := func(w *roff, name string) {
		w.line(".TH %s 8 %q %q \"System Manager's Manual\"", strings.ToUpper(name), date.Format("2006-01-02"), "gigapath "+app.Version)
		// Left-adjusted, unhyphenated: command lines keep their words.
		w.line(".ad l")
		w.line(".nh")
	}

	var w roff
	header(&w, "gigapath")
	w.section("NAME")
	w.text("gigapath - " + app.Usage)
	w.section("SYNOPSIS")
	w.line(`.B gigapath`)
	w.text("[GLOBAL OPTIONS] COMMAND [OPTIONS] [ARGUMENTS...]")
	w.section("DESCRIPTION")
	w.verbatim(app.Description)
	w.section("GLOBAL OPTIONS")
	w.flags(app.VisibleFlags())
	w.section("COMMANDS")
	w.line(".PP")
	w.text("Each command has a page of its own:")
	for _, cmd := range cmds {
		w.line(".TP")
		w.line(`.BR gigapath\-%s (8)`, escape(cmd.Name))
		w.text(cmd.Usage)
	}
	w.section("EXIT STATUS")
	w.text("0 on success; 1 on a runtime error (the kernel's refusal included, with its message); " +
		"2 on bad input (an unknown command, flag or value, or an invalid policy).")
	w.section("FILES")
	w.line(".TP")
	w.line(`.I /etc/gigapath/gigapath.yaml`)
	w.text("the daemon's policy (gigapath config example prints every key; gigapath config check validates it)")
	w.line(".TP")
	w.line(`.I %s`, escape(policy.DefaultStatusSocket))
	w.text("the running daemon's status socket (gigapath status)")
	w.section("SEE ALSO")
	var refs []string
	for _, cmd := range cmds {
		refs = append(refs, `.BR gigapath\-`+escape(cmd.Name)+" (8)")
	}
	refs = append(refs, ".BR ip\\-mptcp (8)", ".BR systemctl (1)")
	w.line("%s", strings.Join(refs, " ,\n"))
	pages["gigapath.8"] = w.String()

	for _, cmd := range cmds {
		var w roff
		header(&w, "gigapath-"+cmd.Name)
		w.section("NAME")
		w.text("gigapath-" + cmd.Name + " - " + cmd.Usage)
		w.section("SYNOPSIS")
		w.synopsis("gigapath", cmd)
		if cmd.Description != "" {
			w.section("DESCRIPTION")
			w.verbatim(cmd.Description)
		}
		if fl := cmd.VisibleFlags(); len(fl) > 0 && !onlyHelp(fl) {
			w.section("OPTIONS")
			w.flags(fl)
		}
		if subs := visibleSubcommands(cmd); len(subs) > 0 {
			w.section("COMMANDS")
			for _, s := range subs {
				w.command("gigapath "+cmd.Name, s)
			}
		}
		w.section("GLOBAL OPTIONS")
		w.text("Given before or after the command:")
		w.flags(app.VisibleFlags())
		w.section("SEE ALSO")
		w.line(".BR gigapath (8)")
		pages["gigapath-"+cmd.Name+".8"] = w.String()
	}
	return pages
}

func visibleSubcommands(cmd *cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, s := range cmd.Subcommands {
		if !s.Hidden && s.Name != "help" {
			out = append(out, s)
		}
	}
	return out
}

// onlyHelp reports whether the flags are just the --help urfave/cli adds.
func onlyHelp(fl []cli.Flag) bool {
	for _, f := range fl {
		if f != cli.HelpFlag {
			return false
		}
	}
	return true
}

// roff accumulates a man page.
type roff struct{ strings.Builder }

func (w *roff) line(format string, args ...any) {
	fmt.Fprintf(w, format+"\n", args...)
}

func (w *roff) section(name string) { w.line(".SH %s", name) }

// text writes filled prose.
func (w *roff) text(s string) {
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		w.line("%s", lineStart(escape(strings.TrimSpace(l))))
	}
}

// verbatim writes a Description unfilled, as --help shows it (the
// examples keep their layout). Its lines after the first are indented by
// three spaces in the source, to line up under --help's indented first
// line; the page has its own indent.
func (w *roff) verbatim(s string) {
	w.line(".PP")
	w.line(".nf")
	for i, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if i > 0 {
			l = strings.TrimPrefix(l, "   ")
		}
		w.line("%s", lineStart(escape(l)))
	}
	w.line(".fi")
}

// flags writes one tagged paragraph per flag, in --help's words.
func (w *roff) flags(fl []cli.Flag) {
	for _, f := range fl {
		tag, desc, _ := strings.Cut(cli.FlagStringer(f), "\t")
		w.line(".TP")
		w.line(`\fB%s\fR`, escape(tag))
		w.text(desc)
	}
}

// synopsis writes the command lines of cmd: its own, or one per leaf
// subcommand.
func (w *roff) synopsis(prefix string, cmd *cli.Command) {
	name := prefix + " " + cmd.Name
	subs := visibleSubcommands(cmd)
	if len(subs) == 0 {
		opts := ""
		if fl := cmd.VisibleFlags(); len(fl) > 0 && !onlyHelp(fl) {
			opts = " [OPTIONS]"
		}
		w.line(".PP")
		w.line(`\fB%s\fR%s %s`, escape(name), escape(opts), escape(cmd.ArgsUsage))
		return
	}
	for _, s := range subs {
		w.synopsis(name, s)
	}
}

// command writes a subcommand (and its own subcommands) as a subsection.
func (w *roff) command(prefix string, cmd *cli.Command) {
	name := prefix + " " + strings.Join(cmd.Names(), ", ")
	w.line(`.SS "%s"`, strings.TrimSpace(escape(name+" "+cmd.ArgsUsage)))
	w.text(cmd.Usage)
	if cmd.Description != "" {
		w.verbatim(cmd.Description)
	}
	if fl := cmd.VisibleFlags(); len(fl) > 0 && !onlyHelp(fl) {
		w.line(".PP")
		w.text("Options:")
		w.flags(fl)
	}
	for _, s := range visibleSubcommands(cmd) {
		w.command(prefix+" "+cmd.Name, s)
	}
}

// escape makes s literal roff text: backslashes printed, hyphens as
// hyphen-minus (option names must be typeable from the page).
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// lineStart keeps a line that starts with a control character ('.' or
// '\”) from being read as a request.
func lineStart(s string) string {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		return `\&` + s
	}
	return s
}
