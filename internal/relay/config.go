package relay

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

// Config is the relay's configuration: the flags of `gigapath relay` and
// the `relay:` section of the daemon's YAML file. Zero values pick the
// defaults documented on each field.
type Config struct {
	// Listen is the SOCKS5 listen address, host:port (default 127.0.0.1:1080).
	Listen string `yaml:"listen"`
	// NoMPTCP listens with plain TCP instead of MPTCP.
	NoMPTCP bool `yaml:"no_mptcp"`
	// Upstream, when set (socks5://[user:pass@]host:port), turns the relay
	// into a local entry: each CONNECT and UDP ASSOCIATE is forwarded
	// through that SOCKS5 proxy over an MPTCP control connection.
	Upstream string `yaml:"upstream"`
	// UpstreamMPTCP dials destinations with MPTCP instead of TCP (server
	// mode). The hop to an Upstream proxy is always MPTCP.
	UpstreamMPTCP bool `yaml:"upstream_mptcp"`
	// Credentials is a file of `user:password` lines; when set, clients
	// must authenticate with RFC 1929 username/password.
	Credentials string `yaml:"credentials"`
	// AllowClients restricts clients to these CIDRs (empty: any client).
	AllowClients []string `yaml:"allow_clients"`
	// AllowDest and DenyDest are destination CIDRs checked after name
	// resolution: deny wins, then allow, then the built-in refusal of
	// loopback, link-local, unspecified, multicast and own addresses.
	AllowDest []string `yaml:"allow_dest"`
	DenyDest  []string `yaml:"deny_dest"`
	// HandshakeTimeout bounds greeting, authentication and request (default 10s).
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// DialTimeout bounds the connection to the destination (default 10s).
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// IdleTimeout closes a connection with no data in either direction
	// for this long (0: never).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// DrainTimeout is how long Shutdown lets transfers finish (default 30s).
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// MaxConns and MaxConnsPerClient cap concurrent connections (0: no cap).
	MaxConns          int `yaml:"max_conns"`
	MaxConnsPerClient int `yaml:"max_conns_per_client"`
	// DisableUDP answers UDP ASSOCIATE with "command not supported".
	DisableUDP bool `yaml:"disable_udp"`
	// ReusePort sets SO_REUSEPORT on the SOCKS5 listener, so several relay
	// processes (same user) can listen on one address: the kernel spreads
	// new connections over them, and a new relay can start before the old
	// one drains.
	ReusePort bool `yaml:"reuse_port"`
	// SchedulerPoll is how often the MPTCP listener checks the network
	// namespace's packet scheduler (net.mptcp.scheduler): the kernel gives
	// accepted connections the listener's scheduler, chosen when the
	// listener was created, so on a change the relay opens a new listener
	// (SO_REUSEPORT) and retires the old one. 0 = every second; negative =
	// never (the listener keeps the scheduler it started with).
	SchedulerPoll time.Duration `yaml:"scheduler_poll"`
	// Congestion is the TCP congestion control (TCP_CONGESTION) for the
	// relay's sockets, listening and dialing, every MPTCP subflow included
	// (empty: the namespace's default). On MPTCP, loss-based control
	// (cubic) keeps both paths full where bbr leaves 3-11 points of the
	// links unused (docs/benchmarks.md).
	Congestion string `yaml:"congestion"`
	// Transparent, when set, is a second listen address (plain TCP) for
	// connections redirected to it by nftables (`redirect to :PORT`): their
	// original destination (SO_ORIGINAL_DST) is connected to as if the
	// client had asked for it with CONNECT, through Upstream when set.
	Transparent string `yaml:"transparent"`
}

// ErrOpenRelay is returned by New for a non-loopback listen address with
// neither credentials nor a client allow-list.
var ErrOpenRelay = errors.New("refusing to run an open relay")

// policy is the validated form of Config.
type policy struct {
	creds        []cred
	allowClients []netip.Prefix
	allowDest    []netip.Prefix
	denyDest     []netip.Prefix
	upstream     *upstream
}

type cred struct{ user, pass [32]byte }

type upstream struct {
	addr       string
	user, pass string
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:1080"
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.SchedulerPoll == 0 {
		c.SchedulerPoll = time.Second
	}
}

