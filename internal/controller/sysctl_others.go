//go:build !linux

package controller

import (
	"fmt"
	"runtime"
)

func setPathManager(netns, value, was string) (func() error, string, error) {
	return nil, "", fmt.Errorf("set net.mptcp.path_manager=%s: not supported on %s", value, runtime.GOOS)
}

const joinsSysctl = "/proc/sys/net/mptcp/allow_join_initial_addr_port"

func swapSysctl(_, file, _, _ string) (string, error) {
	return "", fmt.Errorf("%s: not supported on %s", file, runtime.GOOS)
}
