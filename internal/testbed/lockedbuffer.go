package testbed

import (
	"bytes"
	"strings"
	"sync"
)

// LockedBuffer collects a process's output (cmd.Stdout, cmd.Stderr) so
// that it can be read while the process runs: os/exec copies into it from
// a goroutine of its own.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is what was written so far, without leading and trailing space
// (for a message).
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(l.b.String())
}
