package controller

import (
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/policy"
)

func testPolicy(t testing.TB, steering string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte("path_manager: userspace\nsteering: " + steering + "\ninterfaces:\n  - name: wifi0\n    role: wifi\n  - name: lte0\n    role: lte\n"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ifaces(p *policy.Policy) (wifi, lte *iface) {
	wifi = &iface{index: 2, name: "wifi0", pol: p.Interfaces[0], order: 0, up: true}
	lte = &iface{index: 3, name: "lte0", pol: p.Interfaces[1], order: 1, up: true}
	return
}

func TestSteer(t *testing.T) {
	var w, l *iface
	for _, tc := range []struct {
		steering          string
		wifiUnhealthy     bool
		wantWiFi, wantLTE want
	}{
		{"aggregate", false, want{open: true}, want{open: true}},
		{"active-standby", false, want{open: true}, want{open: true, backup: true}},
		{"handover", false, want{open: true}, want{open: false}},
		{"handover", true, want{open: true, backup: true}, want{open: true}},
		{"priority", false, want{open: true}, want{open: true, backup: true}},
		{"priority", true, want{open: true, backup: true}, want{open: true}},
	} {
		p := testPolicy(t, tc.steering)
		w, l = ifaces(p)
		w.health.unhealthy = tc.wifiUnhealthy
		got := strategyFor(p).decide(nil, []*iface{w, l}, time.Now())
		if got[0] != tc.wantWiFi || got[1] != tc.wantLTE {
			t.Errorf("%s (wifi unhealthy %v): wifi %+v lte %+v, want %+v %+v", tc.steering, tc.wifiUnhealthy, got[0], got[1], tc.wantWiFi, tc.wantLTE)
		}
	}
	// handover with wifi gone: lte carries, active.
	p := testPolicy(t, "handover")
	_, l = ifaces(p)
	if got := strategyFor(p).decide(nil, []*iface{l}, time.Now()); got[0] != (want{open: true}) {
		t.Errorf("handover without wifi: lte %+v", got[0])
	}
	// handover with wifi back for less than Hold: lte stays open.
	w, l = ifaces(p)
	w.availSince = time.Now()
	if got := strategyFor(p).decide(nil, []*iface{w, l}, time.Now()); !got[1].open {
		t.Errorf("handover, wifi back for less than hold: lte %+v", got[1])
	}
}

// Priority: leave the primary above the loss threshold, come back only
// below the threshold lowered by the hysteresis, after Hold.
func TestHealthHysteresis(t *testing.T) {
	p := testPolicy(t, "priority")
	p.Priority.LossPercent, p.Priority.HysteresisPercent, p.Priority.Hold, p.Priority.RTT = 5, 20, 2*time.Second, 0
	var h health
	now := time.Unix(1000, 0)
	step := func(loss float64) bool {
		h.loss, h.tx = loss, true
		h.update(strategyFor(p).thresholds(), now)
		now = now.Add(time.Second)
		return h.unhealthy
	}
	if step(3) {
		t.Fatal("3% loss is below the 5% threshold")
	}
	if !step(6) {
		t.Fatal("6% loss must make the path unhealthy")
	}
	if !step(4.5) {
		t.Fatal("4.5% is above 5%*(1-20%)=4%: still unhealthy (hysteresis)")
	}
	for range 2 { // two samples, each advancing the clock 1s: not yet Hold
		if !step(1) {
			t.Fatal("healthy again before Hold (2s) passed")
		}
	}
	if step(1) {
		t.Fatal("still unhealthy after Hold below the recovery threshold")
	}
}
