// Package mptcpify makes chosen processes' TCP sockets MPTCP ones, with a
// BPF program on the kernel's update_socket_protocol() hook (fmod_ret,
// Linux >= 6.6), scoped to cgroups v2 and/or process ids.
//
// Process ids are those of the loader's PID namespace, bound to the
// process's start time: a process of another PID namespace, or a later
// process that got a recycled pid, is not in scope.
//
// Lifecycle: Load, AddCgroup / AddPID, Attach; Close detaches unless the
// program was pinned with Pin, in which case it stays until Unpin (or until
// someone opens it with OpenPinned and calls Unpin). With no cgroup and no
// pid added nothing changes, even when attached.
package mptcpify

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/ebpf/bpffs"
	"github.com/gigapath/gigapath/ebpf/cgroup"
)

// DefaultPinDir is where the CLI pins the program.
var DefaultPinDir = filepath.Join(bpffs.Dir, "mptcpify")

// ErrUnsupported is wrapped by errors meaning this kernel cannot run
// mptcpify at all.
var ErrUnsupported = errors.New("mptcpify unsupported")

// unsupportedError says which kernel feature is missing.
type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string        { return e.msg }
func (e *unsupportedError) Is(target error) bool { return target == ErrUnsupported }

// Supported reports whether this kernel lets mptcpify load; the error says
// which kernel feature is missing, e.g. "mptcpify needs BPF tracing programs
// (fmod_ret); this kernel refuses them (lockdown=integrity)".
func Supported() error {
	if err := features.HaveProgramType(ebpf.Tracing); err != nil {
		return tracingRefused(err)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return &unsupportedError{fmt.Sprintf("mptcpify needs kernel BTF (/sys/kernel/btf/vmlinux): %v", err)}
	}
	var fn *btf.Func
	if err := spec.TypeByName("update_socket_protocol", &fn); err != nil {
		return &unsupportedError{"mptcpify needs the kernel function update_socket_protocol (Linux 6.6 or newer); this kernel's BTF has no such function"}
	}
	return nil
}

func tracingRefused(err error) error {
	why := err.Error()
	if errors.Is(err, unix.EPERM) {
		if level := lockdown(); level != "" && level != "none" {
			why = "lockdown=" + level
		} else {
			why = "operation not permitted"
		}
	} else if errors.Is(err, ebpf.ErrNotSupported) {
		why = "not supported"
	}
	return &unsupportedError{fmt.Sprintf("mptcpify needs BPF tracing programs (fmod_ret); this kernel refuses them (%s)", why)}
}

// lockdown returns the kernel lockdown level ("none", "integrity",
// "confidentiality"), or "" when it cannot be read. securityfs is mounted
// on a temporary directory if it is not mounted already.
func lockdown() string {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return ""
		}
		// "none [integrity] confidentiality"
		s := string(b)
		i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
		if i < 0 || j < i {
			return ""
		}
		return s[i+1 : j]
	}
	if l := read("/sys/kernel/security/lockdown"); l != "" {
		return l
	}
	dir, err := os.MkdirTemp("", "gigapath-securityfs-")
	if err != nil {
		return ""
	}
	defer os.Remove(dir)
	unmount, err := mountSecurityfs(dir)
	if err != nil {
		return ""
	}
	defer unmount()
	return read(filepath.Join(dir, "lockdown"))
}

// Mptcpify is the loaded program and its scope maps.
type Mptcpify struct {
	prog     *ebpf.Program
	cgroups  *ebpf.Map
	pids     *ebpf.Map
	pidScope *ebpf.Map
	link     link.Link
	// pidErr, when set, says why pids cannot be added by this process.
	pidErr error
}

