//go:build linux

package relay_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
)

// pipeFDs counts this process's pipe descriptors (the relays of these
// tests run in it).
func pipeFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

// TestSpliceIdleHoldsNoPipe: 40 connections move 1 MiB each way through
// the relay (spliced: TCP on both sides), byte for byte, then sit idle and
// open. An idle direction gives its pipe back, and at most 8 pipes are
// kept for reuse: the relay holds no more than 16 pipe fds, where one
// pipe per direction would be 160.
func TestSpliceIdleHoldsNoPipe(t *testing.T) {
	// An echo that copies through a buffer: echoServer's io.Copy splices
	// too, holding a pipe of this process per connection.
	echo := echoServerWith(t, "tcp4", "127.0.0.1:0", func(c net.Conn) {
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 64<<10))
	})
	_, addr := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	base := pipeFDs(t)
	data := make([]byte, 1<<20)
	rand.Read(data)
	const n = 40
	for i := 0; i < n; i++ {
		c := dial(t, addr)
		if _, err := relay.ClientHandshake(c, "", "", mustAddr(t, echo)); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { _, err := c.Write(data); errc <- err }()
		got := make([]byte, len(data))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("conn %d: the echo differs from what was sent", i)
		}
	}
	// The relay's side gives its pipes back as soon as a splice finds
	// nothing to read; let the last ones get there.
	var held int
	for k := 0; k < 50; k++ {
		if held = pipeFDs(t) - base; held <= 16 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if held > 16 {
		t.Errorf("%d idle connections hold %d pipe fds, want <= 16 (8 pooled pipes)", n, held)
	}
	t.Logf("%d idle connections, %d pipe fds held", n, held)
}
