package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/relay"
)

func init() {
	register(&cli.Command{
		Name:  "relay",
		Usage: "SOCKS5 relay over MPTCP (server, or a local entry chained to an upstream proxy)",
		Description: `Server on a proxy host (clients must authenticate or be allow-listed):
   gigapath relay --listen 0.0.0.0:1080 --credentials /etc/gigapath/users
   Local entry on a dual-homed client, chained to it over MPTCP:
   gigapath relay --listen 127.0.0.1:1080 --upstream socks5://user:pass@proxy:1080
   curl --socks5-hostname 127.0.0.1:1080 https://example.org/
   From the relay: section of the node's policy file (the daemon's file;
   flags given on the command line win over the file's values):
   gigapath relay --config /etc/gigapath/gigapath.yaml
   See docs/relay.md.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "read the relay: section of the policy `FILE` (gigapath run's file); flags override it"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:1080", Usage: "SOCKS5 listen `ADDR:PORT`"},
			&cli.BoolFlag{Name: "no-mptcp", Usage: "listen with plain TCP instead of MPTCP"},
			&cli.StringFlag{Name: "upstream", Usage: "forward CONNECT and UDP ASSOCIATE through `socks5://[user:pass@]host:port` over MPTCP"},
			&cli.BoolFlag{Name: "upstream-mptcp", Usage: "dial destinations with MPTCP (default TCP)"},
			&cli.StringFlag{Name: "credentials", Usage: "require RFC 1929 auth; `FILE` has user:password lines"},
			&cli.StringSliceFlag{Name: "allow-client", Usage: "accept clients only from `CIDR` (repeatable)"},
			&cli.StringSliceFlag{Name: "allow-dest", Usage: "allow destinations in `CIDR`, overriding the built-in refusals (repeatable)"},
			&cli.StringSliceFlag{Name: "deny-dest", Usage: "refuse destinations in `CIDR` (repeatable; wins over allow-dest)"},
			&cli.DurationFlag{Name: "handshake-timeout", Value: 10 * time.Second, Usage: "bound on greeting, auth and request"},
			&cli.DurationFlag{Name: "dial-timeout", Value: 10 * time.Second, Usage: "bound on connecting to the destination"},
			&cli.DurationFlag{Name: "idle-timeout", Usage: "close connections idle this long in both directions (0: never)"},
			&cli.DurationFlag{Name: "drain-timeout", Value: 30 * time.Second, Usage: "on SIGTERM, let transfers finish this long"},
			&cli.IntFlag{Name: "max-conns", Usage: "cap on concurrent connections (0: none)"},
			&cli.IntFlag{Name: "max-conns-per-client", Usage: "cap on concurrent connections per client IP (0: none)"},
			&cli.BoolFlag{Name: "no-udp", Usage: "refuse UDP ASSOCIATE"},
			&cli.BoolFlag{Name: "reuseport", Usage: "set SO_REUSEPORT on the listener: several relay processes share the address"},
			&cli.DurationFlag{Name: "scheduler-poll", Value: time.Second, Usage: "how often the MPTCP listener checks net.mptcp.scheduler and, on a change, re-opens so new connections get the new packet scheduler (0: never)"},
			&cli.StringFlag{Name: "congestion", Usage: "TCP congestion control `NAME` for the relay's sockets and every MPTCP subflow (default: the namespace's)"},
			&cli.StringFlag{Name: "transparent", Usage: "also accept connections redirected by nftables on `ADDR:PORT` (original destination from conntrack)"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on `ADDR` (/metrics)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format: text or json"},
			&cli.BoolFlag{Name: "debug", Usage: "log every connection at debug level"},
		},
		Action: relayAction,
	})
}

func relayAction(c *cli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf("relay: unexpected arguments %q", c.Args().Slice())
	}
	cfg, err := relayConfig(c)
	if err != nil {
		return err
	}
	lvl := slog.LevelInfo
	if c.Bool("debug") {
		lvl = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var logger *slog.Logger
	switch c.String("log-format") {
	case "text":
		logger = slog.New(slog.NewTextHandler(os.Stderr, opts))
	case "json":
		logger = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	default:
		return usageErrorf("--log-format %q: valid are text and json", c.String("log-format"))
	}
	srv, err := relay.New(cfg, logger)
	if err != nil {
		// Every New error is about the configuration given on the command line.
		return usageErrorf("relay: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ln, err := srv.Listen(ctx)
	if err != nil {
		return err
	}
	if cfg.Transparent != "" {
		tln, err := srv.ListenTransparent(ctx)
		if err != nil {
			ln.Close()
			return err
		}
		go srv.ServeTransparent(ctx, tln)
	}
	if addr := c.String("metrics"); addr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(srv.Collector())
		mln, err := net.Listen("tcp", addr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics listen %s: %w", addr, err)
		}
		hs := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(mln)
		defer hs.Close()
	}
	err = srv.Serve(ctx, ln)
	if errors.Is(err, relay.ErrServerClosed) {
		logger.Info("relay stopped")
		return nil
	}
	return err
}

// relayConfig is the relay's configuration: the relay: section of --config
// when given, with every flag set on the command line applied over it;
// otherwise the flags with their defaults.
func relayConfig(c *cli.Context) (relay.Config, error) {
	var cfg relay.Config
	file := c.String("config")
	if file != "" {
		p, err := policy.Load(file)
		if err != nil {
			return cfg, usageErrorf("%v", err)
		}
		if p.Relay == nil {
			return cfg, usageErrorf("relay: %s has no relay: section (see gigapath config example and docs/relay.md)", file)
		}
		cfg = *p.Relay
	}
	// Without a file every flag applies, defaults included; with one, only
	// those given.
	set := func(name string) bool { return file == "" || c.IsSet(name) }
	str := func(name string, dst *string) {
		if set(name) {
			*dst = c.String(name)
		}
	}
	boolean := func(name string, dst *bool) {
		if set(name) {
			*dst = c.Bool(name)
		}
	}
	dur := func(name string, dst *time.Duration) {
		if set(name) {
			*dst = c.Duration(name)
		}
	}
	integer := func(name string, dst *int) {
		if set(name) {
			*dst = c.Int(name)
		}
	}
	list := func(name string, dst *[]string) {
		if set(name) {
			*dst = c.StringSlice(name)
		}
	}
	str("listen", &cfg.Listen)
	boolean("no-mptcp", &cfg.NoMPTCP)
	str("upstream", &cfg.Upstream)
	boolean("upstream-mptcp", &cfg.UpstreamMPTCP)
	str("credentials", &cfg.Credentials)
	list("allow-client", &cfg.AllowClients)
	list("allow-dest", &cfg.AllowDest)
	list("deny-dest", &cfg.DenyDest)
	dur("handshake-timeout", &cfg.HandshakeTimeout)
	dur("dial-timeout", &cfg.DialTimeout)
	dur("idle-timeout", &cfg.IdleTimeout)
	dur("drain-timeout", &cfg.DrainTimeout)
	integer("max-conns", &cfg.MaxConns)
	integer("max-conns-per-client", &cfg.MaxConnsPerClient)
	boolean("no-udp", &cfg.DisableUDP)
	boolean("reuseport", &cfg.ReusePort)
	str("congestion", &cfg.Congestion)
	str("transparent", &cfg.Transparent)
	if set("scheduler-poll") {
		// The flag's 0 is never; the Config's zero means the default.
		if cfg.SchedulerPoll = c.Duration("scheduler-poll"); cfg.SchedulerPoll == 0 {
			cfg.SchedulerPoll = -1
		}
	}
	return cfg, nil
}