// Load loads the program (not yet attached). On kernels that refuse it the
// error wraps ErrUnsupported and names the missing feature.
func Load() (*Mptcpify, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("mptcpify: raise memlock limit: %w", err)
	}
	var objs mptcpifyObjects
	if err := loadMptcpifyObjects(&objs, nil); err != nil {
		if serr := Supported(); serr != nil {
			return nil, serr
		}
		return nil, fmt.Errorf("mptcpify: load: %w", err)
	}
	m := &Mptcpify{prog: objs.Mptcpify, cgroups: objs.Cgroups, pids: objs.Pids, pidScope: objs.PidScope}
	// Pids are numbered in our PID namespace. When that cannot be told,
	// the scope stays the initial namespace's and AddPID refuses, naming
	// the reason; cgroups work either way.
	if ps, err := ownPIDScope(); err != nil {
		m.pidErr = err
	} else if err := m.pidScope.Put(uint32(0), &ps); err != nil {
		m.Close()
		return nil, fmt.Errorf("mptcpify: set the PID namespace: %w", err)
	}
	return m, nil
}

// AddCgroup puts the cgroup v2 at path (absolute, or relative to the
// cgroup v2 mount) and all its descendants in scope. The root cgroup is
// refused: that would be system-wide.
func (m *Mptcpify) AddCgroup(path string) error {
	id, p, err := cgroupID(path)
	if err != nil {
		return err
	}
	if root, err := cgroup.Mount(); err == nil && filepath.Clean(p) == filepath.Clean(root) {
		return fmt.Errorf("mptcpify: cgroup %q is the root of the hierarchy: that would make every process MPTCP; give a child cgroup", path)
	}
	if err := m.cgroups.Put(id, uint8(1)); err != nil {
		return fmt.Errorf("mptcpify: add cgroup %s: %w", p, err)
	}
	return nil
}

// RemoveCgroup takes the cgroup out of scope; a cgroup not in scope is not
// an error.
func (m *Mptcpify) RemoveCgroup(path string) error {
	id, p, err := cgroupID(path)
	if err != nil {
		return err
	}
	return m.RemoveCgroupID(id, p)
}

// RemoveCgroupID is RemoveCgroup by id, for cgroups already deleted.
func (m *Mptcpify) RemoveCgroupID(id uint64, name string) error {
	if err := m.cgroups.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("mptcpify: remove cgroup %s: %w", name, err)
	}
	return nil
}

func cgroupID(path string) (uint64, string, error) {
	p, err := cgroup.Resolve(path)
	if err != nil {
		return 0, "", fmt.Errorf("mptcpify: %w", err)
	}
	id, err := cgroup.ID(p)
	if err != nil {
		return 0, "", fmt.Errorf("mptcpify: %w", err)
	}
	return id, p, nil
}

// AddPID puts process pid (all its threads) in scope: pid as this
// process sees it, in its PID namespace. The entry is bound to the
// process's start time, so once it exits its pid, when recycled, is not
// in scope; Prune removes such entries.
func (m *Mptcpify) AddPID(pid int) error {
	start, err := m.checkPID(pid)
	if err != nil {
		return err
	}
	if err := m.pids.Put(uint32(pid), start); err != nil {
		return fmt.Errorf("mptcpify: add pid %d: %w", pid, err)
	}
	return nil
}

// errNoProcess is wrapped when a pid names no live process.
var errNoProcess = errors.New("no such process")

// CheckPID says whether AddPID(pid) would work, changing nothing: pid
// names a live process of our PID namespace, and the program numbers pids
// in that namespace too.
func (m *Mptcpify) CheckPID(pid int) error {
	_, err := m.checkPID(pid)
	return err
}

// checkPID is CheckPID, returning the process's start time.
func (m *Mptcpify) checkPID(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("mptcpify: pid %d: want a positive process id", pid)
	}
	if err := m.samePIDScope(); err != nil {
		return 0, err
	}
	if err := inOurPIDNS(pid); err != nil {
		return 0, fmt.Errorf("mptcpify: %w", err)
	}
	start, err := startTicks(pid)
	if err != nil {
		return 0, fmt.Errorf("mptcpify: %w", err)
	}
	return start, nil
}

