//go:build !linux

package relay

import "net"

func (c *conn) sampleSubflows(net.Conn) {}

func waitReadable(*net.TCPConn) error { return nil }
