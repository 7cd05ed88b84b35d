//go:build linux

package pathpolicy

import (
	"context"
	"io"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

const server6Py = `
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 5206)); s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    while c.recv(1 << 16):
        pass
    c.close()
`

const client6Py = `
import socket, time
c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, 0)
c.bind(("fd00:2::1", 0))
c.connect(("fd00:2::2", 5206))
print("connected", flush=True)
end = time.time() + 3
while time.time() < end:
    c.sendall(b"x" * 65536)
c.close()
`

// TestIntegrationPolicyIPv6: a policy keyed by an IPv6 local address
// reaches a plain TCP connection from that address (ss -ti shows the
// algorithm), and telemetry, which is for MPTCP subflows only, has no
// entry for it.
func TestIntegrationPolicyIPv6(t *testing.T) {
	tp := newTopo(t)
	for _, a := range [][]string{{"wifi0", "fd00:1::1/64"}, {"lte0", "fd00:2::1/64"}} {
		if err := tp.cli.AddAddr(a[0], a[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range [][]string{{"wifi0s", "fd00:1::2/64"}, {"lte0s", "fd00:2::2/64"}} {
		if err := tp.srv.AddAddr(a[0], a[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tp.cli.Sysctl("net.ipv4.tcp_congestion_control", "reno"); err != nil {
		t.Fatal(err)
	}
	p, err := Load(Options{Cgroup: tp.cgroup, NetNS: tp.cli.Path(), NoSendShare: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	lte6 := netip.MustParseAddr("fd00:2::1")
	if err := p.SetInterfacePolicy(lte6, Policy{Congestion: "cubic", Priority: 5}); err != nil {
		t.Fatal(err)
	}

	srv := tp.srv.Command(context.Background(), "python3", "-c", server6Py)
	waitLine(t, srv, "ready")
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	fd, err := os.Open(tp.cgroup)
	if err != nil {
		t.Fatal(err)
	}
	cli := tp.cli.Command(context.Background(), "python3", "-c", client6Py)
	cli.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	out := waitLine(t, cli, "connected")
	fd.Close()
	go io.Copy(io.Discard, out)
	t.Cleanup(func() { cli.Process.Kill(); cli.Wait() })
	time.Sleep(500 * time.Millisecond)

	var found bool
	for _, s := range ssTCP(t, tp.cli) {
		if strings.HasPrefix(s.local, "[fd00:2::1]:") {
			found = true
			if s.cc != "cubic" {
				t.Fatalf("ss -ti: %s → %s uses %q, want cubic (%s)", s.local, s.remote, s.cc, s.info)
			}
		}
	}
	if !found {
		t.Fatal("ss -ti shows no socket from [fd00:2::1]")
	}
	stats, err := p.Telemetry()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stats {
		if s.Local.Addr() == lte6 || !s.MPTCP {
			t.Fatalf("telemetry has a plain TCP socket: %+v", s)
		}
	}
}
