//go:build linux

package relay_test

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/relay"
	"github.com/gigapath/gigapath/internal/relay/socks5"
	"github.com/gigapath/gigapath/internal/testbed"
)

// BenchmarkRelayAggregationGap splits the gap between the chain's goodput and
// the sum of the tbf rates, side by side on the same kind of bed:
//
//	tcp-wifi:     one plain TCP flow over wifi only  (goodput / wifi rate)
//	mptcp-wifi:   one MPTCP connection, wifi subflow only (goodput / wifi rate)
//	mptcp-direct: MPTCP wifi+lte, no relays          (goodput / sum of rates)
//	chain:        local relay → MPTCP → proxy relay → origin (as
//	              BenchmarkRelayAggregation)
//
// Goodput is counted after the first second (slow start excluded). It also
// reports the tbf drops on the proxy side (the download direction).
//
// Diagnostic knobs (off by default): GAP_SYSCTL="k=v;k=v" sets sysctls in
// all three namespaces; GAP_TBF="burst B latency L" replaces the proxy-side
// (download) tbf parameters, same rates; GAP_CC=NAME sets the sending
// socket's congestion control (TCP_CONGESTION, which CAP_NET_ADMIN may set
// beyond tcp_allowed_congestion_control) in the tcp-wifi, mptcp-wifi and
// mptcp-direct rows, and is the relays' --congestion in the chain row.
func BenchmarkRelayAggregationGap(b *testing.B) {
	testbed.NeedRoot(b)
	bin := gigapathBin(b)
	for _, rates := range [][2]int{{100, 50}, {400, 200}} {
		for _, mode := range []string{"tcp-wifi", "mptcp-wifi", "mptcp-direct", "chain"} {
			b.Run(fmt.Sprintf("%d+%dmbit/%s", rates[0], rates[1], mode), func(b *testing.B) {
				bed := testbed.UpT(b, testbed.Spec{ClientRouting: true,
					WiFiRate: fmt.Sprintf("%dmbit", rates[0]), LTERate: fmt.Sprintf("%dmbit", rates[1])})
				if mode != "mptcp-wifi" {
					if err := bed.EnableKernelPM(); err != nil {
						b.Fatal(err)
					}
				}
				if v := os.Getenv("GAP_SYSCTL"); v != "" {
					for _, kv := range strings.Split(v, ";") {
						for _, n := range bed.Namespaces() {
							if _, err := n.Run("sysctl", "-w", kv); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
				if v := os.Getenv("GAP_TBF"); v != "" {
					for i, l := range testbed.Links {
						_, pif, _ := testbed.Iface(l)
						args := append([]string{"tc", "qdisc", "replace", "dev", pif, "root", "handle", "1:", "tbf", "rate", fmt.Sprintf("%dmbit", rates[i])}, strings.Fields(v)...)
						if _, err := bed.Proxy.Run(args...); err != nil {
							b.Fatal(err)
						}
					}
				}
				dur := 5 * time.Second
				size := int64(float64(rates[0]+rates[1]) * 1e6 / 8 * dur.Seconds() * 1.5)
				div := float64(rates[0]+rates[1]) * 1e6
				var dial func() (net.Conn, error)
				switch mode {
				case "tcp-wifi":
					div = float64(rates[0]) * 1e6
					mptcpServer(b, bed.Proxy, bed.ProxyWiFiAddr.String()+":5002", size, os.Getenv("GAP_CC"))
					dial = func() (c net.Conn, err error) {
						err = bed.Client.Do(func() (err error) { c, err = net.Dial("tcp", bed.ProxyWiFiAddr.String()+":5002"); return err })
						return c, err
					}
				case "mptcp-wifi", "mptcp-direct":
					if mode == "mptcp-wifi" {
						div = float64(rates[0]) * 1e6
					}
					mptcpServer(b, bed.Proxy, bed.ProxyAddr.String()+":5002", size, os.Getenv("GAP_CC"))
					dial = func() (c net.Conn, err error) {
						err = bed.Client.Do(func() (err error) {
							var d net.Dialer
							d.SetMultipathTCP(true)
							c, err = d.Dial("tcp", bed.ProxyAddr.String()+":5002")
							return err
						})
						return c, err
					}
				case "chain":
					bulkServer(b, bed.Origin, bed.OriginAddr.String()+":5001", size)
					var cc []string
					if v := os.Getenv("GAP_CC"); v != "" {
						cc = []string{"--congestion", v}
					}
					start(b, bed.Proxy, append([]string{bin, "relay", "--listen", bed.ProxyAddr.String() + ":1080", "--allow-client", "10.201.0.0/16"}, cc...)...)
					waitListen(b, bed.Proxy, "1080")
					start(b, bed.Client, append([]string{bin, "relay", "--listen", "127.0.0.1:1080", "--upstream", "socks5://" + bed.ProxyAddr.String() + ":1080"}, cc...)...)
					waitListen(b, bed.Client, "1080")
					dial = func() (c net.Conn, err error) {
						if err = bed.Client.Do(func() (err error) { c, err = net.Dial("tcp", "127.0.0.1:1080"); return err }); err != nil {
							return nil, err
						}
						a, _ := socks5.ParseAddr(bed.OriginAddr.String() + ":5001")
						if _, err := relay.ClientHandshake(c, "", "", a); err != nil {
							c.Close()
							return nil, err
						}
						return c, nil
					}
				}
				var eff, drops float64
				for i := 0; i < b.N; i++ {
					d0 := tbfDrops(b, bed)
					eff += steadyGoodput(b, dial, dur, div) / float64(b.N)
					drops += float64(tbfDrops(b, bed)-d0) / float64(b.N)
				}
				b.ReportMetric(eff*100, "%-of-rate")
				b.ReportMetric(drops, "tbf-drops/op")
			})
		}
	}
}

// mptcpServer is bulkServer with an MPTCP listener (plain TCP clients fall
// back to TCP on it), sending with congestion control cc ("": the
// namespace's default).
func mptcpServer(b testing.TB, ns *testbed.NetNS, addr string, size int64, cc string) {
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		ln, err = lc.Listen(b.Context(), "tcp", addr)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	serveBulk(b, ln, size, cc)
}

func serveBulk(b testing.TB, ln net.Listener, size int64, cc string) {
	b.Cleanup(func() { ln.Close() })
	go func() {
		buf := make([]byte, 1<<20)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if cc != "" {
				if err := setCongestion(c, cc); err != nil {
					b.Errorf("%v", err)
				}
			}
			go func() {
				defer c.Close()
				for left := size; left > 0; {
					n, err := c.Write(buf[:min(int64(len(buf)), left)])
					if err != nil {
						return
					}
					left -= int64(n)
				}
			}()
		}
	}()
}

// steadyGoodput reads from a fresh connection for dur and returns goodput
// after the first second / divBits.
func steadyGoodput(b *testing.B, dial func() (net.Conn, error), dur time.Duration, divBits float64) float64 {
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var got int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				atomicAdd(&got, int64(n))
			}
			if err != nil {
				return
			}
		}
	}()
	time.Sleep(time.Second)
	mark, t0 := atomicLoad(&got), time.Now()
	time.Sleep(dur - time.Second)
	good := atomicLoad(&got) - mark
	el := time.Since(t0).Seconds()
	c.Close()
	<-done
	return float64(good) * 8 / el / divBits
}

var dropRE = regexp.MustCompile(`dropped (\d+)`)

// tbfDrops sums the drop counters of the proxy-side qdiscs of both links.
func tbfDrops(b testing.TB, bed *testbed.Bed) int64 {
	var n int64
	for _, l := range testbed.Links {
		_, pif, _ := testbed.Iface(l)
		out, err := bed.Proxy.Run("tc", "-s", "qdisc", "show", "dev", pif)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range dropRE.FindAllStringSubmatch(out, -1) {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			n += v
		}
	}
	return n
}

// setCongestion sets TCP_CONGESTION on a TCP or MPTCP socket (MPTCP passes
// it on to every subflow).
func setCongestion(c net.Conn, cc string) error {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("TCP_CONGESTION %s: %w", cc, serr)
	}
	return nil
}
