//go:build !linux

package pathmgr

import (
	"context"
	"time"
)

// EventListener is unavailable outside Linux.
type EventListener struct{}

// ListenEvents returns an error: the MPTCP path manager is Linux only.
func ListenEvents(*Config) (*EventListener, error)              { return nil, errOS }
func (*EventListener) Receive(context.Context) ([]Event, error) { return nil, errOS }
func (*EventListener) Close() error                             { return errOS }
func (*EventListener) Only(...EventType) error                  { return errOS }
func (*EventListener) Backlog() (int, int, error)               { return 0, 0, errOS }

// ListenEventsPaced returns an error: the MPTCP path manager is Linux only.
func ListenEventsPaced(*Config, time.Duration) (*EventListener, error) { return nil, errOS }
