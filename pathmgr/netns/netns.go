// Package netns names, enters and identifies network namespaces the way
// `ip -n` does. It is public, part of the pathmgr library (Config.NetNS
// takes the same names), and shared with the ebpf packages and gigapath's
// daemon: the path-manager and rtnetlink clients open the namespace file,
// per-namespace sysctls are read on a thread switched into it, and a
// sockops program's policy is scoped to a namespace by its cookie. It
// imports only the standard library and golang.org/x/sys; outside Linux,
// entering another namespace and reading a cookie return an error saying so.
package netns

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// Path resolves netns the way `ip -n` does: a name from `ip netns list`
// becomes /run/netns/NAME, an absolute path is kept, "" stays "" (the
// caller's own namespace).
func Path(netns string) (string, error) {
	if netns == "" || strings.HasPrefix(netns, "/") {
		return netns, nil
	}
	if strings.Contains(netns, "/") || netns == "." || netns == ".." {
		return "", fmt.Errorf("network namespace %q: a name must not contain '/'; give a name from `ip netns list` or an absolute path", netns)
	}
	return "/run/netns/" + netns, nil
}

// Open opens the namespace file netns names (see Path); "" gives nil, nil:
// the caller's own namespace.
func Open(netns string) (*os.File, error) {
	path, err := Path(netns)
	if err != nil || path == "" {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("network namespace %q: %w", netns, err)
	}
	return f, nil
}

// Do runs fn on a thread switched into the network namespace netns (see
// Path), or directly for "". The switched thread is never reused: it ends
// with its goroutine.
func Do(netns string, fn func() error) error {
	f, err := Open(netns)
	if err != nil {
		return err
	}
	if f == nil {
		return fn()
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread dies with the goroutine.
		if err := setnsNet(f); err != nil {
			errc <- fmt.Errorf("enter network namespace %q: %w", netns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Cookie is the network namespace's cookie: the number a BPF program gets
// from bpf_get_netns_cookie for that namespace's sockets (SO_NETNS_COOKIE,
// Linux 5.14). netns as in Path.
func Cookie(netns string) (uint64, error) {
	var c uint64
	err := Do(netns, func() error {
		var err error
		c, err = cookie()
		return err
	})
	return c, err
}
