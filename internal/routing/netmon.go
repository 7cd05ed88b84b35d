package routing

import "github.com/gigapath/gigapath/internal/netmon"

// PathFor builds the Path of interface index from a netmon snapshot: its
// usable addresses, and the gateways of its default routes in the main
// table (none: on-link). A link that is missing or not up gets no
// addresses, so Ensure removes its rules and table.
//
// The kernel flushes the routes through a link that goes down, ours
// included: call Ensure(PathFor(state, i)) again on every netmon event for
// interface i (LinkUp/Down, AddrAdded/Removed, RouteAdded/Removed) and for
// all policy interfaces on Resync. Ensure is idempotent and cheap when
// nothing changed.
func PathFor(st netmon.State, index int) Path {
	l, ok := st.Links[index]
	p := Path{Index: index, Name: l.Name}
	if !ok || !l.Up() {
		return p
	}
	for _, a := range st.Addrs[index] {
		p.Addrs = append(p.Addrs, a.Prefix)
	}
	if gw, ok := st.Gateway(index, false); ok && gw.IsValid() {
		p.Gateway4 = gw
	}
	if gw, ok := st.Gateway(index, true); ok && gw.IsValid() {
		p.Gateway6 = gw
	}
	return p
}
