package controller

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as sd_notify's
// MONOTONIC_USEC wants it with RELOADING=1.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1000
}

// threadUsage is the calling thread's id, CPU time so far
// (CLOCK_THREAD_CPUTIME_ID: up to date, where getrusage's is only as of
// the thread's last scheduler tick or switch) and involuntary context
// switches (times the kernel preempted it), for the loop's account of an
// input; ok false when they cannot be read.
func threadUsage() (tid int, cpu time.Duration, preempted int64, ok bool) {
	// The three calls must be on one thread: the goroutine could move
	// between two of them, and a thread id paired with another thread's
	// clock made a tick of a few milliseconds read as seconds of CPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var ts unix.Timespec
	var ru unix.Rusage
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil || unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0, 0, 0, false
	}
	return unix.Gettid(), time.Duration(ts.Nano()), ru.Nivcsw, true
}
