package pathmgr

import (
	"errors"
	"fmt"
	"testing"
)

// After a full batch, or a loss (the kernel then queues nothing until the
// socket is empty), a reader reads again at once.
func TestMoreQueued(t *testing.T) {
	for _, tc := range []struct {
		n    int
		err  error
		want bool
	}{
		{0, nil, false},
		{ReceiveBatch - 1, nil, false},
		{ReceiveBatch, nil, true},
		{3, fmt.Errorf("receive: %w", ErrEventsLost), true},
		{0, ErrEventsLost, true},
		{3, errors.New("decode"), false},
	} {
		if got := MoreQueued(tc.n, tc.err); got != tc.want {
			t.Errorf("MoreQueued(%d, %v) = %v, want %v", tc.n, tc.err, got, tc.want)
		}
	}
}
