package routing

import (
	"net/netip"
	"testing"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/google/go-cmp/cmp"
)

var cmpNet = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestDesired(t *testing.T) {
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	rules, routes := Config{}.desired(Path{Index: 7, Name: "lte0",
		Addrs: []netip.Prefix{pfx("10.0.2.2/24"), pfx("10.0.2.3/24"), pfx("2001:db8::2/64"), pfx("192.0.2.9/32")},
		// IPv4 gateway given, IPv6 none: on-link default for IPv6.
		Gateway4: addr("10.0.2.1")})
	wantRules := []Rule{
		{From: pfx("10.0.2.2/32"), Table: 1007, Priority: 1000},
		{From: pfx("10.0.2.3/32"), Table: 1007, Priority: 1000},
		{From: pfx("2001:db8::2/128"), Table: 1007, Priority: 1000},
		{From: pfx("192.0.2.9/32"), Table: 1007, Priority: 1000},
	}
	wantRoutes := []Route{
		// One connected route per subnet, with the first address as source;
		// none for a /32. Connected routes before default routes.
		{Dst: pfx("10.0.2.0/24"), Src: addr("10.0.2.2"), Index: 7, Table: 1007},
		{Dst: pfx("2001:db8::/64"), Index: 7, Table: 1007},
		{Dst: pfx("0.0.0.0/0"), Gateway: addr("10.0.2.1"), Index: 7, Table: 1007},
		{Dst: pfx("::/0"), Index: 7, Table: 1007},
	}
	if d := cmp.Diff(wantRules, rules, cmpNet...); d != "" {
		t.Errorf("rules (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantRoutes, routes, cmpNet...); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
	// No addresses: nothing wanted (Ensure then removes everything).
	if r, rt := (Config{}).desired(Path{Index: 7}); len(r)+len(rt) != 0 {
		t.Errorf("empty path wants %v %v", r, rt)
	}
	// A gateway of the wrong family is ignored.
	_, routes = Config{TableBase: 5000}.desired(Path{Index: 1, Addrs: []netip.Prefix{pfx("10.0.0.2/24")}, Gateway4: addr("fe80::1")})
	if routes[1].Gateway.IsValid() || routes[1].Table != 5001 {
		t.Errorf("default route %v", routes[1])
	}
	if got := (Rule{From: pfx("10.0.2.2/32"), Table: 1007, Priority: 1000}).String(); got != "from 10.0.2.2 lookup 1007 pref 1000" {
		t.Errorf("Rule.String() = %q", got)
	}
}

func TestPathFor(t *testing.T) {
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	st := netmon.State{
		Links: map[int]netmon.Link{
			3: {Index: 3, Name: "wifi0", AdminUp: true, OperUp: true},
			4: {Index: 4, Name: "lte0", AdminUp: true, OperUp: false},
		},
		Addrs: map[int][]netmon.Addr{
			3: {{Index: 3, Prefix: pfx("10.0.1.2/24")}, {Index: 3, Prefix: pfx("2001:db8:1::2/64")}},
			4: {{Index: 4, Prefix: pfx("10.0.2.2/24")}},
		},
		DefaultRoutes: map[int][]netmon.Route{
			3: {{Index: 3, Family: 10, Gateway: addr("fe80::1"), Metric: 1024}, {Index: 3, Family: 2, Gateway: addr("10.0.1.1")}},
		},
	}
	want := Path{Index: 3, Name: "wifi0", Addrs: []netip.Prefix{pfx("10.0.1.2/24"), pfx("2001:db8:1::2/64")},
		Gateway4: addr("10.0.1.1"), Gateway6: addr("fe80::1")}
	if d := cmp.Diff(want, PathFor(st, 3), cmpNet...); d != "" {
		t.Errorf("PathFor(wifi0) (-want +got):\n%s", d)
	}
	// Down: no addresses, so Ensure removes its rules.
	if d := cmp.Diff(Path{Index: 4, Name: "lte0"}, PathFor(st, 4), cmpNet...); d != "" {
		t.Errorf("PathFor(lte0 down) (-want +got):\n%s", d)
	}
	if p := PathFor(st, 9); p.Index != 9 || len(p.Addrs) != 0 {
		t.Errorf("PathFor(unknown) = %+v", p)
	}
}
