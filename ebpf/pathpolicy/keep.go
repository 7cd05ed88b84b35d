package pathpolicy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// HeldTelemetry is the telemetry map of an earlier PathPolicy, handed to
// the next one (a daemon upgraded in place hands its own to the binary it
// execs), with the layout its entries were written in: that program's
// TelemetryLayout.
type HeldTelemetry struct {
	Map    *ebpf.Map
	Layout string
}

// TelemetryMap is the map the sockops program writes the subflows'
// telemetry to, for a caller that hands it on (Options.Telemetry). It is
// closed by Close; a caller that must keep it longer clones it.
func (p *PathPolicy) TelemetryMap() *ebpf.Map { return p.objs.Subflows }

// KeptTelemetry reports whether Load kept the map of Options.Telemetry,
// and why not when it was offered and not kept.
func (p *PathPolicy) KeptTelemetry() (kept bool, why error) { return p.kept, p.notKept }

// TelemetryLayout names the layout of this program's telemetry entries:
// the map's type and its key and value types as compiled (member names,
// offsets and sizes), and telemetryMeaning. A map written by a program
// whose layout differs (another binary changed struct subflow_stats) is
// not kept, even when its sizes match: its entries would be read wrong.
func TelemetryLayout() (string, error) { return telemetryLayout() }

var telemetryLayout = sync.OnceValues(func() (string, error) {
	spec, err := loadPathpolicy()
	if err != nil {
		return "", fmt.Errorf("pathpolicy: telemetry layout: %w", err)
	}
	return layoutOf(spec.Maps[pathpolicyMapSubflows])
})

// telemetryMeaning is raised when what an entry's fields mean changes
// and their names, offsets and sizes do not (a unit, what a counter
// counts): the layout then differs too.
const telemetryMeaning = 1

// layoutOf is a short hash of m's type and the layout of its key and
// value types.
func layoutOf(m *ebpf.MapSpec) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "%d;%v;", telemetryMeaning, m.Type)
	for _, t := range []btf.Type{m.Key, m.Value} {
		if err := writeLayout(&b, t); err != nil {
			return "", fmt.Errorf("pathpolicy: telemetry layout: %w", err)
		}
		b.WriteByte(';')
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8]), nil
}

// writeLayout writes t's size and, for a struct or union, each member's
// name, offset and layout.
func writeLayout(b *strings.Builder, t btf.Type) error {
	size, err := btf.Sizeof(t)
	if err != nil {
		return err
	}
	fmt.Fprintf(b, "%d", size)
	var members []btf.Member
	switch u := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		members = u.Members
	case *btf.Union:
		members = u.Members
	case *btf.Array:
		b.WriteString("[")
		if err := writeLayout(b, u.Type); err != nil {
			return err
		}
		b.WriteString("]")
	}
	if members == nil {
		return nil
	}
	b.WriteString("{")
	for _, mb := range members {
		fmt.Fprintf(b, "%s@%d:", mb.Name, mb.Offset)
		if err := writeLayout(b, mb.Type); err != nil {
			return err
		}
		b.WriteString(",")
	}
	b.WriteString("}")
	return nil
}

// keepTelemetry checks a held map against this program's spec: the map to
// load in place of a new one, or nil and why not.
func keepTelemetry(spec *ebpf.CollectionSpec, h *HeldTelemetry) (*ebpf.Map, error) {
	layout, err := TelemetryLayout()
	if err != nil {
		return nil, err
	}
	if h.Layout != layout {
		return nil, fmt.Errorf("its entries have layout %q, this program's %q", h.Layout, layout)
	}
	if err := spec.Maps[pathpolicyMapSubflows].Compatible(h.Map); err != nil {
		return nil, err
	}
	return h.Map, nil
}
