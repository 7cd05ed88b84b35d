// Command vmmatrix is the kernel matrix's bookkeeping for .ci/vmtest:
//
//	vmmatrix collect -log FILE -series S -seconds N -exit N -o FILE.json
//	vmmatrix render -dir docs/kernels -doc docs/kernels.md
//
// collect turns one vmtest-guest log into a JSON result; render rewrites
// the matrix section of the doc from every *.json in dir.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gigapath/gigapath/internal/vmtest"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vmmatrix collect|render [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "collect":
		err = collect(os.Args[2:])
	case "render":
		err = render(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "vmmatrix: unknown command %q (valid: collect, render)\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmmatrix: %v\n", err)
		os.Exit(1)
	}
}

func collect(args []string) error {
	fs := flag.NewFlagSet("collect", flag.ExitOnError)
	logf := fs.String("log", "", "vmtest-guest output")
	series := fs.String("series", "", "kernel series (host, 6.1, 6.12, 7)")
	secs := fs.Int("seconds", 0, "wall time of the run")
	exit := fs.Int("exit", 0, "exit status of the run")
	out := fs.String("o", "", "JSON file to write")
	fs.Parse(args)
	if *logf == "" || *series == "" || *out == "" {
		return fmt.Errorf("collect: -log, -series and -o are required")
	}
	f, err := os.Open(*logf)
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := vmtest.Parse(f)
	if err != nil {
		// Keep what was parsed: a crashed guest is a result too.
		fmt.Fprintf(os.Stderr, "vmmatrix: %s: %v\n", *logf, err)
	}
	res.Series, res.Seconds, res.Exit = *series, *secs, *exit
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

func render(args []string) error {
	fs := flag.NewFlagSet("render", flag.ExitOnError)
	dir := fs.String("dir", "docs/kernels", "directory of result JSONs")
	doc := fs.String("doc", "docs/kernels.md", "markdown file whose matrix section is rewritten")
	fs.Parse(args)
	files, err := filepath.Glob(filepath.Join(*dir, "*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("render: no results in %s", *dir)
	}
	var results []vmtest.Result
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var r vmtest.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		results = append(results, r)
	}
	var body bytes.Buffer
	vmtest.Render(&body, results)
	old, err := os.ReadFile(*doc)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(*doc, []byte(vmtest.Splice(string(old), body.String())), 0o644)
}
