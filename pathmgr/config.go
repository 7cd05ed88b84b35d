package pathmgr

import (
	"fmt"
	"os"
	"strings"
)

// Config selects where a Client or an EventListener works. A nil *Config
// means the calling process's own network namespace.
type Config struct {
	// NetNS names the network namespace to work in: a name as used by
	// `ip netns` (resolved under /run/netns) or an absolute path to a
	// namespace file such as /proc/1234/ns/net. Empty means the current
	// namespace. The namespace is entered only by the netlink socket, never
	// by the calling thread.
	NetNS string
}

// netnsFile opens the namespace file named by cfg, or returns nil for the
// current namespace. The caller closes it once the socket exists.
func (cfg *Config) netnsFile() (*os.File, error) {
	if cfg == nil || cfg.NetNS == "" {
		return nil, nil
	}
	p := cfg.NetNS
	if !strings.HasPrefix(p, "/") {
		if strings.Contains(p, "/") || p == "." || p == ".." {
			return nil, fmt.Errorf("pathmgr: network namespace %q: a name must not contain '/'; give a name from `ip netns list` or an absolute path", p)
		}
		p = "/run/netns/" + p
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("pathmgr: network namespace %q: %w", cfg.NetNS, err)
	}
	return f, nil
}
