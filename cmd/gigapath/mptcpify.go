package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/ebpf/cgroup"
	"github.com/gigapath/gigapath/ebpf/mptcpify"
)

func init() {
	register(&cli.Command{
		Name:  "mptcpify",
		Usage: "make other programs' TCP sockets MPTCP (BPF on socket(2), scoped to a cgroup)",
		Description: `A BPF program on the kernel's update_socket_protocol() hook (Linux >= 6.6,
   BPF tracing programs allowed: not under lockdown) turns IPv4/IPv6 stream
   sockets of the chosen cgroups into MPTCP sockets, like mptcpize but without
   LD_PRELOAD. Nothing outside the chosen cgroups changes.
   gigapath mptcpify run -- microsocks -i 127.0.0.1 -p 1085
   gigapath mptcpify attach --cgroup system.slice/danted.service
   gigapath mptcpify status -j
   gigapath mptcpify detach`,
		Subcommands: []*cli.Command{
			{
				Name:      "run",
				Usage:     "run CMD in a fresh cgroup whose TCP sockets are MPTCP; exits with CMD's status",
				ArgsUsage: "-- CMD [ARGS...]",
				Action:    mptcpifyRun,
			},
			{
				Name:  "attach",
				Usage: "make a cgroup's (and its descendants') sockets MPTCP until detach; pinned in " + mptcpify.DefaultPinDir,
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "cgroup", Usage: "cgroup v2 `PATH` (absolute, or relative to the cgroup v2 mount); repeatable"},
					&cli.IntSliceFlag{Name: "pid", Usage: "also process `PID`; repeatable"},
				},
				Action: mptcpifyAttach,
			},
			{
				Name:  "detach",
				Usage: "remove cgroups from the scope, or (without --cgroup/--pid) remove the program",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "cgroup", Usage: "cgroup v2 `PATH` to take out of the scope; repeatable"},
					&cli.IntSliceFlag{Name: "pid", Usage: "process `PID` to take out of the scope; repeatable"},
				},
				Action: mptcpifyDetach,
			},
			{
				Name:   "status",
				Usage:  "say whether the kernel supports it, whether it is attached, and for whom",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print JSON"}},
				Action: mptcpifyStatus,
			},
		},
	})
}

func mptcpifyRun(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		return usageErrorf("mptcpify run: want a command: gigapath mptcpify run -- CMD [ARGS...]")
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		return usageErrorf("mptcpify run: command %q: %v", args[0], err)
	}
	m, err := mptcpify.Load()
	if err != nil {
		return err
	}
	defer m.Close()
	cg, err := cgroup.Create("gigapath-mptcpify-" + strconv.Itoa(os.Getpid()))
	if err != nil {
		return err
	}
	defer cgroup.Remove(cg)
	if err := m.AddCgroup(cg); err != nil {
		return err
	}
	if err := m.Attach(); err != nil {
		return err
	}
	dir, err := os.Open(cg)
	if err != nil {
		return fmt.Errorf("mptcpify run: %w", err)
	}
	cmd := exec.Command(path, args[1:]...)
	cmd.Args[0] = args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer func() {
		signal.Stop(sigs) // no delivery after this returns
		close(sigs)       // ends the forwarding goroutine
	}()
	err = cmd.Start()
	dir.Close()
	if err != nil {
		return fmt.Errorf("mptcpify run: start %s: %w", args[0], err)
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	werr := cmd.Wait()
	killCgroup(cg)
	if err := cgroup.Remove(cg); err != nil {
		fmt.Fprintf(os.Stderr, "gigapath: mptcpify run: %v\n", err)
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code := ee.ExitCode()
		if code < 0 {
			code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
		}
		return cli.Exit(fmt.Sprintf("mptcpify run: %s: %v", args[0], werr), code)
	}
	if werr != nil {
		return fmt.Errorf("mptcpify run: %s: %w", args[0], werr)
	}
	return nil
}

// killCgroup ends whatever CMD left behind in its cgroup (daemonized
// children), so the cgroup can be removed.
func killCgroup(cg string) {
	if os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0) == nil {
		return
	}
	pids, _ := cgroup.Processes(cg)
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

func mptcpifyAttach(c *cli.Context) error {
	cgs, pids := c.StringSlice("cgroup"), c.IntSlice("pid")
	if c.NArg() > 0 {
		return usageErrorf("mptcpify attach: unexpected argument %q (use --cgroup PATH)", c.Args().First())
	}
	if len(cgs) == 0 && len(pids) == 0 {
		return usageErrorf("mptcpify attach: want --cgroup PATH (or --pid PID): the program is never attached system-wide")
	}
	// Validate everything before touching the (possibly live, pinned)
	// maps: a bad argument must not leave the good ones half-applied.
	if err := mptcpifyValidate(cgs, pids); err != nil {
		return err
	}
	dir := mptcpify.DefaultPinDir
	var (
		m   *mptcpify.Mptcpify
		err error
		new bool
	)
	if mptcpify.Pinned(dir) {
		m, err = mptcpify.OpenPinned(dir)
	} else {
		m, err = mptcpify.Load()
		new = true
	}
	if err != nil {
		return err
	}
	defer m.Close()
	// Every pid is checked before anything changes: nothing half-applied.
	for _, p := range pids {
		if err := m.CheckPID(p); err != nil {
			return err
		}
	}
	if gone, err := m.Prune(); err != nil {
		return err
	} else if len(gone) > 0 {
		fmt.Fprintf(os.Stderr, "mptcpify attach: removed the pids of exited processes: %v\n", gone)
	}
	for _, p := range cgs {
		if err := m.AddCgroup(p); err != nil {
			return err
		}
	}
	for _, p := range pids {
		if err := m.AddPID(p); err != nil {
			return err
		}
	}
	if new {
		if err := m.Attach(); err != nil {
			return err
		}
		if err := m.Pin(dir); err != nil {
			return err
		}
	}
	return nil
}

