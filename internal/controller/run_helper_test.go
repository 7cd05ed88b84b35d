//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/gigapath/gigapath/internal/controller"
)

// runController starts a controller with cfg (a debug log to the test log
// when cfg.Logger is nil), waits until it is ready and returns it with a
// stop function: stop (also run at cleanup, once) cancels Run, waits for it
// and fails the test if Run returned an error.
func runController(t testing.TB, cfg controller.Config) (*controller.Controller, func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctl, err := controller.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-ctl.Ready():
	case err := <-done:
		once.Do(func() {}) // Run is over: nothing to stop
		cancel()
		t.Fatalf("controller: %v", err)
	}
	return ctl, stop
}

// TestMain gives the daemons the tests start as processes a state
// directory of the test run's own ($GIGAPATH_STATE_DIR, the default of
// --state-dir), removed at the end, instead of /run/gigapath.
func TestMain(m *testing.M) {
	if spec := os.Getenv(burstHelperEnv); spec != "" {
		os.Exit(burstHelper(spec)) // BenchmarkBurst's load generator
	}
	if spec := os.Getenv(floorHelperEnv); spec != "" {
		os.Exit(floorHelper(spec)) // BenchmarkBurst's floor
	}
	if spec := os.Getenv(loadHelperEnv); spec != "" {
		os.Exit(loadHelper(spec)) // BenchmarkBurst's load beside the floor
	}
	dir, err := os.MkdirTemp("", "gigapath-state-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("GIGAPATH_STATE_DIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
