//go:build !linux

package controller

import (
	"fmt"
	"runtime"
)

func setPathManager(netns, value, was string) (func() error, string, error) {
	return nil, "", fmt.Errorf("set net.mptcp.path_manager=%s: not supported on %s", value, runtime.GOOS)
}
