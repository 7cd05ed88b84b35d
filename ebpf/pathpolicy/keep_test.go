//go:build linux

package pathpolicy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// waitEntries polls p's telemetry until it holds n entries (10 s at most).
func waitEntries(t *testing.T, p *PathPolicy, n int) []SubflowStats {
	t.Helper()
	var stats []SubflowStats
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var err error
		if stats, err = p.Telemetry(); err != nil {
			t.Fatal(err)
		}
		if len(stats) == n {
			return stats
		}
	}
	t.Fatalf("telemetry holds %d entries, want %d: %+v", len(stats), n, stats)
	return nil
}

// The layout changes with any member of the entry: its name, its offset
// or its type's size (two fields swapped keep every size the map has).
func TestTelemetryLayoutSeesTheEntry(t *testing.T) {
	spec, err := loadPathpolicy()
	if err != nil {
		t.Fatal(err)
	}
	base, err := layoutOf(spec.Maps[pathpolicyMapSubflows])
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := TelemetryLayout(); got != base || len(base) != 16 {
		t.Fatalf("TelemetryLayout() = %q, layoutOf the spec %q, want the same 16 hex digits", got, base)
	}
	for name, change := range map[string]func(*btf.Struct){
		"a member renamed": func(s *btf.Struct) { s.Members[1].Name += "x" },
		"two swapped": func(s *btf.Struct) {
			s.Members[0].Offset, s.Members[1].Offset = s.Members[1].Offset, s.Members[0].Offset
		},
		"one resized": func(s *btf.Struct) { s.Members[2].Type = &btf.Int{Name: "u16", Size: 2} },
	} {
		m := spec.Maps[pathpolicyMapSubflows].Copy()
		v, ok := btf.UnderlyingType(m.Value).(*btf.Struct)
		if !ok {
			t.Fatalf("the value type is %T, want a struct", m.Value)
		}
		v = btf.Copy(v).(*btf.Struct)
		change(v)
		m.Value = v
		if got, err := layoutOf(m); err != nil || got == base {
			t.Errorf("%s: layout %q (%v), the same as before", name, got, err)
		}
	}
}

// A second PathPolicy handed the first one's telemetry map keeps it: the
// entries of an idle connection (no callback after its first byte) are
// still there once the first one is closed, and the second program writes
// a new connection's entries to the same map. A map of another layout or
// size is not kept, and the reason says which.
func TestIntegrationKeepTelemetry(t *testing.T) {
	tp := newTopo(t)
	opts := Options{Cgroup: tp.cgroup, NetNS: tp.srv.Path(), NoSendShare: true, MaxSubflows: 64}
	first, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close() })
	tp.startServerScriptIn(t, serverPy, tp.cgroup)
	tp.startClientScript(t, idleClientPy, "")
	idle := waitEntries(t, first, 2) // the initial subflow and the join

	layout, err := TelemetryLayout()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, layout string
		size         uint32
		why          func(error) bool
	}{
		{"another layout", "0123456789abcdef", 64, func(err error) bool { return strings.Contains(err.Error(), "layout") }},
		{"another size", layout, 128, func(err error) bool { return errors.Is(err, ebpf.ErrMapIncompatible) }},
	} {
		o := opts
		o.MaxSubflows = c.size
		o.Telemetry = &HeldTelemetry{Map: first.TelemetryMap(), Layout: c.layout}
		p, err := Load(o)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		t.Cleanup(func() { p.Close() })
		if kept, why := p.KeptTelemetry(); kept || why == nil || !c.why(why) {
			t.Errorf("%s: kept %v (%v), want not kept, and why", c.name, kept, why)
		}
		if stats, _ := p.Telemetry(); len(stats) != 0 {
			t.Errorf("%s: the new map holds %d entries, want 0", c.name, len(stats))
		}
		waitEntries(t, first, 2) // the first map is untouched
	}

	o := opts
	o.Telemetry = &HeldTelemetry{Map: first.TelemetryMap(), Layout: layout}
	second, err := Load(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	if kept, why := second.KeptTelemetry(); !kept || why != nil {
		t.Fatalf("same layout and size: kept %v (%v), want kept", kept, why)
	}
	first.Close() // as the old binary does after the exec
	got := waitEntries(t, second, 2)
	lost := map[uint64]SubflowStats{}
	for _, s := range idle {
		lost[s.Cookie] = s
	}
	for _, s := range got {
		delete(lost, s.Cookie)
	}
	if len(lost) != 0 {
		t.Errorf("idle subflows lost from the kept map: %+v (it holds %+v)", lost, got)
	}
	tp.startClientScript(t, idleClientPy, "")
	waitEntries(t, second, 4)
}
