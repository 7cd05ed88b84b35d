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
	if !isBPFFS(&st) {
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
	return unix.Statfs(Root, &st) == nil && isBPFFS(&st)
}

// isBPFFS compares the file system magic as the unsigned 32-bit number it
// is: Statfs_t.Type is int32 on 32-bit Linux, where 0xcafe4a11 is negative.
func isBPFFS(st *unix.Statfs_t) bool { return uint32(st.Type) == uint32(unix.BPF_FS_MAGIC) }
