package relay

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"gopkg.in/yaml.v3"
)

// TestConfigYAML: the daemon's YAML section decodes into Config, durations
// included.
func TestConfigYAML(t *testing.T) {
	var cfg Config
	dec := yaml.NewDecoder(strings.NewReader(`
listen: 0.0.0.0:1080
allow_clients: [10.0.0.0/8]
deny_dest: [192.168.0.0/16]
idle_timeout: 5m
max_conns_per_client: 64
upstream_mptcp: true
`))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.IdleTimeout != 5*time.Minute || cfg.MaxConnsPerClient != 64 || !cfg.UpstreamMPTCP || cfg.AllowClients[0] != "10.0.0.0/8" {
		t.Fatalf("decoded %+v", cfg)
	}
	if _, err := New(cfg, nil); err != nil {
		t.Fatalf("New: %v", err)
	}
}

func TestDestPolicy(t *testing.T) {
	p := &policy{}
	var err error
	p.allowDest, _ = parsePrefixes("allow-dest", []string{"127.0.0.5", "10.9.0.0/16"})
	if p.denyDest, err = parsePrefixes("deny-dest", []string{"10.9.9.0/24"}); err != nil {
		t.Fatal(err)
	}
	own := func(a netip.Addr) bool { return a == netip.MustParseAddr("192.0.2.7") }
	for a, want := range map[string]bool{
		"127.0.0.1": false, "127.0.0.5": true, "::1": false, "::ffff:127.0.0.1": false,
		"169.254.0.1": false, "fe80::1": false, "0.0.0.0": false, "::": false, "224.0.0.1": false,
		"ff05::2": false, "255.255.255.255": false, "192.0.2.7": false, "198.51.100.1": true,
		"10.9.1.1": true, "10.9.9.9": false, "2001:db8::1": true,
	} {
		if got := p.destAllowed(netip.MustParseAddr(a), own); got != want {
			t.Errorf("destAllowed(%s) = %v, want %v", a, got, want)
		}
	}
}

func TestCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	for _, bad := range []string{"", "nocolon\n", ":nouser\n"} {
		f := dir + "/bad"
		writeFile(t, f, bad)
		if _, err := loadCredentials(f); err == nil {
			t.Errorf("credentials %q accepted", bad)
		}
	}
	if _, err := New(Config{Credentials: dir + "/missing"}, nil); err == nil {
		t.Error("a missing credentials file was accepted")
	}
}

// The upstream's password never reaches the logs.
func TestUpstreamNotLogged(t *testing.T) {
	var buf testbed.LockedBuffer
	s, err := New(Config{Listen: "127.0.0.1:0", Upstream: "socks5://u:hunter2@192.0.2.1:1080"}, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// A context that is already done: Serve still logs "relay listening"
	// (a Shutdown called before Serve started would skip that log and
	// leave nothing to check), then drains and returns.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Serve(ctx, ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if strings.Contains(buf.String(), "hunter2") || !strings.Contains(buf.String(), "192.0.2.1:1080") {
		t.Errorf("log: %s", buf.String())
	}
}

func writeFile(t *testing.T, name, s string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A rejected upstream URL is echoed in the error (it reaches stderr and the
// journal) without its password.
func TestUpstreamErrorRedacted(t *testing.T) {
	for _, up := range []string{
		"socks5://" + strings.Repeat("u", 300) + ":hunter2@192.0.2.1:1080",
		"http://u:hunter2@192.0.2.1:1080",
		"socks5://u:hunter2@192.0.2.1:bad port",
	} {
		_, err := New(Config{Upstream: up}, nil)
		if err == nil {
			t.Errorf("upstream %q accepted", up)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// Deny rules written as IPv4-mapped IPv6 prefixes deny the IPv4 addresses
// they map (destinations are compared unmapped).
func TestMappedPrefixes(t *testing.T) {
	p := &policy{}
	var err error
	if p.denyDest, err = parsePrefixes("deny-dest", []string{"::ffff:10.0.0.0/104", "::ffff:198.51.100.9"}); err != nil {
		t.Fatal(err)
	}
	if p.allowClients, err = parsePrefixes("allow-client", []string{"::ffff:192.0.2.0/120"}); err != nil {
		t.Fatal(err)
	}
	own := func(netip.Addr) bool { return false }
	for a, want := range map[string]bool{"10.1.2.3": false, "::ffff:10.1.2.3": false, "198.51.100.9": false, "198.51.100.8": true} {
		if got := p.destAllowed(netip.MustParseAddr(a), own); got != want {
			t.Errorf("destAllowed(%s) = %v, want %v", a, got, want)
		}
	}
	if !p.clientAllowed(netip.MustParseAddr("192.0.2.7")) {
		t.Error("client 192.0.2.7 not in allow-client ::ffff:192.0.2.0/120")
	}
}
