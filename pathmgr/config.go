package pathmgr

import (
	"fmt"
	"os"

	"github.com/gigapath/gigapath/pathmgr/netns"
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
	if cfg == nil {
		return nil, nil
	}
	f, err := OpenNetNS(cfg.NetNS)
	if err != nil {
		return nil, fmt.Errorf("pathmgr: %w", err)
	}
	return f, nil
}

// OpenNetNS opens a network namespace file named as Config.NetNS names one:
// a name from `ip netns list` (resolved under /run/netns) or an absolute
// path such as /proc/PID/ns/net. It returns nil, nil for "" (the current
// namespace). Errors name the namespace and wrap the open error, so
// errors.Is(err, os.ErrNotExist) tells a missing namespace. It is
// netns.Open; package netns also enters a namespace and reads its cookie.
func OpenNetNS(name string) (*os.File, error) { return netns.Open(name) }
