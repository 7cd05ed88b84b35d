//go:build linux

package relay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
	"github.com/gigapath/gigapath/internal/testbed"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// gigapathBin builds cmd/gigapath once per test binary (GIGAPATH_TEST_BIN
// names a prebuilt one instead).
func gigapathBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("GIGAPATH_TEST_BIN"); p != "" {
		return p
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "gigapath-relay-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "gigapath")
		out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/gigapath").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// proc is a process started in a namespace, killed in t.Cleanup.
type proc struct {
	cmd    *exec.Cmd
	stderr *testbed.LockedBuffer
	done   chan error
}

func start(t testing.TB, ns *testbed.NetNS, args ...string) *proc {
	t.Helper()
	cmd := ns.Command(context.Background(), args[0], args[1:]...)
	p := &proc{cmd: cmd, stderr: &testbed.LockedBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", args[0], p.stderr.String())
		}
	})
	return p
}

// waitListen waits until something listens on TCP port in ns.
func waitListen(t testing.TB, ns *testbed.NetNS, port string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if out, _ := ns.Run("ss", "-Htln", "sport = :"+port); strings.TrimSpace(out) != "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on port %s in %s", port, ns.Name)
}

func newNS(t testing.TB, role string) *testbed.NetNS {
	t.Helper()
	testbed.NeedRoot(t)
	n, err := testbed.NewNetNS(role)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestIntegrationChainThroughTestbed: curl → local relay (client ns) →
// MPTCP over wifi+lte → proxy relay (proxy ns) → HTTP origin, 60 MB of
// random data with the right SHA-256, and subflows on both links.
func TestIntegrationChainThroughTestbed(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	bin := gigapathBin(t)
	b := testbed.UpT(t, testbed.Spec{ClientRouting: true, WiFiRate: "400mbit", LTERate: "200mbit"})
	if err := b.EnableKernelPM(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := make([]byte, 60<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	if err := os.WriteFile(filepath.Join(dir, "blob"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	data = nil
	start(t, b.Origin, "python3", "-m", "http.server", "8080", "--bind", b.OriginAddr.String(), "--directory", dir)
	waitListen(t, b.Origin, "8080")
	start(t, b.Proxy, bin, "relay", "--listen", b.ProxyAddr.String()+":1080", "--allow-client", "10.201.0.0/16", "--metrics", "127.0.0.1:9101")
	waitListen(t, b.Proxy, "1080")
	start(t, b.Client, bin, "relay", "--listen", "127.0.0.1:1080", "--upstream", "socks5://"+b.ProxyAddr.String()+":1080", "--metrics", "127.0.0.1:9100", "--transparent", "127.0.0.1:1081")
	waitListen(t, b.Client, "1080")

	// Sample ss -Mtni in the client while the transfer runs.
	var ssOut strings.Builder
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			out, _ := b.Client.Run("ss", "-Mtni")
			ssOut.WriteString(out)
			out, _ = b.Client.Run("ss", "-tni", "dst", b.ProxyAddr.String())
			ssOut.WriteString(out)
		}
	}()
	cmd := b.Client.Command(context.Background(), "curl", "-sS", "--max-time", "120", "--socks5-hostname", "127.0.0.1:1080",
		"http://"+b.OriginAddr.String()+":8080/blob")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	h := sha256.New()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(h, stdout)
	err := cmd.Wait()
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("curl through the chain: %v: %s", err, stderr.String())
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hex.EncodeToString(sum[:]) || n != 60<<20 {
		t.Fatalf("received %d bytes with SHA-256 %s, want %d bytes %x", n, got, 60<<20, sum)
	}
	// The transparent entry: curl without any proxy setting, its
	// connection to the origin redirected by nftables to the local relay.
	if _, err := exec.LookPath("nft"); err != nil {
		t.Log("nft not installed: transparent entry not checked (apt-get install nftables)")
	} else {
		nft := b.Client.Command(context.Background(), "nft", "-f", "-")
		nft.Stdin = strings.NewReader(`table ip gigapath {
  chain out {
    type nat hook output priority -100;
    ip daddr ` + b.OriginAddr.String() + ` tcp dport 8080 redirect to :1081
  }
}
`)
		if out, err := nft.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
		h := sha256.New()
		cmd := b.Client.Command(context.Background(), "curl", "-sS", "--max-time", "120", "http://"+b.OriginAddr.String()+":8080/blob")
		var errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = h, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("curl redirected to the transparent entry: %v: %s", err, errOut.String())
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != hex.EncodeToString(sum[:]) {
			t.Errorf("transparent entry: SHA-256 %s, want %x", got, sum)
		}
		if m, _ := b.Client.Run("curl", "-s", "127.0.0.1:9100/metrics"); !regexp.MustCompile(`gigapath_relay_connections_total\{transport="tcp"\} 2\b`).MatchString(m) {
			t.Errorf("local relay did not count the transparent connection:\n%s", m)
		}
	}
	ss := ssOut.String()
	for _, a := range []string{b.WiFiAddr.String(), b.LTEAddr.String()} {
		if !regexp.MustCompile(regexp.QuoteMeta(a) + `(%\S+)?:\d+\s+` + regexp.QuoteMeta(b.ProxyAddr.String()) + `:1080`).MatchString(ss) {
			t.Errorf("no subflow from %s to the proxy relay in ss -tni of the client:\n%s", a, ss)
		}
	}
	metrics, err := b.Proxy.Run("curl", "-s", "127.0.0.1:9101/metrics")
	if err != nil || !regexp.MustCompile(`gigapath_relay_connections_total\{transport="mptcp"\} [1-9]`).MatchString(metrics) ||
		!regexp.MustCompile(`gigapath_relay_subflows_bucket\{side="client",le="1"\} 0`).MatchString(metrics) {
		t.Errorf("proxy relay metrics do not show an MPTCP client with more than one subflow (%v):\n%s", err, metrics)
	}
}

// TestIntegrationUnreachable provokes network unreachable, host
// unreachable and TTL expired (dial timeout) with real routes, and checks
// that an MPTCP client shows up as an MPTCP socket on the relay in ss -M.
func TestIntegrationUnreachable(t *testing.T) {
	bin := gigapathBin(t)
	ns := newNS(t, "rly")
	peer := newNS(t, "rlp")
	if err := testbed.Veth(ns, "v0", peer, "v1"); err != nil {
		t.Fatal(err)
	}
	ns.MustRun("ip", "addr", "add", "10.96.0.1/24", "dev", "v0")
	peer.MustRun("ip", "addr", "add", "10.96.0.2/24", "dev", "v1")
	// The peer cannot answer (its replies are blackholed): SYNs time out.
	peer.MustRun("ip", "route", "add", "blackhole", "10.96.0.1/32")
	ns.MustRun("ip", "route", "add", "unreachable", "10.97.0.0/16")
	start(t, ns, bin, "relay", "--listen", "127.0.0.1:1080", "--dial-timeout", "1s", "--metrics", "127.0.0.1:9100")
	waitListen(t, ns, "1080")
	cases := []struct {
		dst  string
		want byte
	}{
		{"10.99.0.1", 0x03}, // no route at all: ENETUNREACH
		{"10.97.0.1", 0x04}, // unreachable route: EHOSTUNREACH
		{"10.96.0.2", 0x06}, // no answer within --dial-timeout
	}
	for _, tc := range cases {
		out, err := ns.Run("python3", "testdata/rawcase.py", "127.0.0.1", "1080", "connect", tc.dst, "80")
		if err != nil {
			t.Fatalf("raw client: %v", err)
		}
		if got := strings.TrimSpace(out); got != fmt.Sprintf("%d", tc.want) {
			t.Errorf("CONNECT %s: reply %s, want %d", tc.dst, got, tc.want)
		}
	}
	// MPTCP client: hold a connection open and look at it from ss -M.
	py := start(t, ns, "python3", "testdata/rawcase.py", "127.0.0.1", "1080", "hold-mptcp", "10.99.0.1", "80")
	var ss string
	for i := 0; i < 50; i++ {
		ss, _ = ns.Run("ss", "-HMtn", "state", "established")
		if strings.Contains(ss, "127.0.0.1:1080") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(ss, "127.0.0.1:1080") {
		t.Errorf("ss -M shows no MPTCP socket of the relay:\n%s", ss)
	}
	py.cmd.Process.Kill()
	m, _ := ns.Run("curl", "-s", "127.0.0.1:9100/metrics")
	if !regexp.MustCompile(`gigapath_relay_connections_total\{transport="mptcp"\} 1\b`).MatchString(m) ||
		!regexp.MustCompile(`gigapath_relay_connections_total\{transport="tcp"\} 3\b`).MatchString(m) {
		t.Errorf("metrics: want 1 mptcp and 3 tcp connections:\n%s", m)
	}
}

// TestIntegrationOpenRelayExit2: the CLI refuses a public listen address
// without auth or allow-list, with exit status 2 and the fix in the message.
func TestIntegrationOpenRelayExit2(t *testing.T) {
	bin := gigapathBin(t)
	cmd := exec.Command(bin, "relay", "--listen", "0.0.0.0:0")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--allow-client") {
		t.Fatalf("gigapath relay --listen 0.0.0.0:0: %v, output %q; want exit 2 naming --allow-client", err, out)
	}
}

// TestIntegrationSIGTERMDrain: the binary stops accepting on SIGTERM, lets
// an active transfer finish, then exits 0.
func TestIntegrationSIGTERMDrain(t *testing.T) {
	bin := gigapathBin(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-release
		c.Write([]byte("after SIGTERM"))
	}()
	// Port 0, the address from the relay's log: a port picked free
	// beforehand and polled until something answers can answer before
	// the relay listens (another process took it meanwhile, or a dial
	// from the ephemeral range connected to itself).
	cmd := exec.Command(bin, "relay", "--listen", "127.0.0.1:0", "--allow-dest", "127.0.0.0/8", "--drain-timeout", "20s")
	var stderr testbed.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("relay stderr:\n%s", stderr.String())
		}
	}()
	addr := listeningAddr(t, &stderr, exited)
	c := dial(t, addr)
	if _, err := relay.ClientHandshake(c, "", "", mustAddr(t, ln.Addr().String())); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	for i := 0; ; i++ {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		nc.Close()
		if i > 100 {
			t.Fatal("relay still accepting after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-exited:
		t.Fatalf("relay exited (%v) with a transfer active", err)
	default:
	}
	close(release)
	b, err := io.ReadAll(c)
	if string(b) != "after SIGTERM" || err != nil {
		t.Errorf("transfer across SIGTERM: %q %v", b, err)
	}
	c.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("relay exit after drain: %v, want status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("relay did not exit after its last connection ended")
	}
}

// udpEchoPy is an independent UDP echo server: "echo:" + payload back to
// the sender.
const udpEchoPy = `import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
u = socket.socket(fam, socket.SOCK_DGRAM)
u.bind((sys.argv[1], int(sys.argv[2])))
while True:
    b, a = u.recvfrom(65535)
    u.sendto(b"echo:" + b, a)
`

// TestIntegrationUDPChainThroughTestbed: python UDP client → local relay
// (client ns) → UDP ASSOCIATE over the MPTCP control connection (wifi+lte)
// → proxy relay (proxy ns) → python UDP echo (origin ns), to the origin's
// address and to a name only the proxy namespace can resolve.
func TestIntegrationUDPChainThroughTestbed(t *testing.T) {
	bin := gigapathBin(t)
	b := testbed.UpT(t, testbed.Spec{ClientRouting: true})
	if err := b.EnableKernelPM(); err != nil {
		t.Fatal(err)
	}
	// `ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts.
	hostsDir := filepath.Join("/etc/netns", b.Proxy.Name)
	if _, err := os.Stat("/etc/netns"); errors.Is(err, fs.ErrNotExist) {
		t.Cleanup(func() { os.Remove("/etc/netns") }) // only if empty: others may use it meanwhile
	}
	if err := os.MkdirAll(hostsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hostsDir) })
	if err := os.WriteFile(filepath.Join(hostsDir, "hosts"), []byte(b.OriginAddr.String()+" origin.gigapath.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, b.Origin, "python3", "-c", udpEchoPy, b.OriginAddr.String(), "7777")
	start(t, b.Proxy, bin, "relay", "--listen", b.ProxyAddr.String()+":1080", "--allow-client", "10.201.0.0/16", "--metrics", "127.0.0.1:9101")
	waitListen(t, b.Proxy, "1080")
	start(t, b.Client, bin, "relay", "--listen", "127.0.0.1:1080", "--upstream", "socks5://"+b.ProxyAddr.String()+":1080", "--metrics", "127.0.0.1:9100")
	waitListen(t, b.Client, "1080")
	for i := 0; i < 100; i++ { // the echo server is up when ss lists it
		if out, _ := b.Origin.Run("ss", "-Hulnp", "sport = :7777"); strings.TrimSpace(out) != "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := b.OriginAddr.String() + ":7777 echo:ping-from-python"
	for _, dst := range []string{b.OriginAddr.String(), "origin.gigapath.test"} {
		out, err := b.Client.Run("python3", "testdata/rawcase.py", "127.0.0.1", "1080", "udp-echo", dst, "7777")
		if got := strings.TrimSpace(out); err != nil || got != want {
			t.Errorf("UDP through the chain to %s: %q (%v), want %q", dst, got, err, want)
		}
	}
	local, _ := b.Client.Run("curl", "-s", "127.0.0.1:9100/metrics")
	if !regexp.MustCompile(`gigapath_relay_udp_datagrams_total\{direction="down"\} [2-9]`).MatchString(local) {
		t.Errorf("local relay metrics do not show the datagrams passed down:\n%s", local)
	}
	proxy, _ := b.Proxy.Run("curl", "-s", "127.0.0.1:9101/metrics")
	if !regexp.MustCompile(`gigapath_relay_udp_datagrams_total\{direction="up"\} [2-9]`).MatchString(proxy) ||
		!regexp.MustCompile(`gigapath_relay_connections_total\{transport="mptcp"\} [2-9]`).MatchString(proxy) {
		t.Errorf("proxy relay metrics do not show MPTCP control connections and the datagrams relayed:\n%s", proxy)
	}
}

var listeningRE = regexp.MustCompile(`msg="relay listening" addr=(\S+)`)

// listeningAddr waits (10 s at most) for the relay's "relay listening"
// line in its log and returns the address in it; it fails if the relay
// exits first.
func listeningAddr(t *testing.T, log *testbed.LockedBuffer, exited <-chan error) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if m := listeningRE.FindStringSubmatch(log.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-exited:
			t.Fatalf("relay exited (%v) before it listened", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatal("relay did not log that it listens within 10 s")
	return ""
}
