package policy

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestPathCgroupParsedAndNeedsRestart(t *testing.T) {
	const base = "path_manager: userspace\ninterfaces:\n  - name: lte0\n    role: lte\n    congestion: cubic\n"
	a, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(base + "path_cgroup: system.slice/app.service\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.PathCgroup != "" || b.PathCgroup != "system.slice/app.service" {
		t.Fatalf("path_cgroup parsed as %q and %q", a.PathCgroup, b.PathCgroup)
	}
	if d := a.Diff(b); !slices.Contains(d.NeedsRestart, "path_cgroup") {
		t.Fatalf("changing path_cgroup: NeedsRestart = %v, want it listed", d.NeedsRestart)
	}
}

func TestMptcpifyParsed(t *testing.T) {
	const base = "path_manager: userspace\ninterfaces:\n  - name: lte0\n    role: lte\n"
	p, err := Parse([]byte(base + "mptcpify: [app.service, /sys/fs/cgroup/x]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{MptcpifyCgroup(p.Mptcpify[0]), MptcpifyCgroup(p.Mptcpify[1])}; !slices.Equal(got, []string{"system.slice/app.service", "/sys/fs/cgroup/x"}) {
		t.Fatalf("mptcpify cgroups = %v", got)
	}
	if _, err := Parse([]byte(base + "mptcpify: [\"a/../b\"]\n")); err == nil || !strings.Contains(err.Error(), "mptcpify") {
		t.Fatalf("mptcpify with '..': err = %v, want it refused naming the key", err)
	}
	q, _ := Parse([]byte(base))
	if d := q.Diff(p); !slices.Contains(d.NeedsRestart, "mptcpify") {
		t.Fatalf("changing mptcpify: NeedsRestart = %v", d.NeedsRestart)
	}
}

// Every key has a reload fate, named as the file names it: a key added to
// the policy without a decision fails here (the controller's
// TestReloadEveryKey then checks each decision is carried out).
func TestEveryKeyHasAFate(t *testing.T) {
	keys := Keys()
	for _, k := range keys {
		if _, ok := FateOf(k); !ok {
			t.Errorf("key %s has no reload fate: decide in fate.go whether a reload applies it or needs a restart, and make the controller do so", k)
		}
	}
	for k := range fates {
		if !slices.Contains(keys, k) {
			t.Errorf("fate for %s, which is not a key of the policy", k)
		}
	}
	// The names are the file's: the same paths walked over the raw
	// (YAML) structs.
	var file []string
	var walk func(t reflect.Type, p string)
	walk = func(t reflect.Type, p string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case p == "relay" || t == reflect.TypeOf(rawAddrs{}):
			file = append(file, p)
		case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
			file = append(file, p)
			walk(t.Elem(), p+"[]")
		case t.Kind() == reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				if f.Anonymous {
					walk(f.Type, p)
					continue
				}
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				np := join(p, name)
				if strings.HasSuffix(p, "[]") {
					np = p + "." + name
				}
				walk(f.Type, np)
			}
		default:
			file = append(file, p)
		}
	}
	walk(reflect.TypeOf(rawFile{}), "")
	slices.Sort(file)
	sorted := slices.Sorted(slices.Values(keys))
	// routing may be given as a scalar (routing: off): its mapping keys
	// are the leaves.
	if !slices.Equal(file, sorted) {
		t.Errorf("policy keys and file keys differ:\npolicy: %v\nfile:   %v", sorted, file)
	}
}

func TestChangedKeys(t *testing.T) {
	const base = "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n  - name: lte0\n    role: lte\n"
	a, _ := Parse([]byte(base))
	b, err := Parse([]byte("path_manager: userspace\nskip_link_local: false\nlog: {level: debug}\nhandover: {interval: 500ms}\ninterfaces:\n  - name: wifi0\n    role: wifi\n    gateway: 10.0.0.1\n  - name: lte1\n    role: lte\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := Compare(a, b)
	want := []string{"interfaces", "interfaces[].gateway", "handover.interval", "log.level", "skip_link_local"}
	if !slices.Equal(d.Keys, want) || len(d.NeedsRestart) != 0 {
		t.Errorf("changed keys %v, needs restart %v; want %v and none", d.Keys, d.NeedsRestart, want)
	}
}
