//go:build linux

package testbed

import (
	"math"
	"testing"
)

// The helpers take testing.TB values: a TB method testing.TB lacks breaks this.
var _ TB = testing.TB(nil)

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
	}{
		{"100mbit", 100e6}, {"1.5gbit", 1.5e9}, {"500kbit", 500e3}, {"64000bit", 64000},
		{"20Mbit", 20e6}, {"10mbps", 80e6}, {" 1gbit ", 1e9},
	} {
		got, err := ParseRate(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "100", "mbit", "-5mbit", "0mbit", "1bit", "fastmbit", "100 mbits", "20tbit"} {
		if got, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) = %d, want an error", bad, got)
		}
	}
}

func TestLossThreshold(t *testing.T) {
	if got := lossThreshold(0); got != 0 {
		t.Errorf("0%% -> %d", got)
	}
	if got := lossThreshold(100); got != math.MaxUint32 {
		t.Errorf("100%% -> %d", got)
	}
	if got, want := lossThreshold(25), uint32(1<<30); got != want {
		t.Errorf("25%% -> %d, want %d", got, want)
	}
}

func TestIfaceBadLink(t *testing.T) {
	if _, _, err := Iface("eth0"); err == nil {
		t.Fatal("Iface(eth0) gave no error")
	}
	for _, l := range Links {
		if c, p, err := Iface(l); err != nil || c == "" || p == "" {
			t.Errorf("Iface(%s) = %q %q %v", l, c, p, err)
		}
	}
}

func TestIsVethTemp(t *testing.T) {
	for name, want := range map[string]bool{
		UniqueName("gpv"): true, "gpv00ff0a": true,
		"gpvxyz123": false, "gpv00ff0": false, "wifi0": false, "gpv00ff0a1": false,
	} {
		if got := isVethTemp(name); got != want {
			t.Errorf("isVethTemp(%q) = %v", name, got)
		}
	}
}
