package netmon

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var cmpNet = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestHubNeverBlocksAndResyncsOnce(t *testing.T) {
	var h hub
	ch, cancel := h.subscribe(2)
	defer cancel()
	fast, cancelFast := h.subscribe(100)
	defer cancelFast()
	for i := 1; i <= 10; i++ { // far more than the slow subscriber's room
		h.publish(Event{Type: LinkUp, Link: Link{Index: i}})
	}
	var got []Event
	for len(ch) > 0 {
		got = append(got, <-ch)
	}
	want := []Event{
		{Type: LinkUp, Link: Link{Index: 1}},
		{Type: LinkUp, Link: Link{Index: 2}},
		{Type: Resync},
	}
	if d := cmp.Diff(want, got, cmpNet...); d != "" {
		t.Errorf("lagging subscriber (-want +got):\n%s", d)
	}
	if len(fast) != 10 {
		t.Errorf("the other subscriber got %d events, want all 10", len(fast))
	}
	// Once it has caught up, it gets events again, and a later lag gives a
	// new Resync.
	h.publish(Event{Type: LinkDown, Link: Link{Index: 1}})
	if e := <-ch; e.Type != LinkDown {
		t.Errorf("after catching up got %v, want link-down", e)
	}
	for i := 0; i < 5; i++ {
		h.publish(Event{Type: AddrAdded})
	}
	var types []EventType
	for len(ch) > 0 {
		types = append(types, (<-ch).Type)
	}
	if d := cmp.Diff([]EventType{AddrAdded, AddrAdded, Resync}, types); d != "" {
		t.Errorf("second lag (-want +got):\n%s", d)
	}
	// A kernel Resync while one is already queued is not repeated.
	for i := 0; i < 3; i++ {
		h.publish(Event{Type: AddrAdded})
	}
	h.publish(Event{Type: Resync, Kernel: true})
	types = nil
	for len(ch) > 0 {
		types = append(types, (<-ch).Type)
	}
	if d := cmp.Diff([]EventType{AddrAdded, AddrAdded, Resync}, types); d != "" {
		t.Errorf("kernel resync during lag (-want +got):\n%s", d)
	}
	cancel()
	if _, ok := <-ch; ok {
		t.Error("channel still open after cancel")
	}
	cancel() // idempotent
	h.publish(Event{Type: LinkUp})
	h.close()
	late, _ := h.subscribe(1)
	if _, ok := <-late; ok {
		t.Error("a subscription after close is open")
	}
}

func TestStateDiff(t *testing.T) {
	wifi := Link{Index: 3, Name: "wifi0", AdminUp: true, OperUp: true}
	lte := Link{Index: 4, Name: "lte0", AdminUp: true, OperUp: true}
	a4 := Addr{Index: 3, Prefix: netip.MustParsePrefix("10.0.1.2/24")}
	a6 := Addr{Index: 4, Prefix: netip.MustParsePrefix("2001:db8::2/64")}
	gw := Route{Index: 3, Family: afInet, Gateway: netip.MustParseAddr("10.0.1.1")}

	old := newState()
	n := newState()
	n.links[3], n.links[4] = wifi, lte
	n.addrs[a4], n.addrs[a6] = true, true
	n.routes[gw] = true
	got := old.diff(n)
	want := []Event{
		{Type: LinkUp, Link: wifi}, {Type: LinkUp, Link: lte},
		{Type: AddrAdded, Addr: a4, Link: wifi}, {Type: AddrAdded, Addr: a6, Link: lte},
		{Type: RouteAdded, Route: gw, Link: wifi},
	}
	if d := cmp.Diff(want, got, cmpNet...); d != "" {
		t.Errorf("initial diff (-want +got):\n%s", d)
	}
	// The same state again: nothing (repeated messages are de-duplicated).
	if evs := n.diff(n.clone()); len(evs) != 0 {
		t.Errorf("same state gave %v", evs)
	}
	// wifi goes down (route flushed), lte is deleted with its address.
	m := n.clone()
	down := wifi
	down.OperUp = false
	m.links[3] = down
	delete(m.routes, gw)
	delete(m.links, 4)
	delete(m.addrs, a6)
	got = n.diff(m)
	want = []Event{
		{Type: LinkDown, Link: down},
		{Type: LinkDown, Link: lte, Removed: true},
		{Type: AddrRemoved, Addr: a6, Link: lte},
		{Type: RouteRemoved, Route: gw, Link: down},
	}
	if d := cmp.Diff(want, got, cmpNet...); d != "" {
		t.Errorf("down diff (-want +got):\n%s", d)
	}
	st := n.export()
	if g, ok := st.Gateway(3, false); !ok || g != gw.Gateway {
		t.Errorf("Gateway(3, v4) = %v, %v", g, ok)
	}
	if _, ok := st.Gateway(3, true); ok {
		t.Error("Gateway(3, v6) found a route that does not exist")
	}
	if l, ok := st.LinkByName("lte0"); !ok || l.Index != 4 {
		t.Errorf("LinkByName(lte0) = %+v, %v", l, ok)
	}
}

func TestUsableAddr(t *testing.T) {
	for _, tt := range []struct {
		addr   string
		flags  uint32
		ll, ok bool
	}{
		{"10.0.0.1", 0, false, true},
		{"2001:db8::1", 0, false, true},
		{"127.0.0.1", 0, false, false},
		{"::1", 0, true, false},
		{"fe80::1", 0, false, false},
		{"fe80::1", 0, true, true},
		{"169.254.3.4", 0, false, false},
		{"2001:db8::1", 0x40, false, false}, // tentative
		{"2001:db8::1", 0x20, false, false}, // deprecated
		{"2001:db8::1", 0x08, false, false}, // dadfailed
		{"2001:db8::1", 0x80, false, true},  // permanent
	} {
		if got := usableAddr(netip.MustParseAddr(tt.addr), tt.flags, tt.ll); got != tt.ok {
			t.Errorf("usableAddr(%s, %#x, linklocal=%v) = %v, want %v", tt.addr, tt.flags, tt.ll, got, tt.ok)
		}
	}
}

func TestNetNSName(t *testing.T) {
	if _, err := netnsFile("a/b"); err == nil {
		t.Error("a name with '/' was accepted")
	}
	if f, err := netnsFile(""); f != nil || err != nil {
		t.Errorf("empty name: %v %v", f, err)
	}
}

// TestHubConcurrent subscribes, reads and cancels while events are
// published (run with -race): no send on a closed channel, no deadlock.
func TestHubConcurrent(t *testing.T) {
	var h hub
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				h.publish(Event{Type: AddrAdded})
			}
		}
	}()
	for i := 0; i < 200; i++ {
		ch, cancel := h.subscribe(i%4 + 1)
		for j := 0; j < i%3; j++ {
			<-ch
		}
		cancel()
	}
	close(stop)
	<-done
	h.close()
}
