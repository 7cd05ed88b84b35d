package routing

import (
	"net/netip"
	"testing"

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
