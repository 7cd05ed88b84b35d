//go:build !linux

package relay

import (
	"errors"
	"net"

	"github.com/gigapath/gigapath/internal/relay/socks5"
)

func (c *conn) sampleSubflows(net.Conn) {}

func originalDst(net.Conn) (socks5.Addr, error) {
	return socks5.Addr{}, errors.New("transparent mode needs Linux (SO_ORIGINAL_DST)")
}
