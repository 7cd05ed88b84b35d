//go:build linux

package controller_test

import (
	"context"
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
	ctl, err := controller.New(controller.Config{Policy: p, NetNS: bed.Client.Name,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	select {
	case <-ctl.Ready():
	case err := <-done:
		b.Fatal(err)
	}
	return func() { cancel(); <-done }
}
