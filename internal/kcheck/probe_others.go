//go:build !linux

package kcheck

import (
	"fmt"
	"runtime"
)

func run(Config) ([]Item, error) {
	return nil, fmt.Errorf("kcheck: probing kernel features needs Linux, not %s/%s", runtime.GOOS, runtime.GOARCH)
}
