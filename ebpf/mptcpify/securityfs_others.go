//go:build !linux

package mptcpify

import (
	"fmt"
	"runtime"
)

// mountSecurityfs needs Linux.
func mountSecurityfs(dir string) (unmount func(), err error) {
	return nil, fmt.Errorf("mptcpify: securityfs is not supported on %s/%s (Linux only)", runtime.GOOS, runtime.GOARCH)
}
