package controller

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// manyConns is an inventory of n established client connections with a
// wifi subflow each, tokens from first.
func manyConns(first uint32, n int) []pathmgr.Connection {
	list := make([]pathmgr.Connection, n)
	for i := range list {
		l := netip.AddrPortFrom(fakeWiFi.Addr(), uint16(20000+i))
		list[i] = pathmgr.Connection{Token: first + uint32(i), Local: l, Remote: fakeRemote, State: 1,
			Subflows: []pathmgr.SubflowInfo{{Local: l, Remote: fakeRemote, IfIndex: 2, State: 1}}}
	}
	return list
}

// acceptedOn443 turns one of manyConns' client connections into a
// server's: accepted on fakeWiFi:443 from the phone's port.
func acceptedOn443(k *pathmgr.Connection) {
	peer := netip.AddrPortFrom(fakeRemote.Addr(), k.Local.Port())
	l := netip.AddrPortFrom(fakeWiFi.Addr(), 443)
	k.Local, k.Remote = l, peer
	k.Subflows[0].Local, k.Subflows[0].Remote = l, peer
}

// runSweep runs the sweep in progress to its end as the loop would, and
// returns how many slices it took.
func runSweep(t *testing.T, c *Controller) int {
	t.Helper()
	steps := 0
	for c.sw != nil {
		c.sweepStep()
		steps++
		if steps > 100000 {
			t.Fatal("the sweep does not end")
		}
	}
	return steps
}

// sweepController is a fakeController (yaml its policy) for the resync
// sweep's tests: its clock stopped for good at now (the value returned:
// changing a copy does not move it), and its resyncs swept in slices as
// the daemon's are.
func sweepController(t testing.TB, yaml string) (c *Controller, k *fakeKernel, now time.Time) {
	t.Helper()
	now = time.Unix(7000, 0)
	c, k, _ = fakeController(t, yaml, &testbed.LockedBuffer{})
	c.now = func() time.Time { return now }
	c.sweeps = true
	return c, k, now
}

// A dump of 20,000 connections is adopted in slices of at most
// sweepBudget each, and ends with the state an adoption at once gives.
func TestSweepAdoptsInSlices(t *testing.T) {
	c, k, _ := sweepController(t, reloadClient)
	list := manyConns(1000, 20000)
	c.startSweep(&dumpResult{dumpReq: dumpReq{reason: "test", asked: time.Now(), clock: c.clock}, list: list, listen: listenPorts(list)})
	var longest time.Duration
	steps := 0
	for c.sw != nil {
		t0 := time.Now()
		c.sweepStep()
		longest = max(longest, time.Since(t0))
		steps++
	}
	if steps < 2 {
		t.Errorf("20,000 connections adopted in %d slice(s); want several of at most %v", steps, sweepBudget)
	}
	t.Logf("%d slices, longest %v", steps, longest)
	if len(c.conns) != 20000 {
		t.Fatalf("%d connections after the sweep, want the dump's 20,000 (the fake one not in it dropped)", len(c.conns))
	}
	if got := k.take(); len(got) != 20000 {
		t.Errorf("%d creates, want one lte subflow for each of 20,000 connections", len(got))
	}
	if c.nsubs[2] != 20000 {
		t.Errorf("wifi subflow count %d, want 20,000", c.nsubs[2])
	}
}

// A reconciliation asked for while a dump is being adopted (a health
// change, an interface event) runs after the adoption, not instead of it:
// every connection of the dump is adopted, and then reconciled again.
func TestReconcileDuringAdoptionWaits(t *testing.T) {
	c, k, now := sweepController(t, reloadClient)
	adoptMany(c, 2*sweepAtOnce, now)
	k.take()
	list := manyConns(1000, 20000)
	c.startSweep(&dumpResult{dumpReq: dumpReq{reason: "test", asked: time.Now(), clock: c.clock}, list: list, listen: listenPorts(list)})
	c.sweepStep()
	if c.sw == nil || c.sw.res == nil {
		t.Fatal("the adoption ended in one slice; the test needs it in progress")
	}
	c.reconcileAll()
	if c.sw == nil || c.sw.res == nil {
		t.Fatal("reconcileAll replaced the adoption in progress")
	}
	runSweep(t, c)
	if len(c.conns) != 20000 {
		t.Errorf("%d connections after the adoption, want the dump's 20,000", len(c.conns))
	}
	if c.swAgain {
		t.Error("the reconciliation asked for during the adoption never ran")
	}
}

