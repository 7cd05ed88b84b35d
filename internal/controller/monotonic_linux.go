package controller

import (
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

// threadUsage is the calling thread's id, CPU time so far (user +
// system) and involuntary context switches (times the kernel preempted
// it), for the loop's account of an input; ok false when they cannot be
// read.
func threadUsage() (tid int, cpu time.Duration, preempted int64, ok bool) {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0, 0, 0, false
	}
	return unix.Gettid(), time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nivcsw, true
}
