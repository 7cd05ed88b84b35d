//go:build !linux

package netns

import (
	"fmt"
	"os"
	"runtime"
)

var errNotLinux = fmt.Errorf("network namespaces are not supported on %s/%s (Linux only)", runtime.GOOS, runtime.GOARCH)

func setnsNet(*os.File) error { return errNotLinux }

func cookie() (uint64, error) { return 0, errNotLinux }
