package controller

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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Upgrade in place: the daemon execs a new binary in its own process (same
// PID, arguments and environment), which adopts the kernel state the old
// one leaves in place. What the kernel cannot tell the new process travels
// in a memfd ($GIGAPATH_HANDOFF_FD, see handoff), the BPF links held
// across the exec in $GIGAPATH_HELD_BPF_LINKS, the sockops program's
// telemetry map in $GIGAPATH_HELD_TELEMETRY_MAP, the join listeners in
// $GIGAPATH_HELD_LISTENERS, and a stop asked for during the handover in
// $GIGAPATH_STOP_AFTER_UPGRADE.
const (
	handoffEnv   = "GIGAPATH_HANDOFF_FD"
	heldEnv      = "GIGAPATH_HELD_BPF_LINKS"
	telemetryEnv = "GIGAPATH_HELD_TELEMETRY_MAP"
	listenersEnv = "GIGAPATH_HELD_LISTENERS"
	stopEnv      = "GIGAPATH_STOP_AFTER_UPGRADE"
)

// earlyStop is EarlyStop's channel: it takes SIGTERM and SIGINT from this
// package's initialisation on, in a process an upgrade started.
var earlyStop = func() chan os.Signal {
	if _, ok := os.LookupEnv(handoffEnv); !ok {
		return nil
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	return ch
}()

// EarlyStop returns, in a process an upgrade in place started, the
// channel SIGTERM and SIGINT have gone to since this package was
// initialised, as early as Go code can ask for them; nil in any other
// process. Before that (the Go runtime's start, a few milliseconds) a
// SIGTERM kills the process the default way: the kernel state is then as
// after a crash, and the next start adopts it.
func EarlyStop() <-chan os.Signal { return earlyStop }

// Inherited is what an upgrading predecessor passed to this process.
type Inherited struct {
	Handoff   []byte // Config.Handoff
	HeldLinks []int  // Config.HeldLinks
	// HeldTelemetryFD is Config.HeldTelemetryFD.
	HeldTelemetryFD int
	// HeldListeners is Config.HeldListeners.
	HeldListeners []int
	// Stop says a stop was asked for while the predecessor handed over:
	// the new process adopts, then stops and cleans up.
	Stop bool
}

// Inherit takes what an upgrading predecessor left in the environment and
// removes the variables, so that children do not see them. What cannot be
// read is logged and left out: the process then starts as after a crash
// (the held links that are not BPF links are left alone).
func Inherit(log *slog.Logger) Inherited {
	var in Inherited
	b, err := takeHandoff()
	if err != nil {
		log.Warn("ignoring the handoff", "err", err)
	}
	in.Handoff = b
	in.HeldLinks = takeHeldFDs(log, heldEnv, "BPF link", func(name string) bool { return name == "anon_inode:bpf_link" })
	in.HeldListeners = takeHeldFDs(log, listenersEnv, "join listener", func(name string) bool { return strings.HasPrefix(name, "socket:[") })
	for i, fd := range takeHeldFDs(log, telemetryEnv, "telemetry map", func(name string) bool { return name == "anon_inode:bpf-map" }) {
		if i == 0 {
			in.HeldTelemetryFD = fd
		} else {
			unix.Close(fd) // one map is handed over
		}
	}
	if os.Getenv(stopEnv) == "1" {
		in.Stop = true
	}
	os.Unsetenv(stopEnv)
	return in
}

// takeHandoff reads and closes the descriptor an upgrading predecessor
// left in $GIGAPATH_HANDOFF_FD, and removes the variable. No variable: no
// handoff.
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

// takeHeldFDs takes the descriptors an upgrading predecessor held across
// the exec in the variable env (the BPF links, the join listeners), marks
// them close-on-exec at once (no child inherits them) and removes the
// variable. Only descriptors that are what is (their /proc/self/fd link)
// are taken; Run closes the BPF links after attaching its own programs and
// adopts the listeners.
func takeHeldFDs(log *slog.Logger, env, what string, is func(string) bool) []int {
	v, ok := os.LookupEnv(env)
	if !ok {
		return nil
	}
	os.Unsetenv(env)
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
		if err != nil || !is(name) {
			log.Warn("held "+what+" from the previous binary: not one, left alone", "fd", f, "is", name, "err", err)
			continue
		}
		unix.CloseOnExec(fd)
		out = append(out, fd)
	}
	return out
}

// StartedAs is the path this process was started as: argv[0], made
// absolute (through $PATH when it has no slash). An upgrade execs what is
// there then, following a symlink that now points elsewhere; os.Executable
// would give the old target, or the replaced, deleted file.
func StartedAs() (string, error) {
	a := os.Args[0]
	if !strings.Contains(a, "/") {
		return exec.LookPath(a)
	}
	return filepath.Abs(a)
}

// UpgradeRequest names what an upgrade execs.
type UpgradeRequest struct {
	// Binary is the file to exec; "" is StartedAs.
	Binary string
	// Args are its arguments, argv[0] included; nil is os.Args.
	Args []string
}

// upgrade is an upgrade the loop accepted, carried to the end of Run.
type upgrade struct {
	binary  string
	args    []string
	memfd   *os.File // made before the point of no return
	handoff []byte   // the loop's state (makeHandoff)
	held    []int    // the BPF links held across the exec (holdLinks)
	// telemetry is the telemetry map held across the exec
	// (holdTelemetry), if any.
	telemetry []int
	// listeners are the join listeners held across the exec
	// (joinListeners.hold).
	listeners  []int
	log        *slog.Logger
	beforeExec func() // Config.BeforeExec
}

// Upgrade hands the daemon over to a new binary in this process (an
// upgrade in place). It refuses, with the reason, and changes nothing
// while the daemon is still starting, when the binary does not accept
// this process's arguments plus --check (it must parse them, load the
// policy, open the namespace and exit 0 without running) within 10 s, or
// when the memfd for the handoff cannot be made. Otherwise the loop stops
// and Run leaves the kernel state (rules, routes, subflows, BPF programs,
// net.mptcp.path_manager) in place, tells systemd RELOADING=1 and execs
// the binary with the same arguments and environment; Run returns only if
// the exec fails. A cancellation of ctx during the check refuses the
// upgrade (stopping wins); one after the loop stopped is passed on to the
// new binary (Inherited.Stop).
func (c *Controller) Upgrade(ctx context.Context, req UpgradeRequest) error {
	select {
	case <-c.ready:
	default:
		return errors.New("the daemon is still starting")
	}
	if req.Binary == "" {
		exe, err := StartedAs()
		if err != nil {
			return fmt.Errorf("the path this process was started as is unknown: %w", err)
		}
		req.Binary = exe
	}
	if req.Args == nil {
		req.Args = os.Args
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	check := append(append([]string{}, req.Args[1:]...), "--check")
	if out, err := exec.CommandContext(cctx, req.Binary, check...).CombinedOutput(); err != nil {
		why := strings.TrimSpace(string(out))
		if sig, ok := killedBy(err); ok && cctx.Err() == nil {
			why += fmt.Sprintf(" (the check was killed by %v before it answered: a signal sent to every process of the unit "+
				"reaches the check too; send the upgrade's SIGUSR2 to the main process only: "+
				"systemctl kill --kill-whom=main -s USR2 gigapath, or kill -USR2 MAINPID)", sig)
		}
		return fmt.Errorf("%s %s: %v: %s", req.Binary, strings.Join(check, " "), err, why)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("not upgrading: %w", ctx.Err())
	}
	memfd, err := newHandoffFile()
	if err != nil {
		return err
	}
	u := &upgrade{binary: req.Binary, args: req.Args, memfd: memfd, log: c.log, beforeExec: c.cfg.BeforeExec}
	select {
	case c.upgradeCh <- u:
		c.log.Info("upgrading in place", "binary", req.Binary)
		return nil
	case <-ctx.Done():
		u.abandon()
		return fmt.Errorf("not upgrading: %w", ctx.Err())
	case <-c.loopDone:
		u.abandon()
		return errors.New("not upgrading: the daemon is stopping")
	}
}

// killedBy is the signal that ended the process err is the exit of.
func killedBy(err error) (syscall.Signal, bool) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
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

// exec replaces this process with the new binary, handing it the state in
// the memfd and the held BPF links; stop passes on a stop asked for during
// the handover. It returns only on failure; the rules and routes were left
// in place, so the next start (systemd's Restart=) adopts them.
func (u *upgrade) exec(stop bool) error {
	if _, err := u.memfd.Write(u.handoff); err != nil {
		return fmt.Errorf("upgrade: write handoff: %w", err)
	}
	if _, err := u.memfd.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("upgrade: rewind handoff: %w", err)
	}
	env := []string{handoffEnv + "=" + strconv.Itoa(int(u.memfd.Fd())), heldEnv + "=" + joinFDs(u.held),
		telemetryEnv + "=" + joinFDs(u.telemetry), listenersEnv + "=" + joinFDs(u.listeners)}
	if stop {
		env = append(env, stopEnv+"=1")
	}
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc([]string{handoffEnv, heldEnv, telemetryEnv, listenersEnv, stopEnv}, func(v string) bool { return strings.HasPrefix(kv, v+"=") }) {
			env = append(env, kv)
		}
	}
	if u.beforeExec != nil {
		u.beforeExec()
	}
	err := syscall.Exec(u.binary, u.args, env)
	return fmt.Errorf("upgrade: exec %s: %w (rules and routes were left in place; the next start adopts them)", u.binary, err)
}

// joinFDs lists descriptors for an environment variable.
func joinFDs(fds []int) string {
	s := make([]string, len(fds))
	for i, fd := range fds {
		s[i] = strconv.Itoa(fd)
	}
	return strings.Join(s, ",")
}

// abandon releases an upgrade that will not happen.
func (u *upgrade) abandon() {
	u.memfd.Close()
	for _, fds := range [][]int{u.held, u.telemetry, u.listeners} {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	u.held, u.telemetry, u.listeners = nil, nil, nil
}
