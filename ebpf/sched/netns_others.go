//go:build !linux

package sched

import (
	"fmt"
	"os"
	"runtime"
)

// setnsNet needs Linux.
func setnsNet(f *os.File) error {
	return fmt.Errorf("network namespaces are not supported on %s/%s (Linux only)", runtime.GOOS, runtime.GOARCH)
}
