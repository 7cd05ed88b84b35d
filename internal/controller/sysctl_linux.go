package controller

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// setPathManager sets net.mptcp.path_manager (or, on kernels before 6.15,
// net.mptcp.pm_type) in the namespace netns ("" = ours). /proc/sys/net
// shows the namespace of the thread that opens the file, so the write runs
// on a locked thread switched into the namespace, which is then discarded.
func setPathManager(netns, value string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if netns != "" {
			p := netns
			if !filepath.IsAbs(p) {
				p = filepath.Join("/run/netns", p)
			}
			f, err := os.Open(p)
			if err != nil {
				errc <- fmt.Errorf("network namespace %q: %w", netns, err)
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				errc <- fmt.Errorf("enter network namespace %q: %w", netns, err)
				return
			}
		}
		cur, err := os.ReadFile("/proc/sys/net/mptcp/path_manager")
		if err == nil {
			if strings.TrimSpace(string(cur)) == value {
				errc <- nil
				return
			}
			errc <- os.WriteFile("/proc/sys/net/mptcp/path_manager", []byte(value), 0)
			return
		}
		v := "0"
		if value == "userspace" {
			v = "1"
		}
		errc <- os.WriteFile("/proc/sys/net/mptcp/pm_type", []byte(v), 0)
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("set net.mptcp.path_manager=%s: %w", value, err)
	}
	return nil
}
