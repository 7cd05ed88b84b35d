package controller

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/pathmgr"
)

// The path manager is net.mptcp.path_manager ("kernel" | "userspace") since
// Linux 6.15 and net.mptcp.pm_type (0 | 1) before it.
const (
	pmSysctl     = "/proc/sys/net/mptcp/path_manager"
	pmTypeSysctl = "/proc/sys/net/mptcp/pm_type"
)

// setPathManager sets the namespace's path manager (netns "" = ours) and
// returns a restore function that puts the previous value back, or nil when
// nothing was changed, and that previous value. was is the value an earlier
// process of ours found before it changed the setting and then exec'd this
// one (upgrade in place): the setting is then already ours, and was is what
// to restore. A connection keeps the path manager it was created with, so
// restoring on exit leaves live connections alone and only gives new ones
// what the host had before the daemon started.
func setPathManager(netns, value, was string) (restore func() error, prev string, err error) {
	err = inNetNS(netns, func() error {
		var err error
		prev, err = swapPathManager(value)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("set net.mptcp.path_manager=%s: %w", value, err)
	}
	if prev == value && was != "" {
		prev = was
	}
	if prev == value {
		return nil, "", nil
	}
	return func() error {
		return inNetNS(netns, func() error {
			// Only undo our own change: leave a value someone set since.
			cur, err := readPathManager()
			if err != nil || cur != value {
				return err
			}
			_, err = swapPathManager(prev)
			return err
		})
	}, prev, nil
}

// readPathManager reads the current path manager as "kernel" or "userspace".
func readPathManager() (string, error) {
	if b, err := os.ReadFile(pmSysctl); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	b, err := os.ReadFile(pmTypeSysctl)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(string(b)) == "1" {
		return "userspace", nil
	}
	return "kernel", nil
}

// swapPathManager writes value and returns the value it replaced.
func swapPathManager(value string) (string, error) {
	prev, err := readPathManager()
	if err != nil {
		return "", err
	}
	if prev == value {
		return prev, nil
	}
	if _, err := os.Stat(pmSysctl); err == nil {
		return prev, os.WriteFile(pmSysctl, []byte(value), 0)
	}
	v := "0"
	if value == "userspace" {
		v = "1"
	}
	return prev, os.WriteFile(pmTypeSysctl, []byte(v), 0)
}

// inNetNS runs fn on a locked thread switched into the namespace (/proc/sys
// shows the namespace of the thread that opens the file); the thread is
// discarded afterwards. netns "" runs fn on a fresh thread of our own.
func inNetNS(netns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := pathmgr.OpenNetNS(netns)
		if err != nil {
			errc <- err
			return
		}
		if f != nil {
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				errc <- fmt.Errorf("enter network namespace %q: %w", netns, err)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}
