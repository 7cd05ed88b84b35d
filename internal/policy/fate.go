package policy

import (
	"net/netip"
	"reflect"
	"strings"
	"time"
)

// Fate is what a reload (SIGHUP) does with a changed key: every key of
// the policy has one, so nothing is accepted and then ignored.
type Fate int

// Fates.
const (
	// Applied: the daemon applies the change at the reload.
	Applied Fate = iota + 1
	// Restart: a reload with this change is refused, naming the key; the
	// old policy stays until the daemon is restarted.
	Restart
	// RelayOnly: the `relay:` section, which `gigapath relay --config`
	// reads when it starts; the daemon keeps the new copy and logs that
	// the relay must be restarted to use it.
	RelayOnly
)

func (f Fate) String() string {
	switch f {
	case Applied:
		return "applied"
	case Restart:
		return "needs a restart"
	case RelayOnly:
		return "read by gigapath relay at its start"
	}
	return "undecided"
}

// fates decides every key path of Policy (see Keys). A key added to the
// Policy without an entry here has no fate: a reload refuses it as needing
// a restart, and TestEveryKeyHasAFate fails.
var fates = map[string]Fate{
	"side":         Restart, // which commands and events apply at all
	"path_manager": Restart, // the namespace's sysctl; live connections keep theirs
	"steering":     Applied,
	"scheduler":    Applied,
	"path_cgroup":  Restart, // where the sockops program is attached
	"mptcpify":     Restart, // the attached cgroup set of the mptcpify program

	"interfaces":                Applied,
	"interfaces[].name":         Applied,
	"interfaces[].match":        Applied,
	"interfaces[].role":         Applied,
	"interfaces[].backup":       Applied,
	"interfaces[].max_subflows": Applied,
	"interfaces[].congestion":   Applied, // for subflows established from then on
	"interfaces[].mark":         Applied, // same
	"interfaces[].gateway":      Applied,

	"peer_addresses":       Applied,
	"announce":             Applied,
	"announce[].address":   Applied,
	"announce[].interface": Applied,
	"announce[].port":      Applied,
	// net.mptcp.allow_join_initial_addr_port: read when a connection is
	// accepted, so a change applies to connections accepted from then on.
	"initial_address_joins": Applied,

	"limits.subflows":          Applied,
	"limits.add_addr_accepted": Applied,

	"routing.mode":          Applied,
	"routing.table_base":    Applied,
	"routing.rule_priority": Applied,

	"priority.rtt_ms":             Applied,
	"priority.loss_percent":       Applied,
	"priority.reorder_percent":    Applied,
	"priority.hysteresis_percent": Applied,
	"priority.hold":               Applied,

	"handover.rtt_ms":          Applied,
	"handover.loss_percent":    Applied,
	"handover.reorder_percent": Applied,
	"handover.interval":        Applied,
	"handover.failures":        Applied,
	"handover.hold":            Applied,

	"metrics.listen":         Restart, // a listening socket the process holds
	"metrics.subflow_series": Applied, // read by each scrape
	"status_socket":          Restart, // same as metrics.listen
	"log.level":              Applied,
	"log.format":             Applied,
	"skip_link_local":        Applied,
	"creates.thread":         Restart, // a thread the process starts with its sockets
	"creates.priority":       Restart, // same

	"relay": RelayOnly,
}

// FateOf returns what a reload does when key (a path from Keys) changes;
// false when the key has no fate.
func FateOf(key string) (Fate, bool) {
	f, ok := fates[key]
	return f, ok
}

// Keys lists every key path of a Policy, in declaration order: mappings
// as "limits.subflows", fields of list entries as "interfaces[].role", and
// each list of mappings ("interfaces") for entries added or removed.
func Keys() []string {
	var out []string
	keysOf(reflect.TypeOf(Policy{}), "", &out)
	return out
}

// Types whose values are single keys although they are structs.
var leafTypes = map[reflect.Type]bool{
	reflect.TypeOf(netip.Addr{}):     true,
	reflect.TypeOf(Gateway{}):        true,
	reflect.TypeOf(time.Duration(0)): true,
}

// keyName is the YAML key of a field: its `key` tag, else its JSON name.
func keyName(f reflect.StructField) string {
	if k := f.Tag.Get("key"); k != "" {
		return k
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// isLeaf: a value compared as one key (scalars, lists of scalars, the
// relay section, addresses).
func isLeaf(t reflect.Type) bool {
	if leafTypes[t] || t.Kind() == reflect.Pointer {
		return true
	}
	if t.Kind() == reflect.Slice {
		return t.Elem().Kind() != reflect.Struct
	}
	return t.Kind() != reflect.Struct
}

func keysOf(t reflect.Type, p string, out *[]string) {
	if isLeaf(t) {
		*out = append(*out, p)
		return
	}
	if t.Kind() == reflect.Slice {
		*out = append(*out, p)
		keysOf(t.Elem(), p+"[]", out)
		return
	}
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.IsExported() {
			keysOf(f.Type, fieldPath(p, f), out)
		}
	}
}

// fieldPath is the key path of field f of the mapping at p.
func fieldPath(p string, f reflect.StructField) string {
	if strings.HasSuffix(p, "[]") {
		return p + "." + keyName(f)
	}
	return join(p, keyName(f))
}

// changedKeys lists the key paths (as Keys names them) whose values differ
// between a and b, in Keys order. Entries of a list of mappings are paired
// by their Key() when they have one (interfaces), by position otherwise
// (announce); an entry without a pair changes the list's own key.
func changedKeys(a, b *Policy) []string {
	set := map[string]bool{}
	diffValues(reflect.ValueOf(*a), reflect.ValueOf(*b), "", set)
	var out []string
	for _, k := range Keys() {
		if set[k] {
			out = append(out, k)
			delete(set, k)
		}
	}
	return out
}

type keyed interface{ Key() string }

func diffValues(a, b reflect.Value, p string, set map[string]bool) {
	t := a.Type()
	if isLeaf(t) {
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			set[p] = true
		}
		return
	}
	if t.Kind() == reflect.Slice {
		elem := p + "[]"
		if _, ok := reflect.New(t.Elem()).Interface().(keyed); ok {
			bi := map[string]reflect.Value{}
			for i := 0; i < b.Len(); i++ {
				bi[b.Index(i).Addr().Interface().(keyed).Key()] = b.Index(i)
			}
			matched := 0
			for i := 0; i < a.Len(); i++ {
				if o, ok := bi[a.Index(i).Addr().Interface().(keyed).Key()]; ok {
					matched++
					diffValues(a.Index(i), o, elem, set)
				} else {
					set[p] = true
				}
			}
			if matched != b.Len() {
				set[p] = true
			}
			return
		}
		n := min(a.Len(), b.Len())
		for i := 0; i < n; i++ {
			diffValues(a.Index(i), b.Index(i), elem, set)
		}
		if a.Len() != b.Len() {
			set[p] = true
		}
		return
	}
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.IsExported() {
			diffValues(a.Field(i), b.Field(i), fieldPath(p, f), set)
		}
	}
}
