// Package cgroup finds the cgroup v2 hierarchy and makes, fills, identifies
// and removes cgroups in it: what gigapath's BPF programs are scoped to.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Mount returns where the cgroup v2 hierarchy is mounted, read from
// /proc/mounts (e.g. /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid
// layout).
func Mount() (string, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", fmt.Errorf("find cgroup v2 mount: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return unescape(fields[1]), nil
		}
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("find cgroup v2 mount: read /proc/mounts: %w", err)
	}
	return "", errors.New("find cgroup v2 mount: no cgroup2 file system in /proc/mounts (mount one: mount -t cgroup2 none /sys/fs/cgroup)")
}

// unescape undoes the octal escapes (\040 for space) of /proc/mounts.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Resolve turns path into an absolute path inside the cgroup v2 hierarchy:
// an absolute path that is a cgroup v2 directory is kept (under the mount
// /proc/mounts lists, or under one it does not, such as a detached mount
// reached through /proc/self/fd/N), anything else is taken relative to the
// mount ("gigapath/relay" → /sys/fs/cgroup/unified/gigapath/relay). It
// fails when the result is not a cgroup v2 directory.
func Resolve(path string) (string, error) {
	if filepath.IsAbs(path) {
		if ok, err := isCgroup2(path); err == nil && ok {
			return path, nil
		}
	}
	root, err := Mount()
	if err != nil {
		return "", err
	}
	p := path
	if !filepath.IsAbs(p) || !within(root, p) {
		p = filepath.Join(root, strings.TrimPrefix(path, "/"))
	}
	ok, err := isCgroup2(p)
	if err != nil {
		return "", fmt.Errorf("cgroup %q: %w", path, err)
	}
	if !ok {
		return "", fmt.Errorf("cgroup %q: %s is not in the cgroup v2 hierarchy (mounted at %s)", path, p, root)
	}
	return p, nil
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// Create makes the cgroup dir (and its parents) under the cgroup v2 mount;
// dir is relative to the mount or absolute under it. It returns the absolute
// path. An existing cgroup is fine.
func Create(dir string) (string, error) {
	root, err := Mount()
	if err != nil {
		return "", err
	}
	p := dir
	if !filepath.IsAbs(p) || !within(root, p) {
		p = filepath.Join(root, strings.TrimPrefix(dir, "/"))
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup %s: %w", p, err)
	}
	return p, nil
}

// Remove deletes an empty cgroup. Processes that just exited may still be
// counted for a moment, so EBUSY is retried for up to a second.
func Remove(path string) error {
	deadline := time.Now().Add(time.Second)
	for {
		err := syscall.Rmdir(path)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ID returns the cgroup's id as bpf_get_current_cgroup_id() reports it: the
// inode number of its directory in the cgroup v2 file system.
func ID(path string) (uint64, error) {
	ino, err := inode(path)
	if err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", path, err)
	}
	return ino, nil
}

// AddProcess moves process pid (all its threads) into the cgroup.
func AddProcess(path string, pid int) error {
	f := filepath.Join(path, "cgroup.procs")
	if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move pid %d into cgroup %s: %w", pid, path, err)
	}
	return nil
}

// Processes lists the pids in the cgroup (not in its children).
func Processes(path string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", path, err)
	}
	var pids []int
	for _, l := range bytes.Fields(b) {
		if n, err := strconv.Atoi(string(l)); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}