// mptcpifyValidate checks every --cgroup and --pid of attach up front:
// each cgroup must exist under the cgroup v2 mount and not be its root, each
// pid must name a live process. Any failure is a usage error (exit 2) naming
// the argument.
func mptcpifyValidate(cgs []string, pids []int) error {
	root, rootErr := cgroup.Mount()
	for _, p := range cgs {
		r, err := cgroup.Resolve(p)
		if err != nil {
			return usageErrorf("mptcpify attach: --cgroup: %v", err)
		}
		if _, err := cgroup.ID(r); err != nil {
			return usageErrorf("mptcpify attach: --cgroup %q: %v", p, err)
		}
		if rootErr == nil && filepath.Clean(r) == filepath.Clean(root) {
			return usageErrorf("mptcpify attach: --cgroup %q is the root of the cgroup hierarchy: that would make every process MPTCP; give a child cgroup", p)
		}
	}
	for _, pid := range pids {
		if pid <= 0 {
			return usageErrorf("mptcpify attach: --pid %d: want a positive process id", pid)
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return usageErrorf("mptcpify attach: --pid %d: no such process", pid)
		}
	}
	return nil
}

func mptcpifyDetach(c *cli.Context) error {
	cgs, pids := c.StringSlice("cgroup"), c.IntSlice("pid")
	dir := mptcpify.DefaultPinDir
	if !mptcpify.Pinned(dir) {
		return fmt.Errorf("mptcpify detach: not attached (nothing pinned under %s)", dir)
	}
	m, err := mptcpify.OpenPinned(dir)
	if err != nil {
		return err
	}
	defer m.Close()
	for _, p := range cgs {
		if err := m.RemoveCgroup(p); err != nil {
			return err
		}
	}
	for _, p := range pids {
		if err := m.RemovePID(p); err != nil {
			return err
		}
	}
	ids, left, err := m.Scope()
	if err != nil {
		return err
	}
	if len(cgs)+len(pids) > 0 && len(ids)+len(left) > 0 {
		return nil
	}
	if err := m.Unpin(); err != nil {
		return fmt.Errorf("mptcpify detach: %w", err)
	}
	os.Remove(dir)
	return nil
}

type mptcpifyCgroup struct {
	ID   uint64 `json:"id"`
	Path string `json:"path,omitempty"` // empty when the cgroup is gone
}

type mptcpifyState struct {
	Supported bool             `json:"supported"`
	Reason    string           `json:"reason,omitempty"`
	Attached  bool             `json:"attached"`
	PinDir    string           `json:"pin_dir"`
	Cgroups   []mptcpifyCgroup `json:"cgroups"`
	Pids      []int            `json:"pids"`
	// PidsExited are pids in the map whose process has exited: not in
	// scope (a recycled pid is not either); the next attach removes them.
	PidsExited []int `json:"pids_exited"`
}

func mptcpifyStatus(c *cli.Context) error {
	st := mptcpifyState{PinDir: mptcpify.DefaultPinDir, Cgroups: []mptcpifyCgroup{}, Pids: []int{}, PidsExited: []int{}}
	if err := mptcpify.Supported(); err != nil {
		st.Reason = err.Error()
	} else {
		st.Supported = true
	}
	if mptcpify.Pinned(st.PinDir) {
		m, err := mptcpify.OpenPinned(st.PinDir)
		if err != nil {
			return err
		}
		ids, pids, err := m.Scope()
		var stale []int
		if err == nil {
			stale, err = m.Stale()
		}
		m.Close()
		if err != nil {
			return err
		}
		st.PidsExited = append(st.PidsExited, stale...)
		st.Attached = true
		paths := cgroupPaths(ids)
		for _, id := range ids {
			st.Cgroups = append(st.Cgroups, mptcpifyCgroup{ID: id, Path: paths[id]})
		}
		st.Pids = append(st.Pids, pids...)
	}
	if jsonOutput(c) {
		return printJSON(st)
	}
	switch {
	case !st.Supported:
		fmt.Printf("supported: no (%s)\n", st.Reason)
	default:
		fmt.Println("supported: yes")
	}
	if !st.Attached {
		fmt.Println("attached: no")
		return nil
	}
	fmt.Printf("attached: yes (pinned in %s)\n", st.PinDir)
	for _, cg := range st.Cgroups {
		p := cg.Path
		if p == "" {
			p = "(removed)"
		}
		fmt.Printf("cgroup %d %s\n", cg.ID, p)
	}
	for _, p := range st.Pids {
		if slices.Contains(st.PidsExited, p) {
			fmt.Printf("pid %d (exited: not in scope)\n", p)
			continue
		}
		fmt.Printf("pid %d\n", p)
	}
	return nil
}

// cgroupPaths finds the cgroup directories with the given ids (inode
// numbers) in the cgroup v2 hierarchy.
func cgroupPaths(ids []uint64) map[uint64]string {
	out := map[uint64]string{}
	want := map[uint64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	root, err := cgroup.Mount()
	if err != nil || len(ids) == 0 {
		return out
	}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if id, err := cgroup.ID(p); err == nil && want[id] {
			out[id] = p
			if len(out) == len(want) {
				return filepath.SkipAll
			}
		}
		return nil
	})
	return out
}