// samePIDScope checks that pids given by this process mean what the
// program reads them as: the program numbers them in the PID namespace
// of whoever loaded it (for a pinned program, maybe another process).
func (m *Mptcpify) samePIDScope() error {
	if m.pidErr != nil {
		return m.pidErr
	}
	ours, err := ownPIDScope()
	if err != nil {
		return err
	}
	var theirs mptcpifyPidScope
	if err := m.pidScope.Lookup(uint32(0), &theirs); err != nil {
		return fmt.Errorf("mptcpify: read the PID namespace: %w", err)
	}
	if ours != theirs {
		return fmt.Errorf("mptcpify: the program was loaded in another PID namespace (inode %d; ours is %d): its pids are not ours; add pids from that namespace, or use a cgroup", nsIno(theirs), nsIno(ours))
	}
	return nil
}

// initPIDNSIno is the inode of the initial PID namespace
// (PROC_PID_INIT_INO), the same on every kernel.
const initPIDNSIno = 0xEFFFFFFC

// userHZ is the unit of /proc/PID/stat's start time, the same as the
// program's GP_USER_HZ (100 on every architecture gigapath builds for).
const userHZ = 100

func nsIno(s mptcpifyPidScope) uint64 {
	if s.Ino == 0 {
		return initPIDNSIno
	}
	return s.Ino
}

// Stale lists the pids whose process has exited (or whose pid now belongs
// to a later process): no socket of theirs is in scope any more. Only a
// process in the program's PID namespace can tell; elsewhere it returns
// nil, nil.
func (m *Mptcpify) Stale() ([]int, error) {
	if m.samePIDScope() != nil {
		return nil, nil
	}
	var (
		pid   uint32
		start uint64
		gone  []int
	)
	it := m.pids.Iterate()
	for it.Next(&pid, &start) {
		now, err := startTicks(int(pid))
		switch {
		case errors.Is(err, errNoProcess):
			gone = append(gone, int(pid))
		case err != nil:
			// Unreadable is not gone (hidepid, EIO): keep it, say why.
			return nil, fmt.Errorf("mptcpify: %w", err)
		case now != start:
			gone = append(gone, int(pid))
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("mptcpify: read pids: %w", err)
	}
	return gone, nil
}

// Prune removes the Stale pids and returns them.
func (m *Mptcpify) Prune() ([]int, error) {
	gone, err := m.Stale()
	if err != nil {
		return nil, err
	}
	for _, p := range gone {
		if err := m.RemovePID(p); err != nil {
			return nil, err
		}
	}
	return gone, nil
}

// RemovePID takes pid out of scope.
func (m *Mptcpify) RemovePID(pid int) error {
	if err := m.pids.Delete(uint32(pid)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("mptcpify: remove pid %d: %w", pid, err)
	}
	return nil
}

// Scope lists the cgroup ids and pids in scope.
func (m *Mptcpify) Scope() (cgroupIDs []uint64, pids []int, err error) {
	var (
		id uint64
		v  uint8
	)
	it := m.cgroups.Iterate()
	for it.Next(&id, &v) {
		cgroupIDs = append(cgroupIDs, id)
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("mptcpify: read cgroups: %w", err)
	}
	// Keys only: the values' layout differs in maps pinned by older
	// versions.
	var (
		prev any
		key  uint32
	)
	for {
		if err := m.pids.NextKey(prev, &key); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			return nil, nil, fmt.Errorf("mptcpify: read pids: %w", err)
		}
		pids = append(pids, int(key))
		prev = key
	}
	return cgroupIDs, pids, nil
}

// Attach hooks the program into socket(2). Attaching twice is an error.
func (m *Mptcpify) Attach() error {
	if m.link != nil {
		return errors.New("mptcpify: already attached")
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: m.prog, AttachType: ebpf.AttachModifyReturn})
	if err != nil {
		return fmt.Errorf("mptcpify: attach fmod_ret/update_socket_protocol: %w", err)
	}
	m.link = l
	return nil
}

// Attached reports whether the program is attached.
func (m *Mptcpify) Attached() bool { return m.link != nil }

