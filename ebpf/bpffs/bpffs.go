// Package bpffs makes sure a BPF file system is mounted where gigapath pins
// its programs, maps and links so they outlive the command that loaded them.
package bpffs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Root is where the BPF file system is expected.
const Root = "/sys/fs/bpf"

// Dir is gigapath's directory in it.
const Dir = Root + "/gigapath"

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

// RemoveEmpty removes dir and then its parents up to (not including) Dir
// while they are empty; errors other than "not empty" are returned.
func RemoveEmpty(dir string) error {
	for d := filepath.Clean(dir); d != Dir && len(d) > len(Dir); d = filepath.Dir(d) {
		if err := os.Remove(d); err != nil {
			if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("bpffs: %w", err)
		}
	}
	return nil
}
