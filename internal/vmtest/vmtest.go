// Package vmtest turns the output of .ci/vmtest-guest (gigapath check and
// the integration tests, run inside a virtme-ng guest or on the host) into
// one Result per kernel, and renders the feature × kernel matrix of
// docs/kernels.md from those results.
package vmtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/gigapath/gigapath/internal/kcheck"
)

// Result is what one kernel run produced.
type Result struct {
	// Series is how the kernel was asked for: "host", "6.1", "6.12", "7",
	// or "sched" (the kernel `make sched-kernel` builds).
	Series string `json:"series"`
	// Kernel is the guest's uname -r.
	Kernel string `json:"kernel"`
	// Seconds is the wall time of the whole run (boot included).
	Seconds int `json:"seconds"`
	// Exit is the run's exit status as vng (or the guest script) gave it.
	Exit int `json:"exit"`
	// Complete is true when the guest script reached its end marker.
	Complete bool          `json:"complete"`
	Check    []kcheck.Item `json:"check"`
	Packages []Package     `json:"packages"`
}

// Package is one test binary's run.
type Package struct {
	Path    string `json:"path"`
	Exit    int    `json:"exit"`
	Seconds int    `json:"seconds"`
	Tests   []Test `json:"tests"`
}

// Test is one top-level test's outcome.
type Test struct {
	Name   string `json:"name"`
	Status string `json:"status"` // PASS, FAIL, SKIP
	// Reason is the skip message (or the first failure line).
	Reason string `json:"reason,omitempty"`
}