func parsePrefixes(what string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil {
				return nil, fmt.Errorf("%s %q: not a CIDR (10.0.0.0/8, fd00::/8) or address", what, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		// Addresses are compared unmapped, so ::ffff:10.0.0.0/104 must
		// become 10.0.0.0/8 or a deny rule spelled that way never matches.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// loadCredentials reads `user:password` lines; blank lines and lines
// starting with # are skipped.
func loadCredentials(path string) ([]cred, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	var out []cred
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, p, ok := strings.Cut(line, ":")
		if !ok || u == "" || len(u) > 255 || len(p) > 255 {
			return nil, fmt.Errorf("credentials %s line %d: want user:password (each 1-255 bytes)", path, n)
		}
		out = append(out, cred{sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("credentials %s: no user:password line", path)
	}
	return out, nil
}

// check compares against every entry in constant time (hashes have a fixed
// length, so neither the length nor the position of a match leaks).
func (p *policy) check(user, pass string) bool {
	u, pw := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	ok := 0
	for _, c := range p.creds {
		ok |= subtle.ConstantTimeCompare(u[:], c.user[:]) & subtle.ConstantTimeCompare(pw[:], c.pass[:])
	}
	return ok == 1
}

// redactUpstream hides the password of an upstream URL, even one that does
// not parse, so an error about it can be shown and logged.
func redactUpstream(s string) string {
	i := strings.Index(s, "://")
	j := strings.LastIndex(s, "@")
	if i < 0 || j < i {
		return s
	}
	user, _, hasPass := strings.Cut(s[i+3:j], ":")
	if !hasPass {
		return s
	}
	return s[:i+3] + user + ":xxxxx" + s[j:]
}

func parseUpstream(s string) (*upstream, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "socks5" && u.Scheme != "socks5h") || u.Host == "" {
		return nil, fmt.Errorf("upstream %q: want socks5://[user:pass@]host:port", redactUpstream(s))
	}
	up := &upstream{addr: u.Host}
	if u.Port() == "" {
		up.addr = net.JoinHostPort(u.Hostname(), "1080")
	}
	if u.User != nil {
		up.user = u.User.Username()
		up.pass, _ = u.User.Password()
		if len(up.user) == 0 || len(up.user) > 255 || len(up.pass) > 255 {
			return nil, fmt.Errorf("upstream %q: user and password must have 1-255 bytes", redactUpstream(s))
		}
	}
	return up, nil
}

// isLoopbackListen reports whether host:port only accepts local clients.
func isLoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// Check validates c as New does, except that it does not read the
// credentials file (a set Credentials counts as credentials): addresses,
// CIDRs, the upstream URL, the caps, and the open-relay refusal. The
// daemon's policy loader runs it on the `relay:` section, so `gigapath
// config check` finds what `gigapath relay --config` would refuse.
func (c Config) Check() error {
	c.setDefaults()
	_, err := c.check(false)
	return err
}

func (c *Config) validate() (*policy, error) { return c.check(true) }

// check validates c; readCreds loads the credentials file.
func (c *Config) check(readCreds bool) (*policy, error) {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return nil, fmt.Errorf("listen %q: want host:port: %v", c.Listen, err)
	}
	p := &policy{}
	var err error
	if p.allowClients, err = parsePrefixes("allow-client", c.AllowClients); err != nil {
		return nil, err
	}
	if p.allowDest, err = parsePrefixes("allow-dest", c.AllowDest); err != nil {
		return nil, err
	}
	if p.denyDest, err = parsePrefixes("deny-dest", c.DenyDest); err != nil {
		return nil, err
	}
	hasCreds := c.Credentials != ""
	if hasCreds && readCreds {
		if p.creds, err = loadCredentials(c.Credentials); err != nil {
			return nil, err
		}
	}
	if c.Upstream != "" {
		if p.upstream, err = parseUpstream(c.Upstream); err != nil {
			return nil, err
		}
	}
	if c.MaxConns < 0 || c.MaxConnsPerClient < 0 {
		return nil, fmt.Errorf("max-conns and max-conns-per-client must be >= 0 (0: no cap)")
	}
	if c.Transparent != "" {
		if _, _, err := net.SplitHostPort(c.Transparent); err != nil {
			return nil, fmt.Errorf("transparent %q: want host:port: %v", c.Transparent, err)
		}
		if !isLoopbackListen(c.Transparent) && len(p.allowClients) == 0 {
			return nil, fmt.Errorf("%w on transparent %s: it has no authentication; listen on 127.0.0.1 (nftables redirect goes there) or add --allow-client CIDR", ErrOpenRelay, c.Transparent)
		}
	}
	if !isLoopbackListen(c.Listen) && !hasCreds && len(p.allowClients) == 0 {
		return nil, fmt.Errorf("%w on %s: anyone who can reach it could use it; add --credentials FILE or --allow-client CIDR, or listen on 127.0.0.1", ErrOpenRelay, c.Listen)
	}
	return p, nil
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAllowed applies --allow-client.
func (p *policy) clientAllowed(a netip.Addr) bool {
	return len(p.allowClients) == 0 || inAny(a.Unmap(), p.allowClients)
}

// destAllowed applies --deny-dest, --allow-dest and the built-in refusals;
// own reports whether a is one of the host's addresses.
func (p *policy) destAllowed(a netip.Addr, own func(netip.Addr) bool) bool {
	a = a.Unmap()
	if inAny(a, p.denyDest) {
		return false
	}
	if inAny(a, p.allowDest) {
		return true
	}
	if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() ||
		a.IsMulticast() || a.IsInterfaceLocalMulticast() || (a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
		return false
	}
	return !own(a)
}
