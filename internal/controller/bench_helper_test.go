//go:build linux

package controller_test

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// benchController runs the daemon in-process (quiet) for a benchmark.
func benchController(b *testing.B, bed *testbed.Bed) func() {
	p, err := policy.Parse([]byte(fmt.Sprintf(basePolicy, "aggregate", "")))
	if err != nil {
		b.Fatal(err)
	}
	p.Log.Level = "warn"
	_, stop := runController(b, controller.Config{Policy: p, NetNS: bed.Client.Name,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return stop
}
