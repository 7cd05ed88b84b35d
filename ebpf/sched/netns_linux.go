//go:build linux

package sched

import (
	"os"

	"golang.org/x/sys/unix"
)

// setnsNet moves the calling thread into the network namespace f.
func setnsNet(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }
