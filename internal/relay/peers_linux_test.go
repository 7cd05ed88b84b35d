//go:build linux

package relay_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
)

// TestCurl: curl's own SOCKS5 client, IP (--socks5) and hostname
// (--socks5-hostname, resolved on the relay) modes, with and without
// RFC 1929 credentials.
func TestCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	body := strings.Repeat("gigapath", 1<<17)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
	defer hs.Close()
	_, port, _ := net.SplitHostPort(hs.Listener.Addr().String())
	creds := filepath.Join(t.TempDir(), "users")
	os.WriteFile(creds, []byte("alice:s3cret\n"), 0o600)
	_, open := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	_, auth := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}, Credentials: creds})
	_, strict := startRelay(t, relay.Config{})
	for _, tc := range []struct {
		proxy, url string
		ok         bool
	}{
		{"socks5://" + open, "http://127.0.0.1:" + port, true},
		{"socks5h://" + open, "http://localhost:" + port, true},
		{"socks5h://alice:s3cret@" + auth, "http://localhost:" + port, true},
		{"socks5://alice:wrong@" + auth, "http://127.0.0.1:" + port, false},
		{"socks5h://" + strict, "http://localhost:" + port, false}, // loopback refused by default
	} {
		out, err := exec.Command("curl", "-sS", "--max-time", "10", "-x", tc.proxy, tc.url).CombinedOutput()
		if got := err == nil && string(out) == body; got != tc.ok {
			t.Errorf("curl -x %s %s: ok=%v (%v: %.200s), want ok=%v", tc.proxy, tc.url, got, err, out, tc.ok)
		}
	}
}

// peer is a reference SOCKS5 server started on a loopback port.
type peer struct {
	name string
	addr string
}

func startMicrosocks(t *testing.T) *peer {
	p, err := exec.LookPath("microsocks")
	if err != nil {
		return nil
	}
	port := freePort(t)
	cmd := exec.Command(p, "-i", "127.0.0.1", "-p", port)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &peer{"microsocks", waitTCP(t, "127.0.0.1:"+port)}
}

func startDante(t *testing.T) *peer {
	p, err := exec.LookPath("danted")
	if err != nil || os.Geteuid() != 0 {
		return nil
	}
	port := freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "danted.conf")
	os.WriteFile(conf, []byte(`logoutput: stderr
internal: 127.0.0.1 port = `+port+`
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: bind connect udpassociate }
socks pass { from: 0.0.0.0/0 to: 127.0.0.0/8 command: udpreply }
`), 0o644)
	cmd := exec.Command(p, "-f", conf, "-p", filepath.Join(dir, "pid"), "-N", "1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &peer{"dante", waitTCP(t, "127.0.0.1:"+port)}
}

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func waitTCP(t testing.TB, addr string) string {
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			// A dial from the port it dials (both in the ephemeral
			// range) connects to itself, nobody listening.
			self := c.LocalAddr().String() == c.RemoteAddr().String()
			c.Close()
			if !self {
				return addr
			}
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
	return ""
}

