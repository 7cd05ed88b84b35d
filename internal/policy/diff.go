package policy

import (
	"reflect"

	"gopkg.in/yaml.v3"
)

// Diff is what changed from one policy to the next. The controller applies
// a reload as this difference; fields that need a restart are listed in
// NeedsRestart.
type Diff struct {
	// Interfaces, keyed by name or match pattern.
	Added   []Interface
	Removed []Interface
	Changed []InterfaceChange

	SideChanged        bool
	PathManagerChanged bool
	SteeringChanged    bool
	SchedulerChanged   bool
	AnnounceChanged    bool
	LimitsChanged      bool
	RoutingChanged     bool
	PriorityChanged    bool
	HandoverChanged    bool
	MetricsChanged     bool
	StatusChanged      bool
	LogChanged         bool
	LinkLocalChanged   bool
	RelayChanged       bool

	// NeedsRestart names the keys whose change a reload cannot apply
	// (side, path_manager, metrics.listen, status_socket).
	NeedsRestart []string
}

// InterfaceChange is one interface entry present in both policies with
// different settings.
type InterfaceChange struct {
	Old, New Interface
}

// Empty reports whether nothing changed.
func (d Diff) Empty() bool {
	return reflect.ValueOf(d).IsZero()
}

// Diff is Compare(p, new): what a reload from p to new changes.
func (p *Policy) Diff(new *Policy) Diff { return Compare(p, new) }

// Compare computes what changed from old to new. A nil old means everything
// in new is added.
func Compare(old, new *Policy) Diff {
	if old == nil {
		old = &Policy{}
	}
	var d Diff
	oldIf := map[string]Interface{}
	for _, i := range old.Interfaces {
		oldIf[i.Key()] = i
	}
	newIf := map[string]bool{}
	for _, i := range new.Interfaces {
		newIf[i.Key()] = true
		o, ok := oldIf[i.Key()]
		switch {
		case !ok:
			d.Added = append(d.Added, i)
		case o != i:
			d.Changed = append(d.Changed, InterfaceChange{Old: o, New: i})
		}
	}
	for _, i := range old.Interfaces {
		if !newIf[i.Key()] {
			d.Removed = append(d.Removed, i)
		}
	}
	d.SideChanged = old.Side != new.Side
	d.PathManagerChanged = old.PathManager != new.PathManager
	d.SteeringChanged = old.Steering != new.Steering
	d.SchedulerChanged = old.Scheduler != new.Scheduler
	d.AnnounceChanged = !reflect.DeepEqual(old.Announce, new.Announce)
	d.LimitsChanged = old.Limits != new.Limits
	d.RoutingChanged = old.Routing != new.Routing
	d.PriorityChanged = old.Priority != new.Priority
	d.HandoverChanged = old.Handover != new.Handover
	d.MetricsChanged = old.Metrics != new.Metrics
	d.StatusChanged = old.StatusSocket != new.StatusSocket
	d.LogChanged = old.Log != new.Log
	d.LinkLocalChanged = old.SkipLinkLocal != new.SkipLinkLocal
	d.RelayChanged = !nodeEqual(old.Relay, new.Relay)
	if d.SideChanged {
		d.NeedsRestart = append(d.NeedsRestart, "side")
	}
	if d.PathManagerChanged {
		d.NeedsRestart = append(d.NeedsRestart, "path_manager")
	}
	if d.MetricsChanged {
		d.NeedsRestart = append(d.NeedsRestart, "metrics.listen")
	}
	if d.StatusChanged {
		d.NeedsRestart = append(d.NeedsRestart, "status_socket")
	}
	return d
}

// nodeEqual compares two YAML trees by content, ignoring positions.
func nodeEqual(a, b *yaml.Node) bool {
	if a == nil || b == nil {
		return a == b
	}
	ea, err1 := yaml.Marshal(a)
	eb, err2 := yaml.Marshal(b)
	return err1 == nil && err2 == nil && string(ea) == string(eb)
}
