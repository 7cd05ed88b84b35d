//go:build !linux

package relay

import (
	"fmt"
	"runtime"
)

func setReusePort(uintptr) error {
	return fmt.Errorf("not supported on %s", runtime.GOOS)
}
