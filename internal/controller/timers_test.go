package controller

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// adoptMany adds n established client connections to c, each with a wifi
// subflow only (so each wants its lte subflow), as a resync would.
func adoptMany(c *Controller, n int, now time.Time) {
	list := make([]pathmgr.Connection, n)
	for i := range list {
		l := netip.AddrPortFrom(fakeWiFi.Addr(), uint16(20000+i))
		list[i] = pathmgr.Connection{Token: uint32(1000 + i), Local: l, Remote: fakeRemote, State: 1,
			Subflows: []pathmgr.SubflowInfo{{Local: l, Remote: fakeRemote, IfIndex: 2, State: 1}}}
	}
	c.adopt(list, now)
}

// refusingPM refuses the creates of one token.
type refusingPM struct {
	*fakeKernel
	token uint32
}

func (r refusingPM) CreateSubflow(tok uint32, l pathmgr.Endpoint, dst netip.AddrPort) error {
	if tok == r.token {
		return errors.New("refused")
	}
	return r.fakeKernel.CreateSubflow(tok, l, dst)
}

// A tick reconciles only the connections whose timers are due: with 1,000
// connections served, a refused create is retried after its back-off by
// the tick, and no other connection is touched on the way.
func TestTickServesDueTimersOnly(t *testing.T) {
	now := time.Unix(7000, 0)
	c, k, _ := fakeController(t, reloadClient, &testbed.LockedBuffer{})
	c.now = func() time.Time { return now }
	const bad = 1000 + 500
	c.pm = refusingPM{k, bad}
	adoptMany(c, 1000, now)
	c.reconcileAll()
	got := k.take()
	if len(got) != 999 {
		t.Fatalf("%d creates for 1,000 connections with one refused; want 999", len(got))
	}
	// Every connection served now waits for its lte subflow (pending).
	c.pm = k
	for _, step := range []struct {
		after time.Duration
		want  []string
	}{
		{time.Second, nil},
		{retryBackoff + time.Millisecond, []string{"create 3>" + fakeRemote.String() + " id 1 backup false"}},
		{retryBackoff + 2*time.Second, nil},
	} {
		now = time.Unix(7000, 0).Add(step.after)
		c.tick()
		if got := k.take(); !slices.Equal(got, step.want) {
			t.Fatalf("tick %v later: commands %q, want %q", step.after, got, step.want)
		}
	}
	// Past the pending window of the 999 creates that got no answer, the
	// tick creates them again, all at once.
	now = time.Unix(7000, 0).Add(pendingTimeout + time.Second)
	c.tick()
	if got := k.take(); len(got) != 999 {
		t.Fatalf("after the pending window: %d creates, want 999 (the first 999 again)", len(got))
	}
}

// The tick's cost does not grow with connections that wait for nothing.
func BenchmarkTick(b *testing.B) {
	for _, n := range []int{1000, 50000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			now := time.Unix(7000, 0)
			c, k, _ := fakeController(b, reloadClient, &testbed.LockedBuffer{})
			c.now = func() time.Time { return now }
			adoptMany(c, n, now)
			c.reconcileAll()
			// Served: every lte subflow established, nothing pending.
			for tok, cn := range c.conns {
				cn.pending = nil
				lte := netip.AddrPortFrom(fakeLTE.Addr(), uint16(tok))
				c.putSub(cn, &sub{sf: pathmgr.Subflow{Local: lte, Remote: fakeRemote}, ifindex: 3, localID: 1})
			}
			k.take()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				now = now.Add(time.Second)
				c.tick()
			}
		})
	}
}

