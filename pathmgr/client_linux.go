//go:build linux

package pathmgr

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// client is the Linux side of Client: one generic netlink socket bound to
// the mptcp_pm family, used by one request at a time.
type client struct {
	mu     sync.Mutex
	c      *genetlink.Conn
	family genetlink.Family
}

// dialNetlink opens a generic netlink socket in the namespace cfg names,
// with strict checking and extended acknowledgements. The namespace file is
// closed once the socket exists; the calling thread never changes
// namespace.
func dialNetlink(cfg *Config) (*genetlink.Conn, error) {
	ns, err := cfg.netnsFile()
	if err != nil {
		return nil, err
	}
	// Strict turns on ExtendedAcknowledge (the kernel's reasons for a
	// refusal) and strict attribute checking of dump requests. A fixed,
	// pooled receive buffer saves a peek and an allocation per reply: the
	// kernel sizes a dump's datagrams by the buffers it has seen, at most
	// 32 KiB.
	nlcfg := &netlink.Config{Strict: true, MessageBufferSize: 32 << 10}
	if ns != nil {
		defer ns.Close()
		nlcfg.NetNS = int(ns.Fd())
	}
	c, err := genetlink.Dial(nlcfg)
	if err != nil {
		return nil, fmt.Errorf("pathmgr: open generic netlink socket: %w", err)
	}
	return c, nil
}

// resolveFamily looks up mptcp_pm, with a plain message when it is absent.
func resolveFamily(c *genetlink.Conn) (genetlink.Family, error) {
	f, err := c.GetFamily(familyName)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return f, fmt.Errorf("pathmgr: MPTCP path manager (generic netlink family %s) not available: kernel without CONFIG_MPTCP or MPTCP disabled: %w", familyName, err)
		}
		return f, fmt.Errorf("pathmgr: resolve generic netlink family %s: %w", familyName, err)
	}
	return f, nil
}

func dial(cfg *Config) (*client, error) {
	c, err := dialNetlink(cfg)
	if err != nil {
		return nil, err
	}
	cl, err := initClient(c)
	if err != nil {
		return nil, err
	}
	return cl.c, nil
}

// initClient resolves the family on an open connection; it closes the
// connection on failure. Tests call it with a genltest connection.
func initClient(c *genetlink.Conn) (*Client, error) {
	f, err := resolveFamily(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Client{c: &client{c: c, family: f}}, nil
}

func (c *client) close() error { return c.c.Close() }

func (c *client) familyVersion() uint8 { return c.family.Version }

// execute sends one request and returns the replies.
func (c *client) execute(req genetlink.Message, flags netlink.HeaderFlags) ([]genetlink.Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.Execute(req, c.family.ID, flags)
}

// unameRelease is uname -r.
func unameRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
