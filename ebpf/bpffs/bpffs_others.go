//go:build !linux

package bpffs

import (
	"fmt"
	"runtime"
)

var errOS = fmt.Errorf("bpffs: BPF file systems are not supported on %s/%s (Linux only)", runtime.GOOS, runtime.GOARCH)

// Ensure needs Linux; elsewhere it returns an error saying so.
func Ensure(dir string) (string, error) { return "", errOS }

// Mounted is false outside Linux.
func Mounted() bool { return false }