// The subflow counts behind the gauges follow every change: events,
// destroys, an adopt that replaces a connection's subflows, closes.
func TestSubflowCountsFollowChanges(t *testing.T) {
	now := time.Unix(7000, 0)
	c, k, cn := fakeController(t, reloadClient, &testbed.LockedBuffer{})
	c.now = func() time.Time { return now }
	recount := func() map[int]int {
		m := map[int]int{}
		for _, cn := range c.conns {
			for _, s := range cn.subs {
				m[s.ifindex]++
			}
		}
		return m
	}
	check := func(step string) {
		t.Helper()
		want := recount()
		for idx, n := range c.nsubs {
			if want[idx] != n {
				t.Fatalf("%s: counts %v, a walk over the connections finds %v", step, c.nsubs, want)
			}
		}
		if len(want) != len(c.nsubs) {
			t.Fatalf("%s: counts %v, a walk over the connections finds %v", step, c.nsubs, want)
		}
	}
	check("start")
	tok := uint32(42)
	l := netip.AddrPortFrom(fakeWiFi.Addr(), 30000)
	lte := netip.AddrPortFrom(fakeLTE.Addr(), 30000)
	c.handlePM(pathmgr.Event{Type: pathmgr.EventEstablished, Token: tok, Local: l, Remote: fakeRemote, IfIndex: 2}, now)
	c.handlePM(pathmgr.Event{Type: pathmgr.EventSubEstablished, Token: tok, Local: lte, Remote: fakeRemote, IfIndex: 3, LocalID: 1}, now)
	check("established")
	c.handlePM(pathmgr.Event{Type: pathmgr.EventSubEstablished, Token: tok, Local: lte, Remote: fakeRemote, IfIndex: 3, LocalID: 1}, now)
	check("the same subflow again")
	c.handlePM(pathmgr.Event{Type: pathmgr.EventSubClosed, Token: tok, Local: lte, Remote: fakeRemote, IfIndex: 3}, now)
	check("sub_closed")
	c.destroy(cn, cn.subOf(pathmgrSubflow(fakeLTE)), "test")
	check("destroy")
	c.adopt(k.conns, now) // the fake connection's two subflows back, 42 gone
	check("adopt")
	c.handlePM(pathmgr.Event{Type: pathmgr.EventClosed, Token: 1}, now)
	check("closed")
	if len(c.nsubs) != 0 {
		t.Errorf("counts %v with no connection left", c.nsubs)
	}
}

// A health sample reconciles the connections only when it changes which
// interfaces are unhealthy (all that steering reads): a steady sample
// costs the loop O(interfaces), a change re-flags every connection.
func TestHealthSampleReconcilesOnChangeOnly(t *testing.T) {
	now := time.Unix(7000, 0)
	yaml := strings.Replace(reloadClient, "steering: aggregate", "steering: priority", 1)
	c, k, _ := fakeController(t, yaml, &testbed.LockedBuffer{})
	c.now = func() time.Time { return now }
	adoptMany(c, 100, now)
	c.reconcileAll()
	for tok, cn := range c.conns {
		cn.pending = nil
		lte := netip.AddrPortFrom(fakeLTE.Addr(), uint16(tok))
		c.putSub(cn, &sub{sf: pathmgr.Subflow{Local: lte, Remote: fakeRemote}, ifindex: 3, localID: 1, backup: true})
	}
	k.take()
	sample := func(wifiRTT time.Duration) []string {
		now = now.Add(time.Second)
		c.healthSample(healthBatch{at: now, per: map[int]*ifTotals{
			2: {rtt: wifiRTT, sent: 1000}, 3: {rtt: 10 * time.Millisecond, sent: 1000}}})
		return k.take()
	}
	if got := sample(20 * time.Millisecond); len(got) != 0 {
		t.Fatalf("a healthy sample sent %d commands, want none: %q", len(got), got[:min(3, len(got))])
	}
	got := sample(time.Second)
	if len(got) != 200 {
		t.Fatalf("wifi turned unhealthy: %d commands, want 200 (MP_PRIO on both subflows of 100 connections)", len(got))
	}
	if got := sample(time.Second); len(got) != 0 {
		t.Fatalf("wifi still unhealthy: %d commands, want none", len(got))
	}
}

// The sampler keeps its interval while a sample is cheap, and stretches it
// so that sampling takes at most a tenth of a CPU when it is not (a
// sock_diag dump of tens of thousands of connections).
func TestSamplerBudget(t *testing.T) {
	for _, tc := range []struct{ every, took, want time.Duration }{
		{time.Second, 10 * time.Millisecond, 990 * time.Millisecond},
		{time.Second, 100 * time.Millisecond, 900 * time.Millisecond},
		{time.Second, 900 * time.Millisecond, 8100 * time.Millisecond},
		{3 * time.Second, time.Second, 9 * time.Second},
	} {
		if got := nextSampleIn(tc.every, tc.took); got != tc.want {
			t.Errorf("every %v, a sample of %v: next in %v, want %v", tc.every, tc.took, got, tc.want)
		}
	}
}
