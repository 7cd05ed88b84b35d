// Package bpffs makes sure a BPF file system is mounted where gigapath pins
// its programs, maps and links so they outlive the command that loaded them.
package bpffs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Root is where the BPF file system is expected.
const Root = "/sys/fs/bpf"

// Dir is gigapath's directory in it.
const Dir = Root + "/gigapath"

// RemoveEmpty removes dir and then its parents up to (not including) Dir
// while they are empty; errors other than "not empty" are returned.
func RemoveEmpty(dir string) error {
	for d := filepath.Clean(dir); d != Dir && len(d) > len(Dir); d = filepath.Dir(d) {
		if err := os.Remove(d); err != nil {
			if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("bpffs: %w", err)
		}
	}
	return nil
}