// TestPeersReference runs the same raw cases (testdata/rawcase.py, an
// independent python client) against gigapath, microsocks and dante. It
// asserts gigapath's answers and logs the peers' next to them; the
// differences are recorded in docs/relay.md.
func TestPeersReference(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3")
	}
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	eh, ep, _ := net.SplitHostPort(echo)
	_, cp, _ := net.SplitHostPort(closedPort(t))
	_, gp := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	_, gpStrict := startRelay(t, relay.Config{})
	peers := []*peer{{"gigapath", gp}}
	for _, p := range []*peer{startMicrosocks(t), startDante(t)} {
		if p != nil {
			peers = append(peers, p)
		} else {
			t.Log("peer not installed (apt-get install microsocks dante-server): comparison partial")
		}
	}
	cases := []struct {
		name string
		args []string
		want string // gigapath's answer
	}{
		{"connect open port", []string{"connect", eh, ep}, "0"},
		{"connect closed port", []string{"connect", eh, cp}, "5"},
		{"bind", []string{"bind", eh, ep}, "7"},
		{"command 0x09", []string{"cmd9", eh, ep}, "7"},
		{"atyp 0x05", []string{"atyp5", eh, ep}, "8"},
		{"udp associate", []string{"udp", "0.0.0.0", "0"}, "0"},
		{"SOCKS4 request", []string{"ver4", eh, ep}, "close"},
		{"only user/pass offered to a no-auth server", []string{"authonly"}, "method:255"},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-45s", "case")
	for _, p := range peers {
		fmt.Fprintf(&table, " %-12s", p.name)
	}
	table.WriteString("\n")
	run := func(addr string, args []string) string {
		h, port, _ := net.SplitHostPort(addr)
		out, err := exec.Command("python3", append([]string{"testdata/rawcase.py", h, port}, args...)...).CombinedOutput()
		if err != nil {
			return "error"
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range cases {
		fmt.Fprintf(&table, "%-45s", tc.name)
		for _, p := range peers {
			got := run(p.addr, tc.args)
			fmt.Fprintf(&table, " %-12s", got)
			if p.name == "gigapath" && got != tc.want {
				t.Errorf("%s: gigapath answered %s, want %s", tc.name, got, tc.want)
			}
		}
		table.WriteString("\n")
	}
	// Loopback destination with default policy (gigapath) vs the peers'
	// defaults, which let it through.
	fmt.Fprintf(&table, "%-45s", "loopback destination, default policy")
	if got := run(gpStrict, []string{"connect", eh, ep}); got != "2" {
		t.Errorf("loopback destination with the default policy: %s, want 2 (not allowed)", got)
	} else {
		fmt.Fprintf(&table, " %-12s", got)
	}
	for _, p := range peers[1:] {
		fmt.Fprintf(&table, " %-12s", run(p.addr, []string{"connect", eh, ep}))
	}
	t.Logf("reply codes (decimal; close = closed without reply):\n%s", table.String())
}

// TestUDPChainPeers: an independent client (testdata/rawcase.py udp-echo)
// does UDP ASSOCIATE through a local gigapath relay chained to an
// upstream, gigapath or dante (an independent server), and gets the echo
// of a real UDP server back, to an IPv4 address, to a name (resolved
// upstream), and to an IPv6 address over an IPv6 upstream hop.
func TestUDPChainPeers(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3")
	}
	echo := startUDPEcho(t, "udp4", "127.0.0.1:0")
	port := fmt.Sprint(echo.addr.Port)
	_, gp := startRelay(t, relay.Config{AllowDest: []string{"127.0.0.0/8"}})
	ups := []*peer{{"gigapath", gp}}
	if d := startDante(t); d != nil {
		ups = append(ups, d)
	} else {
		t.Log("dante not installed (apt-get install dante-server): chained to gigapath only")
	}
	run := func(local string, dst, dport string) string {
		h, p, _ := net.SplitHostPort(local)
		out, err := exec.Command("python3", "testdata/rawcase.py", h, p, "udp-echo", dst, dport).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("error %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	want := "127.0.0.1:" + port + " echo:ping-from-python"
	for _, up := range ups {
		local, localAddr := startRelay(t, relay.Config{Upstream: "socks5://" + up.addr, AllowDest: []string{"127.0.0.0/8"}})
		for _, dst := range []string{"127.0.0.1", "localhost"} {
			if got := run(localAddr, dst, port); got != want {
				t.Errorf("python → gigapath → %s → %s:%s: %q, want %q", up.name, dst, port, got, want)
			}
		}
		if n := valueAtLeast(t, local, relay.MetricUDPDatagrams, "down", 2); n < 2 {
			t.Errorf("chained to %s: the local relay passed %v datagrams down, want >= 2", up.name, n)
		}
	}
	if !haveIPv6Loopback() {
		return
	}
	echo6 := startUDPEcho(t, "udp6", "[::1]:0")
	_, up6 := startRelay(t, relay.Config{Listen: "[::1]:0", AllowDest: []string{"::1/128"}})
	_, local6 := startRelay(t, relay.Config{Upstream: "socks5://" + up6, AllowDest: []string{"::1/128"}})
	want6 := fmt.Sprintf("[::1]:%d echo:ping-from-python", echo6.addr.Port)
	if got := run(local6, "::1", fmt.Sprint(echo6.addr.Port)); got != want6 {
		t.Errorf("python → gigapath (IPv4) → gigapath (IPv6) → [::1]: %q, want %q", got, want6)
	}
}