// What happened after a dump was asked for wins over the dump: a
// connection changed since keeps its state, one closed since does not come
// back, one opened since stays although the dump lacks it; one the dump
// lacks and nothing touched since is dropped.
func TestSweepKeepsNewerState(t *testing.T) {
	c, k, now := sweepController(t, reloadClient)
	c.dumpReq = make(chan dumpReq, 1)
	adoptMany(c, 3, now) // tokens 1000 (changes later), 1001 (closes later), 1002 (gone from the dump)
	c.reconcileAll()
	k.take()
	c.requestResync("test")
	req := <-c.dumpReq
	list := manyConns(1000, 2) // the dump: 1000 and 1001, as they were
	// Meanwhile: 1000's lte subflow is established, 1001 closes, 1003 opens.
	lte := netip.AddrPortFrom(fakeLTE.Addr(), 20000)
	c.handlePM(pathmgr.Event{Type: pathmgr.EventSubEstablished, Token: 1000, Local: lte, Remote: fakeRemote, IfIndex: 3, LocalID: 1}, now)
	c.handlePM(pathmgr.Event{Type: pathmgr.EventClosed, Token: 1001}, now)
	l3 := netip.AddrPortFrom(fakeWiFi.Addr(), 20003)
	c.handlePM(pathmgr.Event{Type: pathmgr.EventEstablished, Token: 1003, Local: l3, Remote: fakeRemote, IfIndex: 2}, now)
	k.take()
	c.dumped(dumpResult{dumpReq: req, list: list, listen: listenPorts(list)})
	runSweep(t, c)
	if cn := c.conns[1000]; cn == nil || len(cn.subs) != 2 {
		t.Errorf("connection 1000 after the sweep: %+v; want its two subflows (the lte one came after the dump)", cn)
	}
	if _, ok := c.conns[1001]; ok {
		t.Error("connection 1001, closed after the dump was asked for, came back")
	}
	if _, ok := c.conns[1002]; ok {
		t.Error("connection 1002, absent from the dump and untouched since, is still there")
	}
	if _, ok := c.conns[1003]; !ok {
		t.Error("connection 1003, opened after the dump was asked for, was dropped")
	}
	if got := k.take(); len(got) != 0 {
		t.Errorf("the sweep sent %q; want nothing (every connection has what it wants)", got)
	}
	if len(c.closedAt) != 0 {
		t.Errorf("closedAt keeps %d tokens after the sweep", len(c.closedAt))
	}
}

// A newer dump that replaces an adoption in progress decides alone what is
// dropped: a connection only the older dump held (and that older sweep
// had already adopted) goes, one in the newer dump stays.
func TestNewerDumpDecidesTheDrop(t *testing.T) {
	c, k, _ := sweepController(t, reloadClient)
	older := manyConns(1000, 20000)
	c.startSweep(&dumpResult{dumpReq: dumpReq{reason: "older", asked: time.Now(), clock: c.clock}, list: older, listen: listenPorts(older)})
	c.sweepStep()
	if c.sw == nil || c.sw.drop {
		t.Fatal("the older adoption ended its first phase in one slice; the test needs it in progress")
	}
	adopted := len(c.conns)
	newer := manyConns(1000, 10)
	c.startSweep(&dumpResult{dumpReq: dumpReq{reason: "newer", asked: time.Now(), clock: c.clock}, list: newer, listen: listenPorts(newer)})
	runSweep(t, c)
	k.take()
	if len(c.conns) != 10 {
		t.Errorf("%d connections after the newer dump (the older sweep had adopted %d); want its 10", len(c.conns), adopted)
	}
	for _, kc := range newer {
		if _, ok := c.conns[kc.Token]; !ok {
			t.Errorf("connection %d of the newer dump was dropped", kc.Token)
		}
	}
}

