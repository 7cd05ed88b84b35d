package main

import (
	"encoding/json"
	"os"

	"github.com/urfave/cli/v2"
)

// jsonOutput reports whether -j/--json was given, before or after the
// subcommand.
func jsonOutput(c *cli.Context) bool {
	for _, l := range c.Lineage() {
		if l.Bool("json") {
			return true
		}
	}
	return false
}

// netnsName returns the --netns value given anywhere on the command line.
func netnsName(c *cli.Context) string {
	for _, l := range c.Lineage() {
		if s := l.String("netns"); s != "" {
			return s
		}
	}
	return ""
}

// printJSON writes v as indented JSON followed by a newline.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
