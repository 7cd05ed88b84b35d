package controller

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// newConnEvent is a new client connection's ESTABLISHED, its initial
// subflow from wifi0's address. No interface index: the kernel gives one
// only for a socket bound to a device, so the initial subflow's interface
// is known by its address.
var newConnEvent = pathmgr.Event{Type: pathmgr.EventEstablished, Token: 7,
	Local: netip.MustParseAddrPort("10.1.1.2:40100"), Remote: fakeRemote}

// earlyController is fakeController with the reader's early creates going
// to the same fake kernel, the clock at now, wifi0 available since a second
// before (within handover's hold, which then opens lte0 too), and the plan
// published.
func earlyController(t *testing.T, yaml string, now *time.Time) (*Controller, *fakeKernel) {
	t.Helper()
	c, k, _ := fakeController(t, yaml, &testbed.LockedBuffer{})
	c.now = func() time.Time { return *now }
	c.ifs[2].availSince = now.Add(-time.Second)
	c.earlyPM = k
	c.publishEarly()
	return c, k
}

// Under every steering mode a new connection's early creates are the
// creates the loop sends for it when there are none, and the loop, taking
// the connection in, sends none of its own.
func TestEarlyCreatesAreTheLoops(t *testing.T) {
	for name, yaml := range map[string]string{
		"aggregate":      reloadClient,
		"active-standby": strings.Replace(reloadClient, "steering: aggregate", "steering: active-standby", 1),
		"handover":       strings.Replace(reloadClient, "steering: aggregate", "steering: handover\nhandover: {hold: 3s}", 1),
		"priority":       strings.Replace(reloadClient, "steering: aggregate", "steering: priority\npriority: {rtt_ms: 150, hold: 10s}", 1),
		"peer addresses": strings.Replace(reloadClient, "peer_addresses: ignore", "peer_addresses: use", 1),
	} {
		t.Run(name, func(t *testing.T) {
			// The loop alone, never a plan published (the ids as the
			// loop hands them out without one).
			now := time.Unix(5000, 0)
			loop, lk, _ := fakeController(t, yaml, &testbed.LockedBuffer{})
			loop.now = func() time.Time { return now }
			loop.ifs[2].availSince = now.Add(-time.Second)
			loop.handlePM(newConnEvent, now)
			want := lk.take()
			t.Logf("the loop: %q", want)
			if len(want) == 0 {
				t.Fatal("the loop creates nothing for a new connection: nothing to compare")
			}
			c, k := earlyController(t, yaml, &now)
			sent := c.earlyCreates([]pathmgr.Event{newConnEvent}, nil)
			if got := k.take(); !slices.Equal(got, want) {
				t.Fatalf("early creates %q, the loop's %q", got, want)
			}
			c.earlySent = sent
			c.handlePM(newConnEvent, now)
			if got := k.take(); len(got) != 0 {
				t.Errorf("the loop sent %q after the early creates", got)
			}
			cn := c.conns[newConnEvent.Token]
			for _, e := range sent {
				if cn.pending.at(slot{e.ep.IfIndex, fakeRemote}).IsZero() {
					t.Errorf("the early create from %s is not pending", e.ep.Addr)
				}
			}
		})
	}
}

// What the reader leaves to the loop: a connection accepted here, one
// whose peer set the C flag, events other than ESTABLISHED, a plan past
// the time the steering decision may change by itself (handover's hold),
// the in-kernel PM.
func TestEarlyCreatesLeftToTheLoop(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k := earlyController(t, strings.Replace(reloadClient, "steering: aggregate", "steering: handover\nhandover: {hold: 3s}", 1), &now)
	for _, ev := range []pathmgr.Event{
		{Type: pathmgr.EventEstablished, Token: 8, Local: newConnEvent.Local, Remote: fakeRemote, ServerSide: true},
		{Type: pathmgr.EventEstablished, Token: 9, Local: newConnEvent.Local, Remote: fakeRemote, DenyJoinID0: true},
		{Type: pathmgr.EventSubEstablished, Token: 7, Local: newConnEvent.Local, Remote: fakeRemote},
	} {
		c.earlyCreates([]pathmgr.Event{ev}, nil)
		if got := k.take(); len(got) != 0 {
			t.Errorf("%v (server side %v, C flag %v): early creates %q", ev, ev.ServerSide, ev.DenyJoinID0, got)
		}
	}
	until := c.early.Load().until
	if want := now.Add(2 * time.Second); !until.Equal(want) {
		t.Fatalf("handover's plan holds until %v, want wifi0's hold's end %v", until, want)
	}
	now = until
	if sent := c.earlyCreates([]pathmgr.Event{newConnEvent}, nil); len(sent) != 0 {
		t.Errorf("a plan past handover's hold sent %v", sent)
	}

	kc, kk := earlyController(t, strings.Replace(reloadClient, "path_manager: userspace", "path_manager: kernel", 1), &now)
	if kc.early.Load() != nil || len(kc.earlyCreates([]pathmgr.Event{newConnEvent}, nil)) != 0 || slices.ContainsFunc(kk.take(), func(s string) bool { return strings.HasPrefix(s, "create") }) {
		t.Error("an early plan with the in-kernel PM")
	}
}

