//go:build !linux

package routing

import (
	"fmt"
	"runtime"
)

// Manager keeps routing state; rtnetlink exists only on Linux.
type Manager struct{ cfg Config }

var errUnsupported = fmt.Errorf("routing: not supported on %s/%s (needs Linux rtnetlink)", runtime.GOOS, runtime.GOARCH)

// New reports that rtnetlink is not available on this system.
func New(cfg Config) (*Manager, error) { return nil, errUnsupported }

// Close does nothing off Linux.
func (m *Manager) Close() error { return nil }

// Table returns the table number of interface index.
func (m *Manager) Table(index int) uint32 { return m.cfg.Table(index) }

// Ensure is not supported off Linux.
func (m *Manager) Ensure(p Path) error { return errUnsupported }

// Remove is not supported off Linux.
func (m *Manager) Remove(index int) error { return errUnsupported }

// Cleanup is not supported off Linux.
func (m *Manager) Cleanup() error { return errUnsupported }

// Prune is not supported off Linux.
func (m *Manager) Prune(keep []int) error { return errUnsupported }

// Owned is not supported off Linux.
func (m *Manager) Owned() ([]Rule, []Route, error) { return nil, nil, errUnsupported }
