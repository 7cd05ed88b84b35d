//go:build linux

package mptcpify

import (
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkConnect: socket()+connect()+close() to an MPTCP listener on
// loopback, side by side: without mptcpify; with mptcpify attached but this
// process out of its scope (the hook's cost for everyone else); and with
// this process in scope (its TCP sockets become MPTCP: the hook plus
// MPTCP's own connection setup).
func BenchmarkConnect(b *testing.B) {
	needRoot(b)
	if err := Supported(); err != nil {
		b.Skip(err.Error())
	}
	// An MPTCP listener on loopback that accepts and closes.
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 262)
	if err != nil {
		b.Fatal(err)
	}
	f := os.NewFile(uintptr(lfd), "listener")
	unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	if err := unix.Listen(lfd, 4096); err != nil {
		b.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	sa := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: ln.Addr().(*net.TCPAddr).Port}

	connect := func(b *testing.B, wantProto int) {
		for i := 0; i < b.N; i++ {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err != nil {
				b.Fatal(err)
			}
			if i == 0 {
				if p, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); p != wantProto {
					b.Fatalf("socket protocol %d, want %d", p, wantProto)
				}
			}
			if err := unix.Connect(fd, sa); err != nil {
				b.Fatal(err)
			}
			// RST instead of FIN: no TIME_WAIT pile-up over b.N sockets.
			unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			unix.Close(fd)
		}
	}

	b.Run("detached", func(b *testing.B) { connect(b, syscall.IPPROTO_TCP) })

	m, err := Load()
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.Attach(); err != nil {
		b.Fatal(err)
	}
	b.Run("attached-out-of-scope", func(b *testing.B) { connect(b, syscall.IPPROTO_TCP) })
	if err := m.AddPID(os.Getpid()); err != nil {
		b.Fatal(err)
	}
	b.Run("attached-in-scope", func(b *testing.B) { connect(b, 262) })
}
