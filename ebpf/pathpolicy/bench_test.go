//go:build linux

package pathpolicy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/ebpf/cgroup"
)

// ownCgroup returns the cgroup v2 the test process is in.
func ownCgroup(b *testing.B) string {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		b.Fatal(err)
	}
	root, err := cgroup.Mount()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(l, "0::"); ok {
			return root + rest
		}
	}
	b.Fatal("no cgroup v2 line in /proc/self/cgroup")
	return ""
}

// BenchmarkSockopsBulk: a bulk transfer between namespaces over veth, plain
// TCP over one link and MPTCP over two, each with the sockops program
// detached and attached (a policy that asks for the congestion control the
// namespace uses anyway, telemetry refreshed every round trip, send-share tracepoint), side by side. Reports
// throughput (MB/s) and CPU seconds per GB moved (both ends in this
// process).
func BenchmarkSockopsBulk(b *testing.B) {
	tp := newTopo(b)
	home := ownCgroup(b)
	// Same congestion control with and without the program, so that only
	// the program's own cost differs.
	// (A namespace other than the first may only pick the algorithms in
	// net.ipv4.tcp_allowed_congestion_control; the first of them will do.)
	allowed, err := os.ReadFile("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
	if err != nil || len(strings.Fields(string(allowed))) == 0 {
		b.Fatalf("read net.ipv4.tcp_allowed_congestion_control: %v", err)
	}
	cc := strings.Fields(string(allowed))[0]
	if err := tp.cli.Sysctl("net.ipv4.tcp_congestion_control", cc); err != nil {
		b.Fatal(err)
	}

	var ln net.Listener
	if err := tp.srv.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp4", "0.0.0.0:"+srvPort)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	got := make(chan int64, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				n, _ := io.Copy(io.Discard, c)
				c.Close()
				got <- n
			}()
		}
	}()

	const chunk = 64 << 20
	buf := make([]byte, 1<<20)
	transfer := func(b *testing.B, mptcp bool, check func(*testing.B)) {
		// The client socket is created in the cgroup: move this process
		// there for the dial only.
		if err := cgroup.AddProcess(tp.cgroup, os.Getpid()); err != nil {
			b.Fatal(err)
		}
		var conn net.Conn
		err := tp.cli.Do(func() error {
			var d net.Dialer
			d.SetMultipathTCP(mptcp)
			var err error
			conn, err = d.Dial("tcp4", srvAddr+":"+srvPort)
			return err
		})
		if err2 := cgroup.AddProcess(home, os.Getpid()); err2 != nil {
			b.Fatal(err2)
		}
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		var ru0, ru1 syscall.Rusage
		b.SetBytes(chunk)
		b.ResetTimer()
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		start := time.Now()
		for i := 0; i < b.N; i++ {
			for sent := 0; sent < chunk; sent += len(buf) {
				if _, err := conn.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		}
		if check != nil {
			check(b)
		}
		conn.Close()
		if n := <-got; n != int64(b.N)*chunk {
			b.Fatalf("server got %d bytes, want %d", n, int64(b.N)*chunk)
		}
		el := time.Since(start)
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		b.StopTimer()
		cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()+ru1.Stime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
		gb := float64(b.N) * chunk / 1e9
		b.ReportMetric(cpu.Seconds()/gb, "cpu-s/GB")
		b.ReportMetric(float64(b.N)*chunk/1e6/el.Seconds(), "MB/s")
	}

	for _, proto := range []string{"tcp", "mptcp"} {
		mptcp := proto == "mptcp"
		b.Run(proto+"/detached", func(b *testing.B) { transfer(b, mptcp, nil) })
		for _, withPolicy := range []bool{false, true} {
			name := proto + "/attached-telemetry"
			if withPolicy {
				name = proto + "/attached-policy"
			}
			b.Run(name, func(b *testing.B) {
				p, err := Load(Options{Cgroup: tp.cgroup, NetNS: tp.cli.Path()})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				if withPolicy {
					for _, a := range []string{wifiAddr, lteAddr} {
						if err := p.SetInterfacePolicy(netip.MustParseAddr(a), Policy{Congestion: cc}); err != nil {
							b.Fatal(err)
						}
					}
				}
				transfer(b, mptcp, func(b *testing.B) {
					// The program must have seen the connection's subflows.
					if stats, err := p.Telemetry(); err != nil || len(stats) == 0 {
						b.Fatalf("sockops saw no subflow of the transfer (%v)", err)
					}
				})
			})
		}
	}
}
