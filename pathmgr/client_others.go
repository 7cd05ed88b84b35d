//go:build !linux

package pathmgr

import (
	"fmt"
	"runtime"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

var errOS = fmt.Errorf("pathmgr: MPTCP path manager not supported on %s/%s: %w", runtime.GOOS, runtime.GOARCH, ErrNotSupported)

// client is never made outside Linux: dial refuses.
type client struct{}

func dial(*Config) (*client, error) { return nil, errOS }

func (*client) close() error         { return errOS }
func (*client) familyVersion() uint8 { return 0 }
func (*client) execute(genetlink.Message, netlink.HeaderFlags) ([]genetlink.Message, error) {
	return nil, errOS
}

func (*client) ack(uint8, bool, func(*attrEncoder)) (bool, error) { return true, errOS }

func unameRelease() string { return "" }
