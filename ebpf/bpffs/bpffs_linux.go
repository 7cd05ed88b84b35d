//go:build linux

package bpffs

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Ensure mounts a BPF file system on Root if none is there and creates dir
// (and its parents) in it. It returns dir.
func Ensure(dir string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(Root, &st); err != nil {
		return "", fmt.Errorf("bpffs: %s: %w", Root, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", Root, "bpf", 0, "mode=0700"); err != nil {
			return "", fmt.Errorf("bpffs: mount a BPF file system on %s: %w", Root, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("bpffs: %w", err)
	}
	return dir, nil
}

// Mounted reports whether Root holds a BPF file system.
func Mounted() bool {
	var st unix.Statfs_t
	return unix.Statfs(Root, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}
