package main

import (
	"context"
	"math"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"syscall"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
	"github.com/urfave/cli/v2"
)

// The daemon's GOGC by its side, unless the environment sets one.
//
// A proxy's heap is mostly long-lived connection state (~2.3 KB per
// connection at 50,000), and at the runtime's default of 100 the heap may
// grow to twice that before a collection: 4.6 KB of RSS per connection,
// over the 4 KiB a proxy's daemon may take (docs/benchmarks.md, "a
// carrier proxy's load": 2.7 KB at 50 in another run; the runs were not
// side by side, so the CPU the extra collections cost is not measured).
//
// A client's heap is small, a few MiB, and at 100 a burst of new
// connections (their events, the create thread's accounts, the loop's
// state) brings one or two collections while it lasts, whose marking
// takes CPU from the applications and the create thread. At 400 (a first
// collection at 16 MiB rather than 4, then at five times the live heap
// rather than twice; nothing caps it but GOMEMLIMIT, if set) none came in
// the benchmark's 250-connection warm-up and 1,000-connection burst: the
// daemon's Go threads took 2.0 µs of CPU per connection in the burst
// rather than 5.4, in every batch, and it served at 0.982 of the in-kernel
// PM's rate rather than 0.937 on average over 23 alternated runs of each,
// from batch to batch between -0.036 and +0.074 (its create thread alone
// rose by 0.019 in the same runs) (docs/benchmarks.md, "burst", "Since
// (2026-12-06, 07:08-07:30 UTC)").
const (
	serverGCPercent = 50
	clientGCPercent = 400
)

// A client's daemon runs on one P (GOMAXPROCS=1) unless the environment
// sets GOMAXPROCS. Its work is the reaction to each new connection: the
// event reader, the loop and the create worker hand each connection to
// one another, and with a P each those hand-offs wake other threads. On
// one P they stay on the thread that runs: under a burst of 1,000
// connections 1.9-2.6 context switches and 74-87 µs of CPU per connection
// instead of 5.3 and 120 µs in the runs with two (docs/benchmarks.md,
// "burst"; separate runs on a shared machine, not alternated in one). A
// server's daemon keeps every P: it decodes dumps of tens of
// thousands of connections off the loop, which on one P would hold the
// loop up to a time slice. A policy without `side:` is a client's.

