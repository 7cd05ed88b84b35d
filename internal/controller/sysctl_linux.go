package controller

import (
	"fmt"
	"os"
	"strings"

	"github.com/gigapath/gigapath/pathmgr/netns"
)

// The path manager is net.mptcp.path_manager ("kernel" | "userspace") since
// Linux 6.15 and net.mptcp.pm_type (0 | 1) before it.
const (
	pmSysctl     = "/proc/sys/net/mptcp/path_manager"
	pmTypeSysctl = "/proc/sys/net/mptcp/pm_type"
)

// setPathManager sets the namespace's path manager (ns "" = ours) and
// returns a restore function that puts the previous value back, or nil when
// nothing was changed, and that previous value. was is the value an earlier
// process of ours found before it changed the setting and then exec'd this
// one (upgrade in place): the setting is then already ours, and was is what
// to restore. A connection keeps the path manager it was created with, so
// restoring on exit leaves live connections alone and only gives new ones
// what the host had before the daemon started.
func setPathManager(ns, value, was string) (restore func() error, prev string, err error) {
	err = netns.Do(ns, func() error {
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
		return netns.Do(ns, func() error {
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

// joinsSysctl is the switch of the "C" flag (RFC 8684 §3.1): 0 makes the
// kernel set it on the MP_CAPABLE of every connection the namespace
// accepts (initial_address_joins: refuse).
const joinsSysctl = "/proc/sys/net/mptcp/allow_join_initial_addr_port"

// swapSysctl sets the sysctl file in namespace ns ("" = ours) to value
// and returns the value it found. With onlyIf set it writes only while
// the value is onlyIf (putting back our own change, not one someone made
// since).
func swapSysctl(ns, file, value, onlyIf string) (prev string, err error) {
	err = netns.Do(ns, func() error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		prev = strings.TrimSpace(string(b))
		if prev == value || (onlyIf != "" && prev != onlyIf) {
			return nil
		}
		return os.WriteFile(file, []byte(value), 0)
	})
	return prev, err
}
