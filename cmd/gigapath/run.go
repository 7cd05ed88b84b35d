package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "run",
		Usage: "run the path-manager daemon with a policy (SIGHUP reloads it, SIGUSR2 upgrades in place, SIGTERM stops)",
		Description: `Signals:
   SIGHUP   reload the policy file: validated first, then applied as a diff
   SIGUSR2  upgrade in place: check that the binary on disk (the path this
            process was started from) accepts the policy, then exec it in
            this process, leaving rules, routes, subflows and the path
            manager setting as they are; the new binary adopts them
   SIGTERM  stop: remove the rules and routes it made, restore
            net.mptcp.path_manager

Examples:
   gigapath run --config /etc/gigapath/gigapath.yaml
   gigapath --netns phone run -c policy.yaml --metrics-listen -
   install -m 0755 gigapath.new /usr/local/bin/gigapath && systemctl kill -s USR2 gigapath`,
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
	// The path the binary was started from: an upgrade execs what is
	// there then (os.Executable would name the replaced, deleted file).
	exe, exeErr := os.Executable()
	exe = strings.TrimSuffix(exe, " (deleted)")
	hand, err := takeHandoff()
	if err != nil {
		log.Warn("ignoring the handoff", "err", err)
	}
	ctl, err := controller.New(controller.Config{
		Policy: p, NetNS: netnsName(c), Logger: log,
		StatusSocket: c.String("status-socket"), MetricsListen: c.String("metrics-listen"),
		Handoff: hand,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(c.Context)
	defer cancel(nil)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(hup)
	defer signal.Stop(usr2)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-term:
				// A second SIGTERM or ^C kills the default way.
				signal.Stop(term)
				cancel(nil)
				return
			case <-hup:
				if err := ctl.ReloadFile(ctx, file); err != nil {
					log.Error("reload", "file", file, "err", err)
				} else {
					log.Info("reload done", "file", file)
				}
			case <-usr2:
				if err := upgradeCheck(ctx, ctl, exe, exeErr, file); err != nil {
					log.Error("upgrade refused, still running", "binary", exe, "err", err)
					continue
				}
				log.Info("upgrading in place", "binary", exe)
				cancel(controller.ErrUpgrade)
				return
			}
		}
	}()
	if err := ctl.Run(ctx); err != nil {
		return err
	}
	if errors.Is(context.Cause(ctx), controller.ErrUpgrade) {
		return execUpgrade(exe, ctl.Handoff())
	}
	return nil
}

// handoffEnv names the descriptor (a memfd) an upgrading process passes
// its controller's Handoff in.
const handoffEnv = "GIGAPATH_HANDOFF_FD"

// upgradeCheck refuses an upgrade the daemon cannot carry out: before the
// first reconciliation, or when the binary at exe does not run or does not
// accept the policy file (so the new process would exit at once).
func upgradeCheck(ctx context.Context, ctl *controller.Controller, exe string, exeErr error, file string) error {
	select {
	case <-ctl.Ready():
	default:
		return errors.New("the daemon is still starting")
	}
	if exeErr != nil {
		return fmt.Errorf("own executable unknown: %w", exeErr)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, exe, "config", "check", file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s config check %s: %v: %s", exe, file, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// execUpgrade replaces this process with the binary at exe, same
// arguments and environment, handing it state in a memfd. It returns only
// on failure; the rules and routes were left in place, so the next start
// (systemd's Restart=) adopts them.
func execUpgrade(exe string, state []byte) error {
	fd, err := unix.MemfdCreate("gigapath-handoff", 0) // no CLOEXEC: for the new binary
	if err != nil {
		return fmt.Errorf("upgrade: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "gigapath-handoff")
	if _, err := f.Write(state); err != nil {
		return fmt.Errorf("upgrade: write handoff: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("upgrade: rewind handoff: %w", err)
	}
	env := []string{handoffEnv + "=" + strconv.Itoa(fd)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, handoffEnv+"=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(exe, os.Args, env)
	f.Close()
	return fmt.Errorf("upgrade: exec %s: %w (rules and routes were left in place; the next start adopts them)", exe, err)
}

// takeHandoff reads and closes the descriptor an upgrading predecessor
// left in $GIGAPATH_HANDOFF_FD, and removes the variable so that children
// do not see it. No variable: no handoff.
func takeHandoff() ([]byte, error) {
	v, ok := os.LookupEnv(handoffEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(handoffEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: want a descriptor number of 3 or more", handoffEnv, v)
	}
	// Only a memfd of ours is read, not whatever the number happens to be.
	if name, err := os.Readlink("/proc/self/fd/" + v); err != nil || !strings.HasPrefix(name, "/memfd:gigapath-handoff") {
		return nil, fmt.Errorf("%s=%d is %q (%v), not gigapath's handoff memfd", handoffEnv, fd, name, err)
	}
	f := os.NewFile(uintptr(fd), "gigapath-handoff")
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 16<<20))
}
