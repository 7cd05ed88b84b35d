package controller

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

func pathmgrSubflow(local netip.AddrPort) pathmgr.Subflow {
	return pathmgr.Subflow{Local: local, Remote: fakeRemote}
}

// The decision core runs on the injected clock against the fake kernel,
// driven by hand-made events: under handover, wifi going down opens the
// lte subflow; wifi coming back gets its subflow again, and the lte one
// stays until wifi has been available for handover.hold (3 s) by the
// controller's clock, then closes; nothing depends on the wall clock.
func TestCoreHandoverHoldOnInjectedClock(t *testing.T) {
	now := time.Unix(5000, 0)
	yaml := strings.Replace(reloadClient, "steering: aggregate", "steering: handover\nhandover: {hold: 3s}", 1)
	c, k, cn := fakeController(t, yaml, &testbed.LockedBuffer{})
	c.now = func() time.Time { return now }

	// wifi up and healthy from the start: no lte subflow under handover.
	if cn.subOf(pathmgrSubflow(fakeLTE)) != nil {
		t.Fatal("an lte subflow with wifi up under handover")
	}
	// wifi goes: lte is opened, and the kernel establishes it.
	st := c.netRaw()
	wifi := st.Links[2]
	wifi.OperUp = false
	st.Links[2] = wifi
	c.netRaw = func() netmon.State { return st }
	c.handleNet(netmon.Event{Type: netmon.LinkDown, Link: wifi})
	if got := k.take(); !slices.Contains(got, "create 3>"+fakeRemote.String()+" id 1 backup false") {
		t.Fatalf("wifi down: commands %q, want the lte subflow created", got)
	}
	c.handlePM(pathmgr.Event{Type: pathmgr.EventSubEstablished, Token: cn.token, Local: fakeLTE, Remote: fakeRemote, IfIndex: 3, LocalID: 1}, now)
	// wifi comes back at t0.
	wifi.OperUp = true
	st.Links[2] = wifi
	c.handleNet(netmon.Event{Type: netmon.LinkUp, Link: wifi})
	if got := k.take(); !slices.Contains(got, "create 2>"+fakeRemote.String()+" id 2 backup false") {
		t.Fatalf("wifi back: commands %q, want a wifi subflow created", got)
	}
	newWiFi := netip.MustParseAddrPort("10.1.1.2:40002")
	c.handlePM(pathmgr.Event{Type: pathmgr.EventSubEstablished, Token: cn.token, Local: newWiFi, Remote: fakeRemote, IfIndex: 2, LocalID: 2}, now)
	k.take()
	for _, step := range []struct {
		after   time.Duration
		closeIt bool
	}{{time.Second, false}, {2900 * time.Millisecond, false}, {3 * time.Second, true}} {
		now = time.Unix(5000, 0).Add(step.after)
		c.tick()
		got := k.take()
		closed := slices.Contains(got, "destroy "+fakeLTE.String()+">"+fakeRemote.String())
		if closed != step.closeIt {
			t.Fatalf("%v after wifi came back: commands %q; want the lte subflow closed: %v", step.after, got, step.closeIt)
		}
	}
}
