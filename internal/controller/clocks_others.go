//go:build !linux

package controller

import "time"

func monotonicUsec() int64 { return 0 }

func threadUsage() (tid int, cpu time.Duration, preempted int64, ok bool) {
	return 0, 0, 0, false
}
