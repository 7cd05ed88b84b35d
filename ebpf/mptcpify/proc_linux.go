//go:build linux

package mptcpify

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ownPIDScope is the PID namespace our process ids are numbered in: ours,
// as dev and inode of /proc/self/ns/pid; {0, 0} for the initial one. It is
// an error when the /proc mounted here belongs to another PID namespace:
// the pids a user reads from ps would then not be ours.
func ownPIDScope() (mptcpifyPidScope, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return mptcpifyPidScope{}, fmt.Errorf("mptcpify: our PID namespace: %w", err)
	}
	self, err := os.Readlink("/proc/self")
	if err != nil || self != strconv.Itoa(os.Getpid()) {
		return mptcpifyPidScope{}, fmt.Errorf("mptcpify: the /proc mounted here shows another PID namespace than ours (/proc/self is %q, our pid %d): pids cannot be scoped; mount a /proc of our namespace (unshare --mount-proc) or use a cgroup", self, os.Getpid())
	}
	if st.Ino == initPIDNSIno {
		return mptcpifyPidScope{}, nil
	}
	// bpf_get_ns_current_pid_tgid compares dev with the kernel's own
	// encoding of nsfs's device (MKDEV: major << 20 | minor), not stat's.
	return mptcpifyPidScope{Dev: uint64(unix.Major(uint64(st.Dev)))<<20 | uint64(unix.Minor(uint64(st.Dev))), Ino: st.Ino}, nil
}

// inOurPIDNS checks that process pid's active PID namespace is ours: a
// process of a namespace nested below ours shows in our /proc, but the
// program numbers only tasks of exactly the loader's namespace.
func inOurPIDNS(pid int) error {
	var ours, theirs unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &ours); err != nil {
		return fmt.Errorf("our PID namespace: %w", err)
	}
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/pid", &theirs); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pid %d: %w", pid, errNoProcess)
		}
		return fmt.Errorf("pid %d: its PID namespace: %w", pid, err)
	}
	if ours.Dev != theirs.Dev || ours.Ino != theirs.Ino {
		return fmt.Errorf("pid %d lives in another PID namespace (inode %d, nested in ours %d): only processes of our own namespace can be scoped by pid; put it in a cgroup instead", pid, theirs.Ino, ours.Ino)
	}
	return nil
}

// startTicks is the start time of process pid in ticks since boot as the
// program computes it: /proc/PID/stat field 22, less our time namespace's
// boottime offset (which /proc adds).
func startTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return 0, fmt.Errorf("pid %d: %w", pid, errNoProcess)
		}
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: unreadable /proc/%d/stat", pid, pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("pid %d: unreadable /proc/%d/stat", pid, pid)
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("pid %d: start time %q: %w", pid, f[19], err)
	}
	off, err := boottimeOffsetTicks()
	if err != nil {
		return 0, err
	}
	return uint64(int64(t) - off), nil
}

// boottimeOffsetTicks is our time namespace's boottime offset, in ticks
// (0 outside a time namespace, or before Linux 5.6).
func boottimeOffsetTicks() (int64, error) {
	b, err := os.ReadFile("/proc/self/timens_offsets")
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mptcpify: read time namespace offsets: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && (f[0] == "boottime" || f[0] == "7") { // CLOCK_BOOTTIME = 7
			sec, err1 := strconv.ParseInt(f[1], 10, 64)
			nsec, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				return 0, fmt.Errorf("mptcpify: time namespace offsets: %q", line)
			}
			return sec*userHZ + nsec/(1e9/userHZ), nil
		}
	}
	return 0, nil
}