func init() {
	register(&cli.Command{
		Name:  "run",
		Usage: "run the path-manager daemon with a policy (SIGHUP reloads it, SIGUSR2 upgrades in place, SIGTERM stops)",
		Description: `Signals:
   SIGHUP   reload the policy file: validated first, then applied as a diff
   SIGUSR2  upgrade in place: check that the binary now at the path this
            process was started as (argv[0], symlinks followed afresh)
            accepts the same arguments and policy (run ... --check), then
            exec it in this process, leaving rules, routes, subflows, BPF
            programs and the path manager setting as they are; the new
            binary adopts them
   SIGTERM  stop: remove the rules and routes it made, restore
            net.mptcp.path_manager

Examples:
   gigapath run --config /etc/gigapath/gigapath.yaml
   gigapath --netns phone run -c policy.yaml --metrics-listen -
   install -m 0755 gigapath.new /usr/local/bin/gigapath && systemctl kill --kill-whom=main -s USR2 gigapath`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "policy `FILE` (see gigapath config example)"},
			&cli.StringFlag{Name: "status-socket", Usage: "override the policy's status_socket `PATH`"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "override the policy's metrics.listen `ADDR` (\"-\" disables)"},
			&cli.StringFlag{Name: "state-dir", Value: "/run/gigapath", EnvVars: []string{"GIGAPATH_STATE_DIR"}, Usage: "`DIR` for what the daemon remembers across restarts: its address ids, the endpoints it made and the subflows its telemetry followed (\"\": nothing on disk)"},
			&cli.BoolFlag{Name: "check", Usage: "check the arguments, the policy and the namespace, then exit 0 without running (an upgrade in place runs the new binary so)"},
		},
		Action: runDaemon,
	})
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
	if err := buildRefuses(file, p); err != nil {
		return err
	}
	if c.Bool("check") {
		if ns := netnsName(c); ns != "" {
			f, err := pathmgr.OpenNetNS(ns)
			if err != nil {
				return err
			}
			f.Close()
		}
		return nil
	}
	log := controller.NewLogger(os.Stderr, p.Log)
	switch gogc := os.Getenv("GOGC"); {
	case gogc == "":
		if p.Side == policy.SideServer {
			debug.SetGCPercent(serverGCPercent)
		} else {
			debug.SetGCPercent(clientGCPercent)
		}
	case gogc != "off":
		if _, err := strconv.ParseInt(gogc, 10, 32); err != nil {
			// The runtime takes such a value for 100, silently.
			log.Warn("GOGC is neither a whole number nor off: the Go runtime uses 100", "GOGC", gogc)
		}
	}
	if os.Getenv("GOMAXPROCS") == "" && p.Side == policy.SideClient {
		runtime.GOMAXPROCS(1)
	}
	log.Info("Go runtime", "gomaxprocs", runtime.GOMAXPROCS(0), "gogc", gcPercent(),
		"why", "a client runs on one P with GOGC 400, a server with GOGC 50, unless GOMAXPROCS or GOGC is set (docs/daemon.md)")
	stopProfiles, err := startProfiles()
	if err != nil {
		return err
	}
	defer func() {
		if err := stopProfiles(); err != nil {
			log.Warn("profiles", "err", err)
		}
	}()
	inh := controller.Inherit(log)
	ctl, err := controller.New(controller.Config{
		Policy: p, NetNS: netnsName(c), Logger: log,
		StatusSocket: c.String("status-socket"), MetricsListen: c.String("metrics-listen"),
		StateDir: c.String("state-dir"),
		Handoff:  inh.Handoff, HeldLinks: inh.HeldLinks, HeldTelemetryFD: inh.HeldTelemetryFD, HeldListeners: inh.HeldListeners,
		// The profiles end at an upgrade's exec: the files are finished,
		// and a CPU profile's SIGPROF does not reach the new binary
		// before its runtime can handle it (default action: terminate).
		// The new binary starts profiles of its own.
		BeforeExec: func() {
			if err := stopProfiles(); err != nil {
				log.Warn("profiles", "err", err)
			}
		},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	term := controller.EarlyStop()
	upgraded := term != nil
	if term == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		term = ch
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(hup)
	defer signal.Stop(usr2)
	stopWhenReady := func(why string) {
		select {
		case <-ctl.Ready():
			if why != "" {
				log.Info(why)
			}
		case <-ctx.Done():
		}
		cancel()
	}
	if inh.Stop {
		// The previous binary was asked to stop while it was handing over:
		// adopt (so that the rules and routes are this process's), then
		// stop and clean up.
		go stopWhenReady("a stop was asked for during the upgrade: stopping")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-term:
				// A second SIGTERM or ^C kills the default way.
				signal.Reset(syscall.SIGTERM, syscall.SIGINT)
				if upgraded {
					// The rules and routes are the previous binary's until
					// the routing manager has adopted them: stop after the
					// first reconciliation, so that they are removed.
					stopWhenReady("")
				}
				cancel()
				return
			case <-hup:
				if err := ctl.ReloadFile(ctx, file); err != nil {
					log.Error("reload", "file", file, "err", err)
				} else {
					log.Info("reload done", "file", file)
				}
			case <-usr2:
				// The check runs the new binary; a stop meanwhile cancels
				// ctx, which refuses the upgrade (stopping wins).
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := ctl.Upgrade(ctx, controller.UpgradeRequest{})
					switch {
					case err == nil:
					case ctx.Err() != nil:
						log.Info("stop asked for during the upgrade check: not upgrading", "err", err)
					default:
						log.Error("upgrade refused, still running", "err", err)
					}
				}()
			}
		}
	}()
	// Run returns when ctx ends, when a subsystem fails, or when an
	// upgrade's exec failed; after a successful upgrade this process is
	// the new binary.
	err = ctl.Run(ctx)
	cancel()
	return err
}

// gcPercent is the collector's GOGC in effect ("off": none), as the
// runtime reports it.
func gcPercent() string {
	m := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 {
		return "unknown"
	}
	if v := m[0].Value.Uint64(); v <= math.MaxInt32 {
		return strconv.FormatUint(v, 10)
	}
	return "off" // GOGC=off: the runtime reports -1
}
