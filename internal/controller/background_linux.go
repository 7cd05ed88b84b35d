package controller

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// backgroundNice is how much nicer than the rest of the daemon the threads
// of its background readers run (the inventory reader's sock_diag dumps,
// the health sampler's telemetry reads): their system calls take tens to
// hundreds of milliseconds of kernel CPU at 50,000 connections, and at the
// daemon's own priority they take turns with the event loop's thread on a
// busy host, which then waits a scheduler tick in the middle of a 1 ms
// slice. Ten nice levels is a weight of about a tenth of the loop's.
const backgroundNice = 10

// background lowers the priority of the calling goroutine's thread by
// backgroundNice (to 19 at most) and locks the goroutine to it, so that no
// other goroutine (the event loop's) runs there meanwhile; the goroutine
// calls restore when it ends. restore gives the thread its priority back
// and unlocks it; a thread that cannot have it back (raising a priority
// needs CAP_SYS_NICE) stays locked, and the Go runtime ends it with the
// goroutine instead of handing it to another. Best effort: where the
// priority cannot be read or set, the goroutine runs as before.
func background() (restore func()) {
	runtime.LockOSThread()
	tid := unix.Gettid()
	p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return runtime.UnlockOSThread
	}
	nice := 20 - p // the raw system call returns 20 - nice
	if unix.Setpriority(unix.PRIO_PROCESS, tid, min(nice+backgroundNice, 19)) != nil {
		return runtime.UnlockOSThread
	}
	return func() {
		if unix.Setpriority(unix.PRIO_PROCESS, tid, nice) == nil {
			runtime.UnlockOSThread()
		}
	}
}