// A resync of a carrier proxy's unchanged connections allocates a fixed
// few objects, not a set or a list of its own per sweep that grows with
// the connections (BenchmarkResyncSweep measures the time).
func TestServerSweepAllocatesNothingPerConnection(t *testing.T) {
	c, k, now := sweepController(t, reloadBases["server"])
	list := manyConns(1000, 5000)
	for i := range list {
		acceptedOn443(&list[i])
	}
	listen := map[uint16]bool{443: true}
	c.adopt(list, now)
	c.reconcileEvery()
	k.take()
	sweep := func() {
		c.startSweep(&dumpResult{dumpReq: dumpReq{asked: time.Now(), clock: c.clock}, list: list, listen: listen})
		runSweep(t, c)
	}
	sweep() // the first lists into a buffer the next ones reuse
	if a := testing.AllocsPerRun(3, sweep); a > 16 {
		t.Errorf("a sweep over 5,000 unchanged server connections made %.0f allocations; want a fixed few", a)
	}
	if got := k.take(); len(got) != 0 {
		t.Errorf("sweeps over unchanged connections sent %d commands", len(got))
	}
}

// slowAnnounce is a path manager whose ANNOUNCE takes d, as one does in
// the kernel when it sends the ADD_ADDR.
type slowAnnounce struct {
	PM
	d time.Duration
}

func (p slowAnnounce) Announce(token uint32, e pathmgr.Endpoint) error {
	time.Sleep(p.d)
	return p.PM.Announce(token, e)
}

// A slice stops at its budget even when every connection sends a
// command: the clock is looked at after each one, not every sweepCheck
// connections. 300 proxy connections that each need their announcements
// (the policy has two), of 300 µs or more each (a sleep): a slice of 1 ms
// sends a few, where one that looked every sweepCheck connections sent
// 64.
func TestSweepSliceLooksAtTheClockAfterACommand(t *testing.T) {
	c, k, _ := sweepController(t, reloadBases["server"])
	c.pm = slowAnnounce{c.pm, 300 * time.Microsecond}
	list := manyConns(1000, 300)
	for i := range list {
		acceptedOn443(&list[i])
	}
	c.startSweep(&dumpResult{dumpReq: dumpReq{asked: time.Now(), clock: c.clock}, list: list, listen: map[uint16]bool{443: true}})
	most, total := sweepCommands(c, k)
	if total != 2*len(list) {
		t.Fatalf("the sweep sent %d commands for %d connections that each need two announcements", total, len(list))
	}
	// 1 ms / 300 µs: 4 at most, and the last connection's second; fewer
	// when the sleeps take longer.
	if most > 8 {
		t.Errorf("a slice sent %d commands of 300 µs each; its budget is %v", most, sweepBudget)
	}
}

// slowCreate is a path manager whose SUBFLOW_CREATE takes d on the
// caller's thread, as one does when the create pool's queue is full (or
// there is no pool): the kernel connects the subflow inside the request.
type slowCreate struct {
	PM
	d time.Duration
}

func (p slowCreate) CreateSubflow(token uint32, local pathmgr.Endpoint, remote netip.AddrPort) error {
	time.Sleep(p.d)
	return p.PM.CreateSubflow(token, local, remote)
}

