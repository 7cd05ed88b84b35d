//go:build !linux

package cgroup

import (
	"fmt"
	"runtime"
)

var errOS = fmt.Errorf("cgroup v2 is not supported on %s/%s (Linux only)", runtime.GOOS, runtime.GOARCH)

func isCgroup2(string) (bool, error) { return false, errOS }

func inode(string) (uint64, error) { return 0, errOS }