// A refused early create backs its slot off as the loop's own refusal
// would: no create from the loop until the back-off ends, then one.
func TestEarlyCreateRefused(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k := earlyController(t, reloadClient, &now)
	k.createErr = errors.New("refused")
	c.earlySent = c.earlyCreates([]pathmgr.Event{newConnEvent}, nil)
	if got := k.take(); len(got) != 1 {
		t.Fatalf("early creates %q, want the lte one", got)
	}
	k.createErr = nil
	c.handlePM(newConnEvent, now)
	if got := k.take(); len(got) != 0 {
		t.Fatalf("the loop sent %q right after the refusal", got)
	}
	now = now.Add(retryBackoff)
	c.tick()
	if got := k.take(); !slices.Contains(got, "create 3>"+fakeRemote.String()+" id 1 backup false") {
		t.Fatalf("after the back-off: %q, want the lte create again", got)
	}
}

// A connection the loop already took in from a dump when its ESTABLISHED
// comes: a refused early create (a duplicate) neither backs off nor warns,
// and a sent one is not pending where the slot has its subflow.
func TestEarlyCreatesForAnAdoptedConnection(t *testing.T) {
	now := time.Unix(5000, 0)
	for _, refuse := range []bool{true, false} {
		log := &testbed.LockedBuffer{}
		c, k, cn := fakeController(t, reloadClient, log)
		c.now = func() time.Time { return now }
		c.earlyPM = k
		c.publishEarly()
		if refuse {
			k.createErr = errors.New("refused")
		}
		ev := pathmgr.Event{Type: pathmgr.EventEstablished, Token: cn.token, Local: fakeWiFi, Remote: fakeRemote}
		c.earlySent = c.earlyCreates([]pathmgr.Event{ev}, nil)
		if got := k.take(); len(got) != 1 {
			t.Fatalf("early creates %q, want the (duplicate) lte one", got)
		}
		k.createErr = nil
		c.handlePM(ev, now)
		k.take()
		lte := slot{3, fakeRemote}
		if _, ok := cn.backoff.get(lte); ok {
			t.Errorf("refused %v: the lte slot, which has its subflow, backs off", refuse)
		}
		if !cn.pending.at(lte).IsZero() {
			t.Errorf("refused %v: the lte slot, which has its subflow, is pending", refuse)
		}
		if strings.Contains(log.String(), "level=WARN") {
			t.Errorf("refused %v: warned:\n%s", refuse, log)
		}
	}
}

// A create refused after the plan changed (lte0's address went) does not
// back off: the loop, deciding anew, creates from the new address at once.
func TestEarlyCreateRefusedStalePlan(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k := earlyController(t, reloadClient, &now)
	k.createErr = errors.New("cannot assign requested address")
	c.earlySent = c.earlyCreates([]pathmgr.Event{newConnEvent}, nil)
	k.take()
	k.createErr = nil

	st := c.netRaw()
	old := st.Addrs[3][0]
	renumbered := netmon.Addr{Index: 3, Prefix: netip.MustParsePrefix("10.1.2.9/24")}
	st.Addrs[3] = []netmon.Addr{renumbered}
	c.netRaw = func() netmon.State { return st }
	c.handleNet(netmon.Event{Type: netmon.AddrRemoved, Addr: old})
	c.handleNet(netmon.Event{Type: netmon.AddrAdded, Addr: renumbered})
	c.publishEarly() // as the loop does after each
	k.take()

	c.handlePM(newConnEvent, now)
	got := k.take()
	if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "create 3>"+fakeRemote.String()) }) {
		t.Fatalf("after a refusal from the old address: %q, want the lte create again at once", got)
	}
}

// The loop withdraws the plan when it stops and when it hands over to a
// new binary: the reader then creates nothing for connections no loop of
// this process takes in.
func TestEarlyPlanWithdrawn(t *testing.T) {
	for _, how := range []string{"stop", "upgrade"} {
		now := time.Unix(5000, 0)
		c, _ := earlyController(t, reloadClient, &now)
		if c.early.Load() == nil {
			t.Fatal("no plan published")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := c.loop(ctx, inputs{})
			done <- err
		}()
		if how == "stop" {
			cancel()
		} else {
			c.upgradeCh <- &upgrade{}
		}
		if err := <-done; err != nil {
			t.Fatalf("%s: loop: %v", how, err)
		}
		cancel()
		if c.early.Load() != nil {
			t.Errorf("%s: the plan is still published", how)
		}
		if sent := c.earlyCreates([]pathmgr.Event{newConnEvent}, nil); len(sent) != 0 {
			t.Errorf("%s: the reader still creates: %v", how, sent)
		}
	}
}
