package main

import "testing"

// TestExitCodes checks the exit-code contract at the top level: usage
// errors 2, success 0.
func TestExitCodes(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"gigapath", "frobnicate"}, 2},
		{[]string{"gigapath", "--no-such-flag"}, 2},
		{[]string{"gigapath", "--help"}, 0},
	} {
		if got := run(tt.args); got != tt.want {
			t.Errorf("gigapath %v: exit %d, want %d", tt.args[1:], got, tt.want)
		}
	}
}
