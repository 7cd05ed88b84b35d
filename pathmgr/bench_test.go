//go:build linux

package pathmgr

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// BenchmarkDecodeEvents decodes the kernel's encoding of every event type
// in turn and reports decoded events per second.
//
//	go test -run '^$' -bench 'DecodeEvents' ./pathmgr
func BenchmarkDecodeEvents(b *testing.B) {
	cases := eventCases()
	msgs := make([][]byte, len(cases))
	for i, c := range cases {
		msgs[i] = kernelEvent(b, c.e, c.attrs...)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		c := cases[n%len(cases)]
		if _, err := decodeEvent(uint8(c.e.Type), msgs[n%len(cases)]); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// benchConns is how many connections BenchmarkSubflowLatency measures per
// path manager: GIGAPATH_BENCH_CONNS, default 1000.
func benchConns(b *testing.B) int {
	if s := os.Getenv("GIGAPATH_BENCH_CONNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("GIGAPATH_BENCH_CONNS=%q: want a positive number", s)
		}
		return n
	}
	return 1000
}

// benchTopo is two namespaces joined by "wifi" and "lte" veths, an MPTCP
// sink on the server and an event listener on the client.
type benchTopo struct {
	cli, srv   *testbed.NetNS
	lteIdx     int
	events     chan timedEvent
	ln         net.Listener
	listener   *EventListener
	cancel     context.CancelFunc
	readerDone chan struct{}
}

type timedEvent struct {
	Event
	at time.Time
}

var (
	bCliWiFi = netip.MustParseAddr("10.19.1.1")
	bCliLTE  = netip.MustParseAddr("10.19.2.1")
	bSrvWiFi = netip.MustParseAddr("10.19.1.2")
)

const benchPort = 10900

func newBenchTopo(b *testing.B) *benchTopo {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	t := &benchTopo{}
	var err error
	if t.cli, err = testbed.NewNetNS("bcli"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { t.cli.Close() })
	if t.srv, err = testbed.NewNetNS("bsrv"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { t.srv.Close() })
	for _, l := range []struct{ c, s, ca, sa string }{
		{"wifi0", "wifi1", "10.19.1.1/24", "10.19.1.2/24"},
		{"lte0", "lte1", "10.19.2.1/24", "10.19.2.2/24"},
	} {
		must(b, testbed.Veth(t.cli, l.c, t.srv, l.s))
		must(b, t.cli.AddAddr(l.c, l.ca))
		must(b, t.srv.AddAddr(l.s, l.sa))
	}
	for _, ns := range []*testbed.NetNS{t.cli, t.srv} {
		_, err := ns.Run("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
		must(b, err)
	}
	out, err := t.cli.Run("cat", "/sys/class/net/lte0/ifindex")
	must(b, err)
	t.lteIdx, _ = strconv.Atoi(strings.TrimSpace(out))

	must(b, t.srv.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		var err error
		t.ln, err = lc.Listen(context.Background(), "tcp4", netip.AddrPortFrom(netip.IPv4Unspecified(), benchPort).String())
		return err
	}))
	b.Cleanup(func() { t.ln.Close() })
	go func() {
		for {
			c, err := t.ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()

	t.listener, err = ListenEvents(&Config{NetNS: t.cli.Name})
	must(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.events = make(chan timedEvent, 4096)
	t.readerDone = make(chan struct{})
	go func() {
		defer close(t.readerDone)
		for {
			evs, err := t.listener.Receive(ctx)
			now := time.Now()
			for _, e := range evs {
				t.events <- timedEvent{e, now}
			}
			if err != nil && ctx.Err() != nil {
				return
			}
		}
	}()
	b.Cleanup(func() { cancel(); <-t.readerDone; t.listener.Close() })
	return t
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// oneConn opens an MPTCP connection from the client's wifi address, keeps
// writing until a second subflow is up, and returns the time from the
// established event to the sub_established event (both timestamped when
// read from the event socket). onEstablished runs when established
// arrives (the userspace PM creates the subflow there).
func (t *benchTopo) oneConn(dial func() (net.Conn, error), onEstablished func(token uint32) error) (time.Duration, error) {
	conn, err := dial()
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	localPort := uint16(conn.LocalAddr().(*net.TCPAddr).Port)
	buf := make([]byte, 1024)
	write := time.NewTicker(2 * time.Millisecond)
	defer write.Stop()
	timeout := time.After(10 * time.Second)
	if _, err := conn.Write(buf); err != nil {
		return 0, err
	}
	var token uint32
	var est time.Time
	for {
		select {
		case e := <-t.events:
			switch {
			case e.Type == EventCreated && e.Local.Port() == localPort:
				token = e.Token
			case e.Type == EventEstablished && token != 0 && e.Token == token:
				est = e.at
				if onEstablished != nil {
					if err := onEstablished(token); err != nil {
						return 0, err
					}
				}
			case e.Type == EventSubEstablished && token != 0 && e.Token == token:
				if est.IsZero() {
					return 0, fmt.Errorf("token %d: sub_established before established", token)
				}
				return e.at.Sub(est), nil
			}
		case <-write.C:
			if _, err := conn.Write(buf); err != nil {
				return 0, err
			}
		case <-timeout:
			return 0, fmt.Errorf("connection from port %d (token %d): no second subflow within 10s", localPort, token)
		}
	}
}

// BenchmarkSubflowLatency measures, over GIGAPATH_BENCH_CONNS connections
// (default 1000) per path manager, the time from a connection's
// established event to the sub_established event of its second subflow
// over lte: under the userspace PM with the subflow created through this
// library (CreateSubflow on the established event), and under the
// in-kernel PM (endpoint "subflow" on lte), on the same topology.
//
//	go test -run '^$' -bench SubflowLatency -benchtime 1x ./pathmgr
func BenchmarkSubflowLatency(b *testing.B) {
	t := newBenchTopo(b)
	n := benchConns(b)
	var dial func() (net.Conn, error)
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: bCliWiFi.AsSlice()}, Timeout: 5 * time.Second}
	dialer.SetMultipathTCP(true)
	dial = func() (net.Conn, error) {
		var c net.Conn
		err := t.cli.Do(func() error {
			var err error
			c, err = dialer.Dial("tcp4", netip.AddrPortFrom(bSrvWiFi, benchPort).String())
			return err
		})
		return c, err
	}
	remote := netip.AddrPortFrom(bSrvWiFi, benchPort)

	run := func(b *testing.B, onEstablished func(uint32) error) {
		var lat []time.Duration
		for b.Loop() {
			for range n {
				d, err := t.oneConn(dial, onEstablished)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, d)
			}
		}
		slices.Sort(lat)
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
		b.ReportMetric(q(0.50), "p50-µs")
		b.ReportMetric(q(0.99), "p99-µs")
		b.ReportMetric(float64(len(lat)), "conns")
	}

	b.Run("pm=kernel", func(b *testing.B) {
		must(b, t.cli.Sysctl("net.mptcp.path_manager", "kernel"))
		_, err := t.cli.Run("ip", "mptcp", "endpoint", "add", bCliLTE.String(), "dev", "lte0", "id", "2", "subflow")
		must(b, err)
		defer t.cli.Run("ip", "mptcp", "endpoint", "flush")
		run(b, nil)
	})
	b.Run("pm=userspace-library", func(b *testing.B) {
		if err := t.cli.Sysctl("net.mptcp.path_manager", "userspace"); err != nil {
			b.Skipf("no userspace path manager selectable (sysctl net.mptcp.path_manager, Linux 6.15+): %v", err)
		}
		c, err := Dial(&Config{NetNS: t.cli.Name})
		must(b, err)
		defer c.Close()
		run(b, func(token uint32) error {
			return c.CreateSubflow(token, Endpoint{Addr: bCliLTE, ID: 2, IfIndex: t.lteIdx}, remote)
		})
	})
}
