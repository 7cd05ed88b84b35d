//go:build !linux

package mptcpify

import (
	"fmt"
	"runtime"
)

var errNotLinux = fmt.Errorf("mptcpify needs Linux (not %s/%s)", runtime.GOOS, runtime.GOARCH)

func ownPIDScope() (mptcpifyPidScope, error) { return mptcpifyPidScope{}, errNotLinux }

func startTicks(int) (uint64, error) { return 0, errNotLinux }

func inOurPIDNS(int) error { return errNotLinux }
