package main

import (
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "run",
		Usage: "run the path-manager daemon with a policy (SIGHUP reloads it, SIGTERM stops)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "policy `FILE` (see gigapath config example)"},
			&cli.StringFlag{Name: "status-socket", Usage: "override the policy's status_socket `PATH`"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "override the policy's metrics.listen `ADDR` (\"-\" disables)"},
		},
		Action: runDaemon,
	})
}

func newLogger(p *policy.Policy) *slog.Logger {
	lvl := slog.LevelInfo
	_ = lvl.UnmarshalText([]byte(p.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if strings.EqualFold(p.Log.Format, "json") {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func runDaemon(c *cli.Context) error {
	file := c.String("config")
	if file == "" {
		return usageErrorf("run: --config FILE is required (the policy; `gigapath config example` prints one)")
	}
	if c.NArg() != 0 {
		return usageErrorf("run: unexpected arguments %q", c.Args().Slice())
	}
	p, err := policy.Load(file)
	if err != nil {
		return usageErrorf("%v", err)
	}
	log := newLogger(p)
	ctl, err := controller.New(controller.Config{
		Policy: p, NetNS: netnsName(c), Logger: log,
		StatusSocket: c.String("status-socket"), MetricsListen: c.String("metrics-listen"),
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := ctl.ReloadFile(ctx, file); err != nil {
					log.Error("reload", "file", file, "err", err)
				} else {
					log.Info("reload done", "file", file)
				}
			}
		}
	}()
	return ctl.Run(ctx)
}
