package policy

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Diff is what changed from one policy to the next. The controller applies
// a reload as this difference; keys whose Fate is Restart are listed in
// NeedsRestart, and a reload that has any is refused as a whole.
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
	PeerAddrsChanged   bool
	LimitsChanged      bool
	RoutingChanged     bool
	PriorityChanged    bool
	HandoverChanged    bool
	MetricsChanged     bool
	StatusChanged      bool
	LogChanged         bool
	LinkLocalChanged   bool
	RelayChanged       bool

	// Keys are the key paths that changed (see Keys), in Keys order.
	Keys []string
	// NeedsRestart names the changed keys whose Fate is Restart (side,
	// path_manager, path_cgroup, mptcpify, metrics.listen, status_socket),
	// and any changed key without a fate.
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
	d.PeerAddrsChanged = old.PeerAddresses != new.PeerAddresses
	d.LimitsChanged = old.Limits != new.Limits
	d.RoutingChanged = old.Routing != new.Routing
	d.PriorityChanged = old.Priority != new.Priority
	d.HandoverChanged = old.Handover != new.Handover
	d.MetricsChanged = old.Metrics != new.Metrics
	d.StatusChanged = old.StatusSocket != new.StatusSocket
	d.LogChanged = old.Log != new.Log
	d.LinkLocalChanged = old.SkipLinkLocal != new.SkipLinkLocal
	d.RelayChanged = !reflect.DeepEqual(old.Relay, new.Relay)
	d.Keys = changedKeys(old, new)
	// Where no daemon sends a connection's creates, before or after,
	// creates has nothing to restart (Threaded).
	idle := !old.Threaded() && !new.Threaded()
	for _, k := range d.Keys {
		if idle && strings.HasPrefix(k, "creates.") {
			continue
		}
		if f, ok := FateOf(k); !ok || f == Restart {
			d.NeedsRestart = append(d.NeedsRestart, k)
		}
	}
	return d
}

// Describe lists what a reload from old to new changes, one line per
// change, in a stable order, for logs and `gigapath config diff`. It is
// empty when nothing changed.
func Describe(old, new *Policy) []string {
	d := Compare(old, new)
	if old == nil {
		old = &Policy{}
	}
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, i := range d.Removed {
		add("- interface %s (%s)", i.Key(), i.Role)
	}
	for _, i := range d.Added {
		add("+ interface %s (%s)", i.Key(), ifaceSettings(i))
	}
	for _, c := range d.Changed {
		add("~ interface %s: %s -> %s", c.New.Key(), ifaceSettings(c.Old), ifaceSettings(c.New))
	}
	change := func(changed bool, key string, o, n any) {
		if changed {
			add("~ %s: %v -> %v", key, o, n)
		}
	}
	change(d.SideChanged, "side", old.Side, new.Side)
	change(d.PathManagerChanged, "path_manager", old.PathManager, new.PathManager)
	change(d.SteeringChanged, "steering", old.Steering, new.Steering)
	change(d.SchedulerChanged, "scheduler", quoted(old.Scheduler), quoted(new.Scheduler))
	change(d.AnnounceChanged, "announce", announceList(old.Announce), announceList(new.Announce))
	change(d.PeerAddrsChanged, "peer_addresses", old.PeerAddresses, new.PeerAddresses)
	change(d.LimitsChanged, "limits", fmt.Sprintf("subflows %d add_addr_accepted %d", old.Limits.Subflows, old.Limits.AddAddrAccepted),
		fmt.Sprintf("subflows %d add_addr_accepted %d", new.Limits.Subflows, new.Limits.AddAddrAccepted))
	change(d.RoutingChanged, "routing", routingString(old.Routing), routingString(new.Routing))
	change(d.PriorityChanged, "priority", fmt.Sprintf("%+v", old.Priority), fmt.Sprintf("%+v", new.Priority))
	change(d.HandoverChanged, "handover", fmt.Sprintf("%+v", old.Handover), fmt.Sprintf("%+v", new.Handover))
	change(old.Metrics.Listen != new.Metrics.Listen, "metrics.listen", quoted(old.Metrics.Listen), quoted(new.Metrics.Listen))
	change(old.Metrics.SubflowSeries != new.Metrics.SubflowSeries, "metrics.subflow_series", old.Metrics.SubflowSeries, new.Metrics.SubflowSeries)
	change(d.StatusChanged, "status_socket", quoted(old.StatusSocket), quoted(new.StatusSocket))
	change(d.LogChanged, "log", old.Log.Level+"/"+old.Log.Format, new.Log.Level+"/"+new.Log.Format)
	change(d.LinkLocalChanged, "skip_link_local", old.SkipLinkLocal, new.SkipLinkLocal)
	change(old.Creates != new.Creates, "creates", fmt.Sprintf("%+v", old.Creates), fmt.Sprintf("%+v", new.Creates))
	if d.RelayChanged {
		add("~ relay: changed (gigapath relay --config reads it when it starts; the daemon does not use it)")
	}
	if len(d.NeedsRestart) > 0 {
		add("! needs a restart: %s", strings.Join(d.NeedsRestart, ", "))
	}
	return out
}

func quoted(s string) string { return strconv.Quote(s) }

func ifaceSettings(i Interface) string {
	s := string(i.Role)
	if i.Backup {
		s += " backup"
	}
	s += fmt.Sprintf(" max_subflows %d", i.MaxSubflows)
	if i.Congestion != "" {
		s += " congestion " + i.Congestion
	}
	if i.Mark != 0 {
		s += fmt.Sprintf(" mark %#x", i.Mark)
	}
	if !i.Gateway.IsZero() {
		s += " gateway " + i.Gateway.String()
	}
	return s
}

func announceList(as []Announce) string {
	if len(as) == 0 {
		return "none"
	}
	var s []string
	for _, a := range as {
		x := a.Interface
		if a.Address.IsValid() {
			x = a.Address.String()
		}
		if a.Port != 0 {
			x += fmt.Sprintf(" port %d", a.Port)
		}
		s = append(s, x)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func routingString(r Routing) string {
	if r.Mode == RoutingOff {
		return "off"
	}
	return fmt.Sprintf("%s table_base %d rule_priority %d", r.Mode, r.TableBase, r.RulePriority)
}
