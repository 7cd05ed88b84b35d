package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// freePort returns a TCP port on 127.0.0.1 nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startRelay runs `gigapath relay args...` until the test ends and waits
// for its "relay listening" line; the returned function gives its log so
// far.
func startRelay(t *testing.T, args ...string) func() string {
	t.Helper()
	cmd := exec.Command(pmBinary(t), append([]string{"relay"}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log bytes.Buffer
	ready := make(chan struct{})
	go func() {
		s := bufio.NewScanner(pr)
		once := sync.Once{}
		for s.Scan() {
			mu.Lock()
			log.WriteString(s.Text() + "\n")
			mu.Unlock()
			if strings.Contains(s.Text(), "relay listening") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		pw.Close()
	})
	get := func() string { mu.Lock(); defer mu.Unlock(); return log.String() }
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("gigapath relay %s did not start listening:\n%s", strings.Join(args, " "), get())
	}
	return get
}

// greet sends a SOCKS5 greeting (no authentication) and returns the
// relay's answer, or an error when it closes the connection instead.
func greet(addr string) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return nil, err
	}
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, err
	}
	return b, nil
}

// `gigapath relay --config FILE` runs the relay: section of the daemon's
// policy file: its keys take effect (allow_clients refuses the local
// client), flags given on the command line win over them, and a section
// with an unknown key or no section at all exits 2 naming the problem.
func TestRelayConfigFile(t *testing.T) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	file := writeConfigFile(t, "node.yaml", fmt.Sprintf(`path_manager: userspace
interfaces:
  - name: wifi0
    role: wifi
relay:
  listen: %s
  allow_clients: [192.0.2.0/24]
  handshake_timeout: 2s
`, addr))

	log := startRelay(t, "--config", file)
	if b, err := greet(addr); err == nil {
		t.Fatalf("allow_clients [192.0.2.0/24] from the file: a client on 127.0.0.1 got %x, want the connection closed", b)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(log(), "client-not-allowed") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(log(), "client-not-allowed") {
		t.Errorf("the relay did not log the refusal:\n%s", log())
	}

	// A flag overrides the file's value; the file's listen stays.
	port2 := freePort(t)
	addr2 := fmt.Sprintf("127.0.0.1:%d", port2)
	startRelay(t, "--config", file, "--listen", addr2, "--allow-client", "127.0.0.0/8")
	if b, err := greet(addr2); err != nil || !bytes.Equal(b, []byte{5, 0}) {
		t.Errorf("--allow-client 127.0.0.0/8 over the file: greeting answered %x, %v; want 0500", b, err)
	}

	for _, tc := range []struct{ name, text, want string }{
		{"unknown key", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\nrelay:\n  listen: 127.0.0.1:1080\n  lisen: x\n",
			"line 7: relay.lisen: unknown key; valid keys: listen,"},
		{"no section", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n",
			"has no relay: section"},
		{"open relay", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\nrelay:\n  listen: 0.0.0.0:1080\n",
			"line 6: relay: refusing to run an open relay on 0.0.0.0:1080"},
	} {
		f := writeConfigFile(t, "bad.yaml", tc.text)
		code, _, errs := gp(t, "relay", "--config", f)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q", tc.name, code, errs, tc.want)
		}
	}
}