var (
	reTestStart = regexp.MustCompile(`^=== (?:RUN|CONT|NAME)\s+(\S+)`)
	reTestEnd   = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(`)
	reKV        = regexp.MustCompile(`(\w+)=(-?\d+)`)
	reLocation  = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)
)

// Parse reads a vmtest-guest log. Lines outside markers (boot noise) are
// ignored.
func Parse(r io.Reader) (Result, error) {
	var res Result
	var checkJSON strings.Builder
	inCheck := false
	var pkg *Package
	// go test -v prints a test's messages after "=== RUN/CONT/NAME name"
	// and before its "--- STATUS: name" line; keep them per test.
	current := ""
	msgs := map[string][]string{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := strings.TrimRight(s.Text(), "\r")
		if rest, ok := strings.CutPrefix(line, "@@vmtest "); ok {
			word, arg, _ := strings.Cut(rest, " ")
			switch word {
			case "kernel":
				res.Kernel = arg
			case "check-begin":
				inCheck = true
			case "check-end":
				inCheck = false
			case "test-begin":
				res.Packages = append(res.Packages, Package{Path: arg, Exit: -1})
				pkg = &res.Packages[len(res.Packages)-1]
				current, msgs = "", map[string][]string{}
			case "test-end":
				if pkg != nil {
					kv := keyValues(arg)
					pkg.Exit, pkg.Seconds = kv["exit"], kv["seconds"]
				}
				pkg = nil
			case "done":
				res.Complete = true
			}
			continue
		}
		if inCheck {
			checkJSON.WriteString(line)
			checkJSON.WriteByte('\n')
			continue
		}
		if pkg == nil {
			continue
		}
		if m := reTestStart.FindStringSubmatch(line); m != nil {
			current = m[1]
			continue
		}
		if m := reTestEnd.FindStringSubmatch(line); m != nil {
			if strings.Contains(m[2], "/") {
				continue // a subtest: counted through its parent
			}
			t := Test{Name: m[2], Status: m[1]}
			if ms := msgs[m[2]]; len(ms) > 0 {
				switch t.Status {
				case "SKIP":
					t.Reason = ms[len(ms)-1] // t.Skip's message comes last
				case "FAIL":
					t.Reason = ms[0] // the first error
				}
			}
			pkg.Tests = append(pkg.Tests, t)
			continue
		}
		if m := reLocation.FindStringSubmatch(line); m != nil && current != "" {
			msgs[current] = append(msgs[current], strings.TrimSpace(m[1]))
		}
	}
	if err := s.Err(); err != nil {
		return res, err
	}
	if strings.TrimSpace(checkJSON.String()) != "" {
		if err := json.Unmarshal([]byte(checkJSON.String()), &res.Check); err != nil {
			return res, fmt.Errorf("gigapath check -j output: %w", err)
		}
	}
	return res, nil
}

func keyValues(s string) map[string]int {
	kv := map[string]int{}
	for _, m := range reKV.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(m[2])
		kv[m[1]] = n
	}
	return kv
}

// Counts returns how many top-level tests passed, failed and were skipped.
func (r Result) Counts() (pass, fail, skip int) {
	for _, p := range r.Packages {
		for _, t := range p.Tests {
			switch t.Status {
			case "PASS":
				pass++
			case "FAIL":
				fail++
			case "SKIP":
				skip++
			}
		}
	}
	return
}

// seriesOrder puts the host first, then kernels by version, then the
// scheduler kernel (`make sched-kernel`).
func seriesOrder(results []Result) {
	key := func(r Result) []int {
		switch r.Series {
		case "host":
			return []int{-1}
		case "sched":
			return []int{1 << 30}
		}
		var v []int
		for _, f := range strings.Split(r.Series, ".") {
			n, _ := strconv.Atoi(f)
			v = append(v, n)
		}
		return v
	}
	sort.SliceStable(results, func(i, j int) bool {
		a, b := key(results[i]), key(results[j])
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] < b[k]
			}
		}
		return len(a) < len(b)
	})
}

// short cuts a check value to fit a table cell: up to the first "; ", the
// first ": " after a dozen characters and outside parentheses (the detail
// after it is in the JSON),
// and at most max runes.
func short(v string, max int) string {
	if i := strings.Index(v, "; "); i > 0 {
		v = v[:i]
	}
	if i := strings.Index(v, ": "); i >= 12 && strings.Count(v[:i], "(") == strings.Count(v[:i], ")") {
		v = v[:i]
	}
	v = strings.ReplaceAll(v, "|", "/")
	if r := []rune(v); len(r) > max {
		v = string(r[:max-1]) + "…"
	}
	return v
}

// Render writes the markdown matrix: one row per check item, one column
// per kernel, then the test outcomes and timings.
func Render(w io.Writer, results []Result) {
	seriesOrder(results)
	col := func(r Result) string {
		switch r.Series {
		case "host":
			return "host " + r.Kernel
		case "sched":
			return r.Kernel + " (sched-kernel)"
		}
		return r.Kernel
	}
	fmt.Fprint(w, "| feature |")
	for _, r := range results {
		fmt.Fprintf(w, " %s |", col(r))
	}
	fmt.Fprint(w, "\n|---|")
	for range results {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	for _, name := range kcheck.Names {
		if name == "kernel" {
			continue
		}
		fmt.Fprintf(w, "| `%s` |", name)
		for _, r := range results {
			cell := "not run"
			for _, it := range r.Check {
				if it.Name == name {
					mark := "✗"
					if it.OK {
						mark = "✓"
					}
					cell = mark + " " + short(it.Value, 60)
					if name == "pm_commands" && it.OK {
						cell = fmt.Sprintf("%s all %d", mark, len(strings.Fields(it.Value)))
					}
				}
			}
			fmt.Fprintf(w, " %s |", cell)
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "| tests |"+strings.Repeat(" |", len(results)))
	fmt.Fprint(w, "|---|")
	for range results {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	row := func(label string, f func(Result) string) {
		fmt.Fprintf(w, "| %s |", label)
		for _, r := range results {
			fmt.Fprintf(w, " %s |", f(r))
		}
		fmt.Fprintln(w)
	}
	row("kernel", func(r Result) string { return col(r) })
	row("passed / failed / skipped", func(r Result) string {
		p, f, s := r.Counts()
		return fmt.Sprintf("%d / %d / %d", p, f, s)
	})
	row("wall time (boot + tests)", func(r Result) string {
		if r.Series == "host" {
			return fmt.Sprintf("%d s (no VM)", r.Seconds)
		}
		return fmt.Sprintf("%d s", r.Seconds)
	})
	pkgs := map[string]bool{}
	var order []string
	for _, r := range results {
		for _, p := range r.Packages {
			if !pkgs[p.Path] {
				pkgs[p.Path] = true
				order = append(order, p.Path)
			}
		}
	}
	for _, path := range order {
		row("`"+path+"`", func(r Result) string {
			var parts []string
			for _, p := range r.Packages {
				if p.Path != path {
					continue
				}
				var pass, fail, skip int
				for _, t := range p.Tests {
					switch t.Status {
					case "PASS":
						pass++
					case "FAIL":
						fail++
					case "SKIP":
						skip++
					}
				}
				s := fmt.Sprintf("%d✓ %d✗ %d skip, %d s", pass, fail, skip, p.Seconds)
				if p.Exit != 0 {
					s += fmt.Sprintf(" (exit %d)", p.Exit)
				}
				parts = append(parts, s)
			}
			if len(parts) == 0 {
				return "not run"
			}
			return strings.Join(parts, "; ")
		})
	}
	row("completed", func(r Result) string {
		if r.Complete && r.Exit == 0 {
			return "yes"
		}
		return fmt.Sprintf("no (exit %d)", r.Exit)
	})

	fmt.Fprintln(w)
	fmt.Fprintln(w, "Skipped and failed tests, with the reason each gave:")
	fmt.Fprintln(w)
	any := false
	for _, r := range results {
		for _, p := range r.Packages {
			for _, t := range p.Tests {
				if t.Status == "PASS" {
					continue
				}
				any = true
				reason := t.Reason
				if reason == "" {
					reason = "(no message)"
				}
				fmt.Fprintf(w, "- %s, `%s` %s %s: %s\n", col(r), p.Path, t.Name, strings.ToLower(t.Status), reason)
			}
		}
	}
	if !any {
		fmt.Fprintln(w, "- none")
	}
}

// Splice replaces the text between the begin and end marker lines of doc
// with body; doc without the markers gets them appended.
func Splice(doc, body string) string {
	const begin, end = "<!-- vmmatrix:begin -->", "<!-- vmmatrix:end -->"
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	block := begin + "\n" + body + end
	if i < 0 || j < i {
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		return doc + "\n" + block + "\n"
	}
	return doc[:i] + block + doc[j+len(end):]
}
