//go:build !linux

package relay

import "net"

// splicer is Linux only (splice(2)); elsewhere every direction is copied.
type splicer struct{}

func newSplicer(dst, src *net.TCPConn) *splicer { return nil }

func (*splicer) move(limit int64) (int64, error) { panic("relay: no splice on this platform") }

func (*splicer) release() {}

func dropIdlePipes() {}
