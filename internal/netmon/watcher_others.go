//go:build !linux

package netmon

import (
	"context"
	"fmt"
	"runtime"
)

// Watcher follows one namespace; rtnetlink exists only on Linux.
type Watcher struct{}

// New reports that rtnetlink is not available on this system.
func New(cfg Config) (*Watcher, error) {
	return nil, fmt.Errorf("netmon: not supported on %s/%s (needs Linux rtnetlink)", runtime.GOOS, runtime.GOARCH)
}

// Subscribe is not supported off Linux.
func (w *Watcher) Subscribe(buf int) (<-chan Event, func()) {
	ch := make(chan Event)
	close(ch)
	return ch, func() {}
}

// Ready is not supported off Linux.
func (w *Watcher) Ready() <-chan struct{} { return make(chan struct{}) }

// State is empty off Linux.
func (w *Watcher) State() State { return State{} }

// Run is not supported off Linux.
func (w *Watcher) Run(ctx context.Context) error {
	return fmt.Errorf("netmon: not supported on %s/%s", runtime.GOOS, runtime.GOARCH)
}