// The same for creates: a slice of a client's sweep in which every
// connection needs its lte subflow, each create 300 µs or more, stops at
// its budget.
func TestSweepSliceLooksAtTheClockAfterACreate(t *testing.T) {
	c, k, _ := sweepController(t, reloadClient)
	c.pm = slowCreate{c.pm, 300 * time.Microsecond}
	list := manyConns(1000, 300)
	c.startSweep(&dumpResult{dumpReq: dumpReq{asked: time.Now(), clock: c.clock}, list: list})
	most, total := sweepCommands(c, k)
	if total != len(list) {
		t.Fatalf("the sweep sent %d commands for %d connections that each need an lte subflow", total, len(list))
	}
	// Without the look at the clock after a create: 32 in one slice.
	if most > 8 {
		t.Errorf("a slice sent %d creates of 300 µs each; its budget is %v", most, sweepBudget)
	}
}

// sweepCommands runs the sweep c has started, a slice at a time: the most
// commands one slice sent, and the total.
func sweepCommands(c *Controller, k *fakeKernel) (most, total int) {
	for c.sw != nil {
		c.sweepStep()
		n := len(k.take())
		most, total = max(most, n), total+n
	}
	return most, total
}

// With more than sweepAtOnce connections reconcileAll is a sweep the loop
// runs in slices; with fewer it is done at once.
func TestReconcileAllSweepsWhenMany(t *testing.T) {
	c, k, now := sweepController(t, reloadClient)
	adoptMany(c, sweepAtOnce/2, now)
	c.reconcileAll()
	if c.sw != nil || len(k.take()) != sweepAtOnce/2 {
		t.Fatal("a few connections were not reconciled at once")
	}
	c.adopt(manyConns(5000, 4*sweepAtOnce), now)
	k.take()
	c.reconcileAll()
	if c.sw == nil {
		t.Fatal("no sweep for many connections")
	}
	runSweep(t, c)
	if got := k.take(); len(got) != 4*sweepAtOnce {
		t.Errorf("the sweep created %d subflows, want %d", len(got), 4*sweepAtOnce)
	}
}

// BenchmarkResyncSweep: the loop's part of a periodic resync with n known
// connections that have not changed (the dump read off the loop is given):
// per op, one sweep over all of them; reported per connection and as the
// longest slice.
func BenchmarkResyncSweep(b *testing.B) {
	for _, side := range []string{"client", "server"} {
		for _, n := range []int{10000, 50000} {
			b.Run(fmt.Sprintf("side=%s/conns=%d", side, n), func(b *testing.B) {
				benchSweep(b, side, n)
			})
		}
	}
}

// benchSweep: a client's connections with a wifi and an lte subflow, or
// a server's accepted ones (a listener on their port) with the lte
// address announced to each.
func benchSweep(b *testing.B, side string, n int) {
	c, k, now := sweepController(b, reloadBases[side])
	list := manyConns(1000, n)
	listen := map[uint16]bool{}
	for i := range list {
		if side == "server" {
			acceptedOn443(&list[i])
			listen[443] = true
			continue
		}
		lte := netip.AddrPortFrom(fakeLTE.Addr(), list[i].Local.Port())
		list[i].Subflows = append(list[i].Subflows, pathmgr.SubflowInfo{Local: lte, Remote: fakeRemote, IfIndex: 3, LocalID: 1, State: 1})
	}
	c.adopt(list, now)
	for _, k := range list {
		c.conns[k.Token].server = listen[k.Local.Port()]
	}
	c.reconcileEvery()
	if cmds := k.take(); side == "server" && len(cmds) < n {
		b.Fatalf("the server announced to %d connections of %d", len(cmds), n)
	}
	var longest time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// The loop's input that starts the sweep is a step too.
		t0 := time.Now()
		c.startSweep(&dumpResult{dumpReq: dumpReq{asked: time.Now(), clock: c.clock}, list: list, listen: listen})
		longest = max(longest, time.Since(t0))
		for c.sw != nil {
			t0 := time.Now()
			c.sweepStep()
			longest = max(longest, time.Since(t0))
		}
	}
	b.StopTimer()
	if got := k.take(); len(got) != 0 {
		b.Fatalf("a sweep over unchanged connections sent %d commands: %v", len(got), got[:min(3, len(got))])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/conn")
	b.ReportMetric(float64(longest.Microseconds())/1000, "longest-slice-ms")
}
