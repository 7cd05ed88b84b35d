//go:build !linux

package relay

import (
	"fmt"
	"runtime"
	"syscall"
)

func congestionControl(name string) (func(network, address string, c syscall.RawConn) error, error) {
	return nil, fmt.Errorf("congestion %q: not supported on %s", name, runtime.GOOS)
}
