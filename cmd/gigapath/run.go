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
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
	"github.com/urfave/cli/v2"
)

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
   install -m 0755 gigapath.new /usr/local/bin/gigapath && systemctl kill -s USR2 gigapath`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "policy `FILE` (see gigapath config example)"},
			&cli.StringFlag{Name: "status-socket", Usage: "override the policy's status_socket `PATH`"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "override the policy's metrics.listen `ADDR` (\"-\" disables)"},
			&cli.BoolFlag{Name: "check", Usage: "check the arguments, the policy and the namespace, then exit 0 without running (an upgrade in place runs the new binary so)"},
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
	log := newLogger(p)
	exe, exeErr := startedAs()
	hand, err := takeHandoff()
	if err != nil {
		log.Warn("ignoring the handoff", "err", err)
	}
	held := takeHeldLinks(log)
	ctl, err := controller.New(controller.Config{
		Policy: p, NetNS: netnsName(c), Logger: log,
		StatusSocket: c.String("status-socket"), MetricsListen: c.String("metrics-listen"),
		Handoff: hand, HeldLinks: held,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(c.Context)
	defer cancel(nil)
	term := upgradeTerm
	if term == nil {
		term = make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	}
	upgraded := upgradeTerm != nil
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(hup)
	defer signal.Stop(usr2)
	if os.Getenv(stopEnv) == "1" {
		// The previous binary was asked to stop while it was handing over.
		os.Unsetenv(stopEnv)
		go func() {
			select {
			case <-ctl.Ready():
				log.Info("a stop was asked for during the upgrade: stopping")
				cancel(nil)
			case <-ctx.Done():
			}
		}()
	}
	var memfd *os.File // the handoff's, made before the point of no return
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-term:
				// A second SIGTERM or ^C kills the default way.
				signal.Stop(term)
				if upgraded {
					// The rules and routes are the previous binary's until
					// the routing manager has adopted them: stop after the
					// first reconciliation, so that they are removed.
					select {
					case <-ctl.Ready():
					case <-ctx.Done():
					}
				}
				cancel(nil)
				return
			case <-hup:
				if err := ctl.ReloadFile(ctx, file); err != nil {
					log.Error("reload", "file", file, "err", err)
				} else {
					log.Info("reload done", "file", file)
				}
			case <-usr2:
				done := make(chan error, 1)
				go func() { done <- upgradeCheck(ctx, ctl, exe, exeErr) }()
				var err error
				select {
				case err = <-done:
				case <-term:
					// Stopping wins over an upgrade still being checked.
					signal.Stop(term)
					log.Info("stop asked for during the upgrade check: not upgrading")
					cancel(nil)
					return
				}
				if err == nil {
					memfd, err = newHandoffFile()
				}
				if err != nil {
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
	if !errors.Is(context.Cause(ctx), controller.ErrUpgrade) {
		return nil
	}
	return execUpgrade(exe, memfd, ctl.Handoff(), ctl.HeldLinks(), term)
}

// upgradeTerm is, in a binary started by an upgrade in place, the channel
// SIGTERM and SIGINT go to from package initialisation on, as early as this
// package can ask for them. Before that (the Go runtime's start and the
// other packages' initialisation, a few milliseconds) a SIGTERM still
// kills the process the default way: the kernel state is then as after a
// crash, and the next start adopts it.
var upgradeTerm = func() chan os.Signal {
	if _, ok := os.LookupEnv(handoffEnv); !ok {
		return nil
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	return ch
}()

// Environment of an upgrade in place: the memfd with the controller's
// Handoff, the held BPF link descriptors (comma-separated), and whether a
// stop was asked for while the old binary handed over.
const (
	handoffEnv = "GIGAPATH_HANDOFF_FD"
	heldEnv    = "GIGAPATH_HELD_BPF_LINKS"
	stopEnv    = "GIGAPATH_STOP_AFTER_UPGRADE"
)

// startedAs is the path this process was started as: argv[0], made
// absolute (through $PATH when it has no slash). An upgrade execs what is
// there then, following a symlink that now points elsewhere; os.Executable
// would give the old target, or the replaced, deleted file.
func startedAs() (string, error) {
	a := os.Args[0]
	if !strings.Contains(a, "/") {
		return exec.LookPath(a)
	}
	return filepath.Abs(a)
}

// upgradeCheck refuses an upgrade the daemon cannot carry out: before the
// first reconciliation, or when the binary at exe does not run or does not
// accept this process's own arguments and policy (run ... --check), so the
// new process would exit at once.
func upgradeCheck(ctx context.Context, ctl *controller.Controller, exe string, exeErr error) error {
	select {
	case <-ctl.Ready():
	default:
		return errors.New("the daemon is still starting")
	}
	if exeErr != nil {
		return fmt.Errorf("the path this process was started as is unknown: %w", exeErr)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	args := append(append([]string{}, os.Args[1:]...), "--check")
	out, err := exec.CommandContext(ctx, exe, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", exe, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newHandoffFile makes the memfd the handoff goes in, before the daemon
// stops undoing things: if the kernel refuses it, nothing has happened
// yet. MFD_NOEXEC_SEAL where the kernel knows it (6.3+; required when
// vm.memfd_noexec is 2).
func newHandoffFile() (*os.File, error) {
	fd, err := unix.MemfdCreate("gigapath-handoff", unix.MFD_NOEXEC_SEAL)
	if err == unix.EINVAL {
		fd, err = unix.MemfdCreate("gigapath-handoff", 0)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create for the handoff: %w", err)
	}
	// For the new binary: no FD_CLOEXEC (memfd_create without MFD_CLOEXEC).
	return os.NewFile(uintptr(fd), "gigapath-handoff"), nil
}

// execUpgrade replaces this process with the binary at exe, same
// arguments and environment, handing it state in memfd and the held BPF
// links. It returns only on failure; the rules and routes were left in
// place, so the next start (systemd's Restart=) adopts them.
func execUpgrade(exe string, memfd *os.File, state []byte, held []int, term <-chan os.Signal) error {
	if _, err := memfd.Write(state); err != nil {
		return fmt.Errorf("upgrade: write handoff: %w", err)
	}
	if _, err := memfd.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("upgrade: rewind handoff: %w", err)
	}
	fds := make([]string, len(held))
	for i, fd := range held {
		fds[i] = strconv.Itoa(fd)
	}
	env := []string{handoffEnv + "=" + strconv.Itoa(int(memfd.Fd())), heldEnv + "=" + strings.Join(fds, ",")}
	// A stop that came in while this binary handed over goes to the new
	// one, which adopts, then stops and cleans up.
	select {
	case <-term:
		env = append(env, stopEnv+"=1")
	default:
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, handoffEnv+"=") && !strings.HasPrefix(kv, heldEnv+"=") && !strings.HasPrefix(kv, stopEnv+"=") {
			env = append(env, kv)
		}
	}
	err := syscall.Exec(exe, os.Args, env)
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

// takeHeldLinks takes the BPF link descriptors an upgrading predecessor
// held across the exec ($GIGAPATH_HELD_BPF_LINKS), marks them
// close-on-exec at once (no child inherits them) and removes the variable.
// Only descriptors that are BPF links are taken; the controller closes them
// after attaching its own programs.
func takeHeldLinks(log *slog.Logger) []int {
	v, ok := os.LookupEnv(heldEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(heldEnv)
	var out []int
	for _, f := range strings.Split(v, ",") {
		if f == "" {
			continue
		}
		fd, err := strconv.Atoi(f)
		name := ""
		if err == nil && fd >= 3 {
			name, err = os.Readlink("/proc/self/fd/" + f)
		}
		if err != nil || name != "anon_inode:bpf_link" {
			log.Warn("held BPF link from the previous binary: not a BPF link, left alone", "fd", f, "is", name, "err", err)
			continue
		}
		unix.CloseOnExec(fd)
		out = append(out, fd)
	}
	return out
}
