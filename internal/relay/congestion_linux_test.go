//go:build linux

package relay_test

import (
	"context"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
	"github.com/gigapath/gigapath/internal/relay/socks5"
	"github.com/gigapath/gigapath/internal/testbed"
)

// An unknown congestion control is refused at start, naming it and what
// the kernel offers.
func TestCongestionUnknown(t *testing.T) {
	_, err := relay.New(relay.Config{Congestion: "no-such-cc"}, nil)
	if err == nil || !strings.Contains(err.Error(), `"no-such-cc"`) || !strings.Contains(err.Error(), "available:") {
		t.Fatalf("relay.New with congestion no-such-cc: %v; want an error naming it and the available ones", err)
	}
}

// --congestion reaches every subflow of the MPTCP hop on both relays: ss
// -tni in each namespace shows it on the wifi and the lte subflow. reno is
// used because it is always built in and is not this host's default (bbr).
func TestIntegrationCongestionOnSubflows(t *testing.T) {
	bin := gigapathBin(t)
	b := testbed.UpT(t, testbed.Spec{ClientRouting: true})
	if err := b.EnableKernelPM(); err != nil {
		t.Fatal(err)
	}
	if def := strings.TrimSpace(b.Proxy.MustRun("sysctl", "-n", "net.ipv4.tcp_congestion_control")); def == "reno" {
		t.Fatalf("the namespaces' default is reno already: this test cannot tell the setting from the default")
	}
	testbed.ServeT(t, b.Origin, "tcp", b.OriginAddr.String()+":7007", false, testbed.Echo)
	start(t, b.Proxy, bin, "relay", "--listen", b.ProxyAddr.String()+":1080", "--allow-client", "10.201.0.0/16", "--congestion", "reno")
	waitListen(t, b.Proxy, "1080")
	start(t, b.Client, bin, "relay", "--listen", "127.0.0.1:1080", "--upstream", "socks5://"+b.ProxyAddr.String()+":1080", "--congestion", "reno")
	waitListen(t, b.Client, "1080")

	var c net.Conn
	if err := b.Client.Do(func() (err error) { c, err = net.Dial("tcp", "127.0.0.1:1080"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, _ := socks5.ParseAddr(b.OriginAddr.String() + ":7007")
	if _, err := relay.ClientHandshake(c, "", "", a); err != nil {
		t.Fatal(err)
	}
	// Traffic both ways makes the connection fully established, so the
	// kernel PM adds the lte subflow.
	for i := 0; i < 20; i++ {
		c.Write([]byte("ping"))
		io.ReadFull(c, make([]byte, 4))
	}
	for _, ns := range []*testbed.NetNS{b.Client, b.Proxy} {
		var out string
		ok := false
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && !ok; time.Sleep(100 * time.Millisecond) {
			out = ns.MustRun("ss", "-tniH", "state", "established", "( sport = :1080 or dport = :1080 )")
			ok = true
			for _, addr := range []string{b.WiFiAddr.String(), b.LTEAddr.String()} {
				// A subflow is a line with the client's address on it,
				// followed by its tcp_info line naming the congestion control.
				re := regexp.MustCompile(regexp.QuoteMeta(addr) + `(%\S+)?:\d+[^\n]*\n\s+(\S+)`)
				m := re.FindStringSubmatch(out)
				if m == nil || m[2] != "reno" {
					ok = false
				}
			}
		}
		if !ok {
			t.Errorf("%s: not both subflows (wifi %s, lte %s) run reno:\n%s", ns.Name, b.WiFiAddr, b.LTEAddr, out)
		}
	}
}

// Two relays with ReusePort listen on one address and both serve; without
// it the second cannot listen there.
func TestReusePort(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	a, addr := startRelay(t, relay.Config{ReusePort: true, AllowDest: []string{"127.0.0.0/8"}})
	b, _ := startRelay(t, relay.Config{Listen: addr, ReusePort: true, AllowDest: []string{"127.0.0.0/8"}})
	for i := 0; i < 64; i++ {
		c := dial(t, addr)
		if _, err := relay.ClientHandshake(c, "", "", mustAddr(t, echo)); err != nil {
			t.Fatalf("CONNECT %d through the shared port: %v", i, err)
		}
		c.Close()
	}
	na := value(t, a, relay.MetricConnections, "mptcp") + value(t, a, relay.MetricConnections, "tcp")
	nb := value(t, b, relay.MetricConnections, "mptcp") + value(t, b, relay.MetricConnections, "tcp")
	if na+nb != 64 || na == 0 || nb == 0 {
		t.Errorf("connections per relay %v and %v, want 64 spread over both", na, nb)
	}
	s, err := relay.New(relay.Config{Listen: addr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ln, err := s.Listen(context.Background()); err == nil {
		ln.Close()
		t.Error("a relay without ReusePort listened on the shared address")
	}
}
