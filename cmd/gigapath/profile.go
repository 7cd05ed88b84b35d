package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"sync"
	"time"
)

// Profiling `gigapath run` for benchmarks: GIGAPATH_PROFILE_DIR names a
// directory, GIGAPATH_PROFILE the kinds (a comma-separated list of cpu,
// heap and trace; default cpu,heap). The daemon then records a CPU profile
// and an execution trace of its whole life (cpu-PID-N.pprof,
// trace-PID-N.out) and a heap profile when it stops (heap-PID-N.pprof),
// for `go tool pprof` and `go tool trace`; N is the start time (Unix ms),
// since an upgrade in place keeps the PID. An upgrade finishes the files before its exec, and
// the new binary starts its own.
const (
	profileDirEnv   = "GIGAPATH_PROFILE_DIR"
	profileKindsEnv = "GIGAPATH_PROFILE"
)

// startProfiles starts the profiles the environment asks for; stop
// finishes them. Without GIGAPATH_PROFILE_DIR it does nothing.
func startProfiles() (stop func() error, err error) {
	dir := os.Getenv(profileDirEnv)
	if dir == "" {
		return func() error { return nil }, nil
	}
	kinds := []string{"cpu", "heap"}
	if k := os.Getenv(profileKindsEnv); k != "" {
		kinds = strings.Split(k, ",")
		for _, k := range kinds {
			if k != "cpu" && k != "heap" && k != "trace" {
				return nil, fmt.Errorf("%s=%q: %q is not a profile kind (valid: cpu, heap, trace)", profileKindsEnv, os.Getenv(profileKindsEnv), k)
			}
		}
	}
	pid := os.Getpid()
	start := time.Now().UnixMilli()
	name := func(kind, ext string) string {
		return filepath.Join(dir, fmt.Sprintf("%s-%d-%d.%s", kind, pid, start, ext))
	}
	var stops []func() error
	// Once: at an upgrade's exec and, if that fails, again at the end.
	var once sync.Once
	var stopErr error
	stopAll := func() error {
		once.Do(func() {
			var errs []error
			for i := len(stops) - 1; i >= 0; i-- {
				errs = append(errs, stops[i]())
			}
			stopErr = errors.Join(errs...)
		})
		return stopErr
	}
	if slices.Contains(kinds, "cpu") {
		f, err := os.Create(name("cpu", "pprof"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", profileDirEnv, err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: cpu profile: %w", profileDirEnv, err)
		}
		stops = append(stops, func() error { pprof.StopCPUProfile(); return f.Close() })
	}
	if slices.Contains(kinds, "trace") {
		f, err := os.Create(name("trace", "out"))
		if err == nil {
			if err = trace.Start(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			stopAll()
			return nil, fmt.Errorf("%s: execution trace: %w", profileDirEnv, err)
		}
		stops = append(stops, func() error { trace.Stop(); return f.Close() })
	}
	if slices.Contains(kinds, "heap") {
		stops = append(stops, func() error {
			f, err := os.Create(name("heap", "pprof"))
			if err != nil {
				return err
			}
			runtime.GC()
			return errors.Join(pprof.WriteHeapProfile(f), f.Close())
		})
	}
	return stopAll, nil
}
