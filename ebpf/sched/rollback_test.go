package sched

import (
	"errors"
	"strings"
	"testing"
)

// A Use that registered a scheduler and then failed (e.g. the sysctl write)
// unregisters it again; one that found it registered leaves it alone.
func TestRegisterForRollsBack(t *testing.T) {
	writeErr := errors.New("set net.mptcp.scheduler=gp_rr: permission denied")
	for _, tc := range []struct {
		name      string
		need      bool
		next      error
		unregErr  error
		wantCalls string
		wantErr   string
	}{
		{"registered then failed", true, writeErr, nil, "reg unreg", writeErr.Error()},
		{"unregister fails too", true, writeErr, errors.New("busy"), "reg unreg", "unregistering gp_rr again failed too: busy"},
		{"registered and succeeded", true, nil, nil, "reg", ""},
		{"already registered, failed", false, writeErr, nil, "", writeErr.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls []string
			reg := func(n string) error { calls = append(calls, "reg"); return nil }
			unreg := func(n string) error { calls = append(calls, "unreg"); return tc.unregErr }
			err := registerFor(tc.need, "gp_rr", reg, unreg, func() error { return tc.next })
			if got := strings.Join(calls, " "); got != tc.wantCalls {
				t.Errorf("calls %q, want %q", got, tc.wantCalls)
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
			if tc.next != nil && !errors.Is(err, tc.next) {
				t.Errorf("err = %v does not wrap the step's error", err)
			}
		})
	}
	regErr := errors.New("load: operation not permitted")
	ran := false
	err := registerFor(true, "gp_rr", func(string) error { return regErr }, func(string) error { t.Error("unregistered what was never registered"); return nil }, func() error { ran = true; return nil })
	if !errors.Is(err, regErr) || ran {
		t.Errorf("register failure: err %v, next ran %v", err, ran)
	}
}
