package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// The manual pages carry every visible command with its usage, arguments
// and description, and every flag, as --help has them; man(1) renders each
// page (groff) without a warning. The text is read back from man's own
// rendering, so roff escapes that would swallow words fail here.
func TestManPages(t *testing.T) {
	if _, err := exec.LookPath("man"); err != nil {
		t.Fatal("man not found: .ci/install-deps installs man-db")
	}
	dir := t.TempDir()
	if code, _, stderr := gp(t, "man", dir); code != 0 {
		t.Fatalf("gigapath man: exit %d: %s", code, stderr)
	}
	app := newApp()
	want := []string{"gigapath.8"}
	for _, c := range app.Commands {
		if !c.Hidden {
			want = append(want, "gigapath-"+c.Name+".8")
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("pages %v, want %v", got, want)
	}

	rendered := map[string]string{}
	render := func(page string) string {
		if s, ok := rendered[page]; ok {
			return s
		}
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", filepath.Join(dir, page))
		cmd.Env = append(os.Environ(), "MANWIDTH=400", "LC_ALL=C.UTF-8")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v\n%s", page, err, stderr.String())
		}
		// Lines are wide enough not to wrap; collapse the indentation.
		// groff's UTF-8 output prints \- as a minus sign.
		return strings.Join(strings.Fields(strings.ReplaceAll(string(out), "−", "-")), " ")
	}
	norm := func(s string) string { return strings.Join(strings.Fields(strings.ReplaceAll(s, "`", "")), " ") }
	has := func(page, text, what string) {
		t.Helper()
		if !strings.Contains(render(page), norm(text)) {
			t.Errorf("%s lacks %s %q", page, what, norm(text))
		}
	}
	flagsOf := func(page string, fl []cli.Flag) {
		t.Helper()
		for _, f := range fl {
			tag, usage, _ := strings.Cut(cli.FlagStringer(f), "\t")
			has(page, tag, "flag")
			has(page, usage, "flag usage")
		}
	}
	has("gigapath.8", app.Usage, "the program's usage")
	flagsOf("gigapath.8", app.VisibleFlags())
	var walk func(page string, c *cli.Command)
	walk = func(page string, c *cli.Command) {
		has(page, c.Usage, "usage of "+c.Name)
		has(page, c.ArgsUsage, "arguments of "+c.Name)
		for _, l := range strings.Split(c.Description, "\n") {
			has(page, l, "description line of "+c.Name)
		}
		flagsOf(page, c.VisibleFlags())
		for _, s := range c.Subcommands {
			if !s.Hidden && s.Name != "help" {
				walk(page, s)
			}
		}
	}
	for _, c := range app.Commands {
		if !c.Hidden {
			has("gigapath.8", "gigapath-"+c.Name+"(8)", "a reference to")
			walk("gigapath-"+c.Name+".8", c)
		}
	}
}

// SOURCE_DATE_EPOCH fixes the pages' date: the package is reproducible.
func TestManPagesDate(t *testing.T) {
	pages := manPages(newApp(), time.Unix(86400*365, 0).UTC())
	if !strings.Contains(pages["gigapath.8"], `"1971-01-01"`) {
		t.Errorf("gigapath.8 header: %q", strings.SplitN(pages["gigapath.8"], "\n", 2)[0])
	}
	dir := t.TempDir()
	cmd := exec.Command(pmBinary(t), "man", dir)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=31536000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gigapath man: %v: %s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "gigapath.8"))
	if err != nil || !strings.Contains(string(b), `"1971-01-01"`) {
		t.Errorf("SOURCE_DATE_EPOCH=31536000: %v %q", err, strings.SplitN(string(b), "\n", 2)[0])
	}
	if code, _, _ := gp(t, "man"); code != 2 {
		t.Errorf("gigapath man without DIR: exit %d, want 2", code)
	}
}

// The bash completion script, loaded into bash, completes commands,
// subcommands and flags from the binary, and never runs a command.
func TestBashCompletion(t *testing.T) {
	bin := pmBinary(t)
	script := `source <("$GP" completion bash)
comp() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); _gigapath; echo "${COMPREPLY[*]}"; }
comp "$GP" end
comp "$GP" endpoint ''
comp "$GP" run --c
comp "$GP" -j conf
comp "$GP" config check ''
comp "$GP" run -c /nonexistent -- ''
echo end
`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "GP="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	want := []string{"endpoint", "add del delete change show flush", "--config --check", "config", "", "", "end"}
	if len(lines) != len(want) {
		t.Fatalf("bash printed %q, want %d lines %q", lines, len(want), want)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("completion %d: %q, want %q", i, lines[i], want[i])
		}
	}
	for _, sh := range []string{"zsh", "fish"} {
		if code, stdout, stderr := gp(t, "completion", sh); code != 0 || !strings.Contains(stdout, "gigapath") {
			t.Errorf("completion %s: exit %d %s", sh, code, stderr)
		}
	}
	if code, _, _ := gp(t, "completion", "tcsh"); code != 2 {
		t.Errorf("completion tcsh: exit %d, want 2", code)
	}
}