// Link returns the attachment (nil before Attach), for a caller that must
// keep it alive across an exec: a duplicate of the link's descriptor keeps
// the program attached after Close, until that duplicate is closed too.
func (m *Mptcpify) Link() link.Link { return m.link }

const (
	pinLink    = "link"
	pinCgroups = "cgroups"
	pinPids    = "pids"
	pinPIDNS   = "pid_scope"
)

// Pin pins the link and the scope maps under dir (in a BPF file system,
// mounted on /sys/fs/bpf if needed) so the program outlives the process.
func (m *Mptcpify) Pin(dir string) error {
	if m.link == nil {
		return errors.New("mptcpify: pin: not attached")
	}
	if _, err := bpffs.Ensure(dir); err != nil {
		return fmt.Errorf("mptcpify: pin: %w", err)
	}
	if err := m.cgroups.Pin(filepath.Join(dir, pinCgroups)); err != nil {
		return fmt.Errorf("mptcpify: pin: %w", err)
	}
	if err := m.pids.Pin(filepath.Join(dir, pinPids)); err != nil {
		m.cgroups.Unpin()
		return fmt.Errorf("mptcpify: pin: %w", err)
	}
	if err := m.pidScope.Pin(filepath.Join(dir, pinPIDNS)); err != nil {
		m.cgroups.Unpin()
		m.pids.Unpin()
		return fmt.Errorf("mptcpify: pin: %w", err)
	}
	if err := m.link.Pin(filepath.Join(dir, pinLink)); err != nil {
		m.cgroups.Unpin()
		m.pids.Unpin()
		m.pidScope.Unpin()
		return fmt.Errorf("mptcpify: pin: %w", err)
	}
	return nil
}

// Pinned reports whether a pinned mptcpify exists under dir.
func Pinned(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, pinLink))
	return err == nil
}

// OpenPinned opens the program pinned under dir by Pin.
func OpenPinned(dir string) (*Mptcpify, error) {
	l, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("mptcpify: nothing pinned under %s (attach first)", dir)
		}
		return nil, fmt.Errorf("mptcpify: open pinned link: %w", err)
	}
	cg, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinCgroups), nil)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("mptcpify: open pinned map: %w", err)
	}
	pids, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinPids), nil)
	if err != nil {
		l.Close()
		cg.Close()
		return nil, fmt.Errorf("mptcpify: open pinned map: %w", err)
	}
	m := &Mptcpify{cgroups: cg, pids: pids, link: l}
	ps, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinPIDNS), nil)
	switch {
	case errors.Is(err, fs.ErrNotExist) || (err == nil && pids.ValueSize() != 8):
		// Pinned by a gigapath from before pids had a namespace and a
		// start time: it can still be listed and detached.
		if ps != nil {
			ps.Close()
		}
		m.pidErr = fmt.Errorf("mptcpify: the program pinned under %s comes from an older gigapath (pids without PID namespace and start time): detach it (gigapath mptcpify detach) and attach again", dir)
	case err != nil:
		m.Close()
		return nil, fmt.Errorf("mptcpify: open pinned map: %w", err)
	default:
		m.pidScope = ps
	}
	return m, nil
}

// Unpin removes the pins; the program goes away at Close.
func (m *Mptcpify) Unpin() error {
	var errs []error
	if m.link != nil {
		errs = append(errs, m.link.Unpin())
	}
	errs = append(errs, m.cgroups.Unpin(), m.pids.Unpin())
	if m.pidScope != nil {
		errs = append(errs, m.pidScope.Unpin())
	}
	return errors.Join(errs...)
}

// Close releases this process's hold on the program: detached unless
// pinned.
func (m *Mptcpify) Close() error {
	var errs []error
	if m.link != nil {
		errs = append(errs, m.link.Close())
		m.link = nil
	}
	if m.prog != nil {
		errs = append(errs, m.prog.Close())
	}
	errs = append(errs, m.cgroups.Close(), m.pids.Close())
	if m.pidScope != nil {
		errs = append(errs, m.pidScope.Close())
	}
	return errors.Join(errs...)
}
