package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/rtcreate"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// fakeRT is the real-time thread as the controller sees it: the plans
// published to it, in order.
type fakeRT struct {
	plans  []*rtcreate.Plan
	full   bool // Publish refuses a plan
	closed bool
	busy   atomic.Bool   // in a burst (Busy)
	taken  atomic.Uint64 // Taken
}

func (f *fakeRT) Publish(p *rtcreate.Plan) error {
	if p != nil && f.full {
		return errors.New("too big")
	}
	f.plans = append(f.plans, p)
	return nil
}
func (f *fakeRT) Read() ([]rtcreate.Report, error) { select {} }
func (f *fakeRT) Busy() bool                       { return f.busy.Load() }
func (f *fakeRT) Taken() uint64                    { return f.taken.Load() }
func (f *fakeRT) Close() error                     { f.closed = true; return nil }

// rtController is earlyController with the real-time thread instead of the
// reader's socket.
func rtController(t *testing.T, now *time.Time) (*Controller, *fakeKernel, *fakeRT) {
	t.Helper()
	c, k, _ := fakeController(t, reloadClient, &testbed.LockedBuffer{})
	c.now = func() time.Time { return *now }
	rt := &fakeRT{}
	c.rtc = rt
	c.publishEarly()
	return c, k, rt
}

// assumeRT has the reader take connection token's creates as sent and
// the loop take the connection in, as TestRealtimeCreatesTakenAsSent.
func assumeRT(c *Controller, token uint32, now time.Time) {
	ev := newConnEvent
	ev.Token = token
	c.earlySent = c.earlyCreates([]pathmgr.Event{ev}, nil)
	c.handlePM(ev, now)
}

// lteCreate is the fake kernel's record of lte0's create to fakeRemote.
var lteCreate = "create 3>" + fakeRemote.String() + " id 1 backup false"

// The thread gets the loop's plan: lte0's endpoint, valid as long as the
// reader's, with the addresses of the planned interfaces; the reader sends
// nothing and takes the plan's creates as sent, and the loop, taking the
// connection in, sends none of its own and has them pending.
func TestRealtimeCreatesTakenAsSent(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, rt := rtController(t, &now)
	p := rt.plans[len(rt.plans)-1]
	if p == nil || len(p.Ifaces) != 2 || p.Valid != earlyPlanValid {
		t.Fatalf("the thread's plan %+v, want wifi0's and lte0's endpoints for %v", p, earlyPlanValid)
	}
	for a, idx := range p.Addrs {
		if !slices.ContainsFunc(p.Ifaces, func(i rtcreate.Iface) bool { return i.Index == idx }) {
			t.Errorf("address %v of interface %d, which is not planned", a, idx)
		}
	}
	sent := c.earlyCreates([]pathmgr.Event{newConnEvent}, nil)
	if got := k.take(); len(got) != 0 || len(sent) != 1 || sent[0].err != nil {
		t.Fatalf("the reader sent %q and took %+v as sent; want nothing sent, lte0's create taken", got, sent)
	}
	c.earlySent = sent
	c.handlePM(newConnEvent, now)
	if got := k.take(); len(got) != 0 {
		t.Errorf("the loop sent %q after the thread's creates", got)
	}
	cn := c.conns[newConnEvent.Token]
	if !cn.assumed || cn.pending.at(slot{3, fakeRemote}).IsZero() {
		t.Errorf("lte0's create is not pending (assumed %v)", cn.assumed)
	}
	// The thread's account: it sent lte0's. Nothing changes but that the
	// connection no longer awaits it, and the create is counted once.
	before := counterValue(c.ls.creates)
	c.rtReport(rtcreate.Report{Kind: rtcreate.Sent, Token: newConnEvent.Token, Remote: fakeRemote, Sent: []int{3}}, now)
	if got := k.take(); len(got) != 0 || cn.assumed || len(c.rtAwait) != 0 || cn.pending.at(slot{3, fakeRemote}).IsZero() {
		t.Errorf("after the thread's account: sent %q, assumed %v, awaiting %v, lte0 pending %v", got, cn.assumed, c.rtAwait, cn.pending.at(slot{3, fakeRemote}))
	}
	if n := counterValue(c.ls.creates) - before; n != 1 {
		t.Errorf("%v creates counted for the thread's one", n)
	}
}

// The thread's account wins over what the reader assumed: an assumed
// create it did not send (its plan had changed) is sent by the loop at
// once; one it sent that the reader did not assume is pending, not sent
// again.
func TestRealtimeAccountWins(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, _ := rtController(t, &now)
	assumeRT(c, newConnEvent.Token, now)
	c.rtReport(rtcreate.Report{Kind: rtcreate.Sent, Token: newConnEvent.Token, Remote: fakeRemote}, now)
	if got := k.take(); !slices.Contains(got, lteCreate) {
		t.Errorf("lte0's create assumed, not sent by the thread: the loop sent %q", got)
	}

	// No plan for the reader (withdrawn), one for the thread: the loop
	// sends its own at once, the thread's account then adds nothing.
	c2, k2, _ := rtController(t, &now)
	c2.early.Store(nil)
	ev := newConnEvent
	ev.Token = 8
	c2.earlySent = c2.earlyCreates([]pathmgr.Event{ev}, nil)
	c2.handlePM(ev, now)
	if got := k2.take(); len(got) != 1 {
		t.Fatalf("without a plan the loop sent %q, want lte0's create", got)
	}
	c2.rtReport(rtcreate.Report{Kind: rtcreate.Sent, Token: ev.Token, Remote: fakeRemote, Sent: []int{3}}, now)
	c2.tick()
	if got := k2.take(); len(got) != 0 || c2.conns[8].pending.at(slot{3, fakeRemote}).IsZero() {
		t.Errorf("after the thread's account the loop sent %q; lte0 pending %v", got, c2.conns[8].pending.at(slot{3, fakeRemote}))
	}
}

// A connection adopted from a dump before the reader's ESTABLISHED is not
// yet assumed: the thread's report waits for the ESTABLISHED.
func TestRealtimeReportWaitsForEstablished(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, _ := rtController(t, &now)
	cn := c.conn(newConnEvent.Token)
	cn.established, cn.local, cn.remote = true, newConnEvent.Local, fakeRemote // as adoptOne leaves it
	c.rtReport(rtcreate.Report{Kind: rtcreate.Sent, Token: newConnEvent.Token, Remote: fakeRemote}, now)
	if len(c.rtLate) != 1 {
		t.Fatalf("late reports %v, want the one waiting for the ESTABLISHED", c.rtLate)
	}
	assumeRT(c, newConnEvent.Token, now)
	if got := k.take(); !slices.Contains(got, lteCreate) || len(c.rtLate) != 0 {
		t.Errorf("the thread sent nothing: the loop sent %q (late %v), want lte0's create", got, c.rtLate)
	}
}

// A connection whose account never comes (the thread lost its event) gets
// the loop's creates once the thread has accounted for connections the
// loop assumed after it, and not before rtAwaitFor.
func TestRealtimeAccountNeverComes(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, _ := rtController(t, &now)
	assumeRT(c, newConnEvent.Token, now)
	for tok := uint32(100); tok < 100+uint32(rtReorder); tok++ {
		assumeRT(c, tok, now)
		c.rtReport(rtcreate.Report{Kind: rtcreate.Sent, Token: tok, Remote: fakeRemote, Sent: []int{3}}, now)
	}
	if got := k.take(); len(got) != 0 {
		t.Fatalf("the loop sent %q for connections the thread served", got)
	}
	now = now.Add(rtAwaitFor)
	c.tick()
	if got := k.take(); len(got) != 0 {
		t.Fatalf("the loop sent %q while the account may still come", got)
	}
	now = now.Add(time.Second)
	c.tick()
	if got := k.take(); !slices.Equal(got, []string{lteCreate}) || len(c.rtAwait) != 0 {
		t.Errorf("no account after %v, %d later ones read: the loop sent %q (awaiting %v), want lte0's create", rtAwaitFor+time.Second, rtReorder, got, c.rtAwait)
	}

	// The same with the later accounts read before their connections'
	// ESTABLISHED (the loop behind the thread): they count once the
	// connections are taken in.
	c2, k2, _ := rtController(t, &now)
	assumeRT(c2, newConnEvent.Token, now)
	for tok := uint32(100); tok < 100+uint32(rtReorder); tok++ {
		c2.rtReport(rtcreate.Report{Kind: rtcreate.Sent, Token: tok, Remote: fakeRemote, Sent: []int{3}}, now)
	}
	now = now.Add(rtAwaitFor + time.Second)
	c2.tick()
	if got := k2.take(); len(got) != 0 {
		t.Fatalf("the loop sent %q with the later accounts not yet applied", got)
	}
	c2.publishEarly() // as the loop's tick does: the plan is valid for two
	for tok := uint32(100); tok < 100+uint32(rtReorder); tok++ {
		assumeRT(c2, tok, now)
	}
	c2.tick()
	if got := k2.take(); !slices.Equal(got, []string{lteCreate}) {
		t.Errorf("the later accounts taken in from rtLate: the loop sent %q, want lte0's create for the first connection only", got)
	}
}

// The thread accounts for every connection it reads, also those whose
// creates the reader did not assume (its plan had been withdrawn): their
// accounts tell the loop how far the thread has come just as well, so an
// assumed connection's missing account is not waited for until
// rtAwaitMax.
func TestRealtimeAccountOrderNotAssumed(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, _ := rtController(t, &now)
	assumeRT(c, newConnEvent.Token, now)
	c.early.Store(nil) // the reader's plan withdrawn: it assumes nothing more
	for tok := uint32(100); tok < 100+uint32(rtReorder); tok++ {
		assumeRT(c, tok, now)
		if cn := c.conns[tok]; cn == nil || cn.assumed {
			t.Fatalf("connection %d: taken in %v, assumed %v; want taken in, not assumed", tok, cn != nil, cn != nil && cn.assumed)
		}
		c.rtReport(rtcreate.Report{Kind: rtcreate.NotSent, Token: tok, Remote: fakeRemote}, now)
	}
	k.take() // the loop's own creates for those
	if _, ok := c.rtAwait[newConnEvent.Token]; !ok || len(c.rtAwait) != 1 {
		t.Fatalf("awaiting %v, want only the assumed connection %d", c.rtAwait, newConnEvent.Token)
	}
	now = now.Add(rtAwaitFor + time.Second)
	c.tick()
	if got := k.take(); !slices.Equal(got, []string{lteCreate}) || len(c.rtAwait) != 0 {
		t.Errorf("no account after %v, %d later connections accounted for: the loop sent %q (awaiting %v), want lte0's create", rtAwaitFor+time.Second, rtReorder, got, c.rtAwait)
	}
}

// A connection the reader assumed before the thread stopped, taken in
// after the loop learnt of it: its account will never come, and once
// rtAwaitFor has passed the loop sends the creates the kernel does not
// list (here, all).
func TestRealtimeAssumedAfterStop(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, _ := rtController(t, &now)
	c.earlySent = c.earlyCreates([]pathmgr.Event{newConnEvent}, nil)
	c.rtReport(rtcreate.Report{Kind: rtcreate.Failed, Err: errors.New("gone")}, now)
	c.handlePM(newConnEvent, now)
	if got := k.take(); len(got) != 0 {
		t.Fatalf("the loop sent %q for a connection assumed sent", got)
	}
	// One the reader read after: not assumed, and with no account to
	// wait for.
	c.earlySent = nil
	later := newConnEvent
	later.Token = 100
	c.handlePM(later, now)
	k.take()
	if _, ok := c.rtAwait[newConnEvent.Token]; !ok || len(c.rtAwait) != 1 {
		t.Fatalf("awaiting %v, want only the assumed connection %d", c.rtAwait, newConnEvent.Token)
	}
	now = now.Add(rtAwaitFor + time.Second)
	c.tick()
	if got := k.take(); !slices.Equal(got, []string{lteCreate}) || len(c.rtAwait) != 0 {
		t.Errorf("the thread stopped, %v later: the loop sent %q (awaiting %v), want lte0's create", rtAwaitFor+time.Second, got, c.rtAwait)
	}
}

// An account that never comes (here: lost with a read of the thread's
// reports that failed) is the kernel's to give: a create the thread sent,
// whose subflow may still be in its handshake, shows in the connection's
// address list (GET_ADDR with the token) with the interface it was sent
// from, and the loop does not send it again; one it did not send does
// not, and the loop sends it, as where the kernel cannot say (before
// Linux 6.7). A connection the kernel no longer has is left to its
// CLOSED; a passing error is asked about again, up to rtAwaitMax.
func TestRealtimeMissingAccountFromKernel(t *testing.T) {
	lteAddr := pathmgr.Endpoint{ID: 1, Addr: fakeLTE.Addr(), IfIndex: 3}
	for _, tc := range []struct {
		name  string
		addrs []pathmgr.Endpoint
		err   error
		want  []string // the loop's creates after rtAwaitFor
		late  []string // and after rtAwaitMax
	}{
		{name: "sent", addrs: []pathmgr.Endpoint{lteAddr}},
		// The address is wifi0's now (a modem that came back as
		// another link): the kernel's interface is the create's.
		{name: "sent, the address moved since", addrs: []pathmgr.Endpoint{{ID: 1, Addr: fakeWiFi.Addr(), IfIndex: 3}}},
		{name: "not sent", want: []string{lteCreate}},
		{name: "the kernel cannot say", addrs: []pathmgr.Endpoint{lteAddr}, err: pathmgr.ErrNotSupported, want: []string{lteCreate}},
		{name: "the connection is gone", addrs: []pathmgr.Endpoint{lteAddr}, err: &pathmgr.Error{Op: "get_addr", Message: "invalid token", Err: syscall.EINVAL}},
		{name: "a passing error", err: syscall.ENOBUFS, late: []string{lteCreate}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(5000, 0)
			c, k, rt := rtController(t, &now)
			assumeRT(c, newConnEvent.Token, now)
			k.connAddrs = map[uint32][]pathmgr.Endpoint{newConnEvent.Token: tc.addrs}
			k.connAddrsErr = tc.err
			out := make(chan []rtcreate.Report, 1)
			if err := readRT(context.Background(), failingRT{rt}, out, make(chan struct{}, 1)); err != nil {
				t.Fatal(err)
			}
			c.rtReport((<-out)[0], now)
			if !rt.closed {
				t.Fatal("the thread is not closed after its reports could not be read")
			}
			now = now.Add(rtAwaitFor + time.Second)
			c.tick()
			cn := c.conns[newConnEvent.Token]
			if got := k.take(); !slices.Equal(got, tc.want) {
				t.Errorf("the loop sent %q, want %q", got, tc.want)
			}
			if tc.want == nil && cn.pending.at(slot{3, fakeRemote}).IsZero() {
				t.Error("lte0's create is not pending, want the thread's kept pending")
			}
			if waiting := len(c.rtAwait) != 0; waiting != (tc.late != nil) {
				t.Errorf("still awaiting an account: %v, want %v", waiting, tc.late != nil)
			}
			now = now.Add(rtAwaitMax)
			c.tick()
			if got := k.take(); !slices.Equal(got, tc.late) || len(c.rtAwait) != 0 {
				t.Errorf("after rtAwaitMax the loop sent %q (awaiting %v), want %q", got, c.rtAwait, tc.late)
			}
		})
	}
}

// A thread that stopped in a burst leaves every connection it had not
// accounted for to the kernel's account: a tick asks about rtAskPerTick
// of them, the next tick about the rest.
func TestRealtimeKernelAskedPerTick(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, _ := rtController(t, &now)
	n := rtAskPerTick + 10
	for tok := uint32(100); tok < 100+uint32(n); tok++ {
		assumeRT(c, tok, now)
	}
	k.take()
	c.rtReport(rtcreate.Report{Kind: rtcreate.Failed, Err: errors.New("gone")}, now)
	now = now.Add(rtAwaitFor + time.Second)
	c.tick()
	if got := len(k.take()); got != rtAskPerTick || len(c.rtAwait) != n-rtAskPerTick {
		t.Fatalf("first tick: %d creates, %d still awaiting; want %d and %d", got, len(c.rtAwait), rtAskPerTick, n-rtAskPerTick)
	}
	now = now.Add(time.Second)
	c.tick()
	if got := len(k.take()); got != n-rtAskPerTick || len(c.rtAwait) != 0 {
		t.Errorf("second tick: %d creates, %d still awaiting; want %d and none", got, len(c.rtAwait), n-rtAskPerTick)
	}
}

// An account that comes after the kernel's (a loop starved past
// rtAwaitMax, the thread's report not read yet) is dropped: the kernel's
// settled the creates and counted them, once.
func TestRealtimeLateAccountAfterKernel(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, _ := rtController(t, &now)
	assumeRT(c, newConnEvent.Token, now)
	k.connAddrs = map[uint32][]pathmgr.Endpoint{newConnEvent.Token: {{ID: 1, Addr: fakeLTE.Addr(), IfIndex: 3}}}
	before := counterValue(c.ls.creates)
	now = now.Add(rtAwaitMax + time.Second)
	c.tick()
	if got := k.take(); len(got) != 0 || counterValue(c.ls.creates)-before != 1 {
		t.Fatalf("the kernel's account: the loop sent %q and counted %v creates, want nothing sent and the thread's one counted", got, counterValue(c.ls.creates)-before)
	}
	c.rtReport(rtcreate.Report{Kind: rtcreate.Sent, Token: newConnEvent.Token, Remote: fakeRemote, Sent: []int{3}}, now)
	if n := counterValue(c.ls.creates) - before; n != 1 || len(c.rtSettled) != 0 {
		t.Errorf("after the late account: %v creates counted (want 1), settled %v (want none)", n, c.rtSettled)
	}
	if got := k.take(); len(got) != 0 {
		t.Errorf("after the late account the loop sent %q", got)
	}
}

// A connection that closes before its account no longer waits for it.
func TestRealtimeClosedNotAwaited(t *testing.T) {
	now := time.Unix(5000, 0)
	c, _, _ := rtController(t, &now)
	assumeRT(c, newConnEvent.Token, now)
	c.handlePM(pathmgr.Event{Type: pathmgr.EventClosed, Token: newConnEvent.Token}, now)
	if len(c.rtAwait) != 0 {
		t.Errorf("awaiting %v after the connection closed, want nothing", c.rtAwait)
	}
}

// The events reader waits while the thread is in a burst: until the
// thread hands its reports over (readRT wakes it) and is no longer busy,
// or until its deadline (rtDeferMax after its last read), or its context
// ends. A thread not in a burst does not hold it.
func TestRealtimeReaderAwaitsBurst(t *testing.T) {
	now := time.Unix(5000, 0)
	c, _, rt := rtController(t, &now)
	flushed := make(chan struct{}, 1)
	never := time.Now().Add(time.Hour)
	await := func(ctx context.Context, until time.Time) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.awaitBurst(ctx, until, 0, flushed)
		}()
		return done
	}
	returned := func(done <-chan struct{}, within time.Duration) bool {
		select {
		case <-done:
			return true
		case <-time.After(within):
			return false
		}
	}

	if !returned(await(context.Background(), never), 10*time.Second) {
		t.Fatal("the reader held back by a thread not in a burst")
	}

	rt.busy.Store(true)
	done := await(context.Background(), never)
	if returned(done, 50*time.Millisecond) {
		t.Fatal("the reader went on while the thread was in its burst, before its deadline")
	}
	// Reports handed over while the burst goes on (the thread's hold
	// was up): the reader waits on.
	flushed <- struct{}{}
	if returned(done, 50*time.Millisecond) {
		t.Fatal("the reader went on at a hand-over in the burst")
	}
	// The burst over, its reports come: readRT wakes the reader.
	rt.busy.Store(false)
	out := make(chan []rtcreate.Report, 1)
	go readRT(t.Context(), oneBatchRT{rt}, out, flushed)
	if !returned(done, 10*time.Second) {
		t.Fatal("the reader still held back after the burst's reports came")
	}

	rt.busy.Store(true)
	if !returned(await(context.Background(), time.Now().Add(50*time.Millisecond)), 10*time.Second) {
		t.Error("the reader held back past its deadline")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done = await(ctx, never)
	cancel()
	if !returned(done, 10*time.Second) {
		t.Error("the reader held back after its context ended")
	}
	// Past rtDeferConns connections since its last read, woken by the
	// thread's hand-over of a full hold, it reads: the events of a long
	// burst stay within what its socket holds.
	done = await(context.Background(), never)
	rt.taken.Store(rtDeferConns - 1)
	flushed <- struct{}{}
	if returned(done, 50*time.Millisecond) {
		t.Fatal("the reader went on before rtDeferConns connections")
	}
	rt.taken.Store(rtDeferConns)
	flushed <- struct{}{}
	if !returned(done, 10*time.Second) {
		t.Error("the reader held back past rtDeferConns connections")
	}
}

// oneBatchRT is a thread each of whose reads returns a batch.
type oneBatchRT struct{ *fakeRT }

func (oneBatchRT) Read() ([]rtcreate.Report, error) {
	return []rtcreate.Report{{Kind: rtcreate.Sent, Token: 1}}, nil
}

// failingRT is a thread whose reports cannot be read.
type failingRT struct{ *fakeRT }

func (failingRT) Read() ([]rtcreate.Report, error) { return nil, syscall.EBADF }

// A loop starved of CPU may take a connection in, and see its clock past
// rtAwaitFor, before it has read the account the thread sent long ago: it
// waits for an account of a later connection (or rtAwaitMax), so that the
// account, read then, does not meet a create the loop sent meanwhile.
func TestRealtimeAccountLateStarvedLoop(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, _ := rtController(t, &now)
	assumeRT(c, newConnEvent.Token, now)
	// Fewer later accounts than the events can be reordered by: not
	// proof that the thread passed this connection.
	for tok := uint32(100); tok < 100+uint32(rtReorder)-1; tok++ {
		assumeRT(c, tok, now)
		c.rtReport(rtcreate.Report{Kind: rtcreate.Sent, Token: tok, Remote: fakeRemote, Sent: []int{3}}, now)
	}
	now = now.Add(rtAwaitFor + 10*time.Second)
	c.tick()
	if got := k.take(); len(got) != 0 {
		t.Fatalf("the loop sent %q before it read the thread's account", got)
	}
	c.rtReport(rtcreate.Report{Kind: rtcreate.Sent, Token: newConnEvent.Token, Remote: fakeRemote, Sent: []int{3}}, now)
	c.tick()
	cn := c.conns[newConnEvent.Token]
	if got := k.take(); len(got) != 0 || len(c.rtAwait) != 0 || cn.pending.at(slot{3, fakeRemote}).IsZero() {
		t.Errorf("after the late account: the loop sent %q, awaiting %v, lte0 pending %v", got, c.rtAwait, cn.pending.at(slot{3, fakeRemote}))
	}

	// With no later account at all, rtAwaitMax ends the wait.
	c2, k2, _ := rtController(t, &now)
	assumeRT(c2, newConnEvent.Token, now)
	now = now.Add(rtAwaitMax)
	c2.tick()
	if got := k2.take(); len(got) != 0 {
		t.Fatalf("the loop sent %q before rtAwaitMax", got)
	}
	now = now.Add(time.Second)
	c2.tick()
	if got := k2.take(); !slices.Contains(got, lteCreate) {
		t.Errorf("no account at all after %v: the loop sent %q, want lte0's create", rtAwaitMax+time.Second, got)
	}

	// The wait counts from when the loop took the connection in: a
	// reader's ESTABLISHED read 40 s before the loop got to it is not a
	// wait of 40 s for an account the loop has not read either.
	c4, k4, _ := rtController(t, &now)
	assumeRT(c4, newConnEvent.Token, now.Add(-40*time.Second))
	c4.tick()
	if got := k4.take(); len(got) != 0 {
		t.Errorf("the loop sent %q as it took in a connection the reader read 40 s before", got)
	}

	// A thread that stopped accounts for nothing more: after rtAwaitFor
	// the loop sends.
	c3, k3, _ := rtController(t, &now)
	assumeRT(c3, newConnEvent.Token, now)
	c3.rtReport(rtcreate.Report{Kind: rtcreate.Failed, Err: errors.New("reading events")}, now)
	k3.take()
	now = now.Add(rtAwaitFor + time.Second)
	c3.tick()
	if got := k3.take(); !slices.Contains(got, lteCreate) {
		t.Errorf("the thread stopped: after %v the loop sent %q, want lte0's create", rtAwaitFor+time.Second, got)
	}
}

// A refusal reported before the reader's ESTABLISHED waits for it, then
// backs the slot off as a refusal of the loop's own would; one after is
// applied at once.
func TestRealtimeRefusals(t *testing.T) {
	for _, before := range []bool{true, false} {
		now := time.Unix(5000, 0)
		c, k, _ := rtController(t, &now)
		ep := c.early.Load().ifs[1].v4
		refused := rtcreate.Report{Kind: rtcreate.Refused, Token: newConnEvent.Token, Local: ep, Remote: fakeRemote,
			Err: &pathmgr.Error{Op: "subflow create", Message: "connect error: -99", Err: syscall.EADDRNOTAVAIL}}
		if before {
			c.rtReport(refused, now)
		}
		c.earlySent = c.earlyCreates([]pathmgr.Event{newConnEvent}, nil)
		c.handlePM(newConnEvent, now)
		if !before {
			c.rtReport(refused, now)
		}
		cn := c.conns[newConnEvent.Token]
		k1 := slot{ep.IfIndex, fakeRemote}
		if !cn.pending.at(k1).IsZero() || cn.backoff.at(k1) != now.Add(retryBackoff) || len(c.rtLate) != 0 {
			t.Errorf("before %v: pending %v, backoff %v (want until %v), late %v", before, cn.pending.at(k1), cn.backoff.at(k1), now.Add(retryBackoff), c.rtLate)
		}
		if got := k.take(); len(got) != 0 {
			t.Errorf("before %v: the loop sent %q inside the back-off", before, got)
		}
		now = now.Add(retryBackoff)
		c.tick()
		if got := k.take(); !slices.Contains(got, lteCreate) {
			t.Errorf("before %v: after the back-off the loop sent %q, want lte0's create", before, got)
		}
	}
}

// A connection the thread sent nothing for (its plan expired) gets the
// loop's creates at once; one the loop created itself is left alone.
func TestRealtimeNotSent(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, _ := rtController(t, &now)
	assumeRT(c, newConnEvent.Token, now)
	c.rtReport(rtcreate.Report{Kind: rtcreate.NotSent, Token: newConnEvent.Token, Remote: fakeRemote}, now)
	if got := k.take(); !slices.Contains(got, lteCreate) {
		t.Errorf("after not sent the loop sent %q, want lte0's create", got)
	}
	// Again: the loop's own create is pending, not the thread's.
	c.rtReport(rtcreate.Report{Kind: rtcreate.NotSent, Token: newConnEvent.Token, Remote: fakeRemote}, now)
	if got := k.take(); len(got) != 0 {
		t.Errorf("a second not sent made the loop send %q", got)
	}
}

// A report whose connection never shows is dropped after rtLateFor.
func TestRealtimeLateExpires(t *testing.T) {
	now := time.Unix(5000, 0)
	c, _, _ := rtController(t, &now)
	c.rtReport(rtcreate.Report{Kind: rtcreate.NotSent, Token: 99, Remote: fakeRemote}, now)
	now = now.Add(rtLateFor)
	c.tick()
	if len(c.rtLate) != 1 {
		t.Fatalf("late reports %v, want the one, kept until rtLateFor has passed", c.rtLate)
	}
	now = now.Add(time.Second)
	c.tick()
	if len(c.rtLate) != 0 {
		t.Errorf("late reports %v after rtLateFor", c.rtLate)
	}
}

// A plan the thread cannot hold is withdrawn from the reader too, and so
// is every plan once the thread has stopped: the loop sends the creates.
func TestRealtimeWithdrawn(t *testing.T) {
	now := time.Unix(5000, 0)
	c, k, rt := rtController(t, &now)
	rt.full = true
	c.publishEarly()
	if c.early.Load() != nil || rt.plans[len(rt.plans)-1] != nil {
		t.Fatalf("a plan the thread refused: reader's %v, thread's %v", c.early.Load(), rt.plans[len(rt.plans)-1])
	}
	rt.full = false
	c.rtReport(rtcreate.Report{Kind: rtcreate.Failed, Err: errors.New("gone")}, now)
	c.publishEarly()
	if c.early.Load() != nil || !rt.closed {
		t.Fatalf("after the thread failed: a plan for the reader %v, the thread closed %v", c.early.Load(), rt.closed)
	}
	c.handlePM(newConnEvent, now)
	if got := k.take(); !slices.Contains(got, lteCreate) {
		t.Errorf("without the thread the loop sent %q, want lte0's create", got)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// fakeBacklog is an events listener's Backlog.
type fakeBacklog struct {
	queued, limit int
	err           error
}

func (f fakeBacklog) Backlog() (int, int, error) { return f.queued, f.limit, f.err }

// The events reader waits for the thread's burst before its next read,
// until rtDeferMax after it, when it found the socket empty; with events
// still queued, while they take at most a quarter of its socket's buffer
// and within rtDeferMax of the read that last found the socket empty;
// not when they take more, nor without the socket's account, nor after a
// loss until a read finds the socket empty.
func TestRealtimeReaderAwaitsWithEventsQueued(t *testing.T) {
	room := fakeBacklog{queued: 250, limit: 1000}
	full, partial := pathmgr.ReceiveBatch, pathmgr.ReceiveBatch-1
	lost := fmt.Errorf("read: %w", pathmgr.ErrEventsLost)
	t0 := time.Unix(5000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var w burstWait
	step := func(what string, b fakeBacklog, wantWait bool, wantUntil time.Time) {
		t.Helper()
		until, wait := w.before(b)
		if wait != wantWait || (wait && !until.Equal(wantUntil)) {
			t.Errorf("%s: wait %v until %v, want %v until %v (state %+v)", what, wait, until.Sub(t0), wantWait, wantUntil.Sub(t0), w)
		}
	}
	w.after(full, nil, at(0))
	step("the first read, full", room, true, at(rtDeferMax))
	w.after(partial, nil, at(0))
	step("the socket read empty", fakeBacklog{err: errors.New("no account")}, true, at(rtDeferMax))
	w.after(full, nil, at(rtDeferMax/2))
	step("events queued, a quarter of the buffer, within rtDeferMax of the empty read", room, true, at(rtDeferMax))
	w.after(full, nil, at(rtDeferMax))
	step("events queued, rtDeferMax after the empty read", room, false, time.Time{})
	w.after(partial, nil, at(3*rtDeferMax/2))
	step("the socket read empty again", room, true, at(5*rtDeferMax/2))
	w.after(full, nil, at(3*rtDeferMax/2))
	step("events queued, more than a quarter", fakeBacklog{queued: 251, limit: 1000}, false, time.Time{})
	step("events queued, no account", fakeBacklog{queued: 0, limit: 1000, err: errors.New("no account")}, false, time.Time{})
	w.after(partial, lost, at(2*rtDeferMax))
	step("events lost", room, false, time.Time{})
	w.after(full, nil, at(2*rtDeferMax))
	step("events lost, a full read since", room, false, time.Time{})
	w.after(partial, nil, at(2*rtDeferMax))
	step("events lost, the socket read empty since", room, true, at(3*rtDeferMax))
}

// startedRT is a thread as startRT returns it: at SCHED_FIFO or not.
type startedRT struct {
	fakeRT
	fifo bool
}

func (s *startedRT) RealTime() (bool, error) {
	if s.fifo {
		return true, nil
	}
	return false, syscall.EPERM
}

// startCreates decides who sends new connections' creates: auto takes
// the thread only where it runs at SCHED_FIFO and otherwise falls back
// to the reader, saying why; realtime keeps the thread at any
// scheduling; reader and a daemon that sends no creates start none.
func TestStartCreates(t *testing.T) {
	auto, reader := reloadClient, reloadClient+"creates: {thread: reader}\n"
	realtime := reloadClient + "creates: {thread: realtime, priority: 20}\n"
	for _, tc := range []struct {
		name, policy string
		thread       policy.CreatesThread // set on the parsed policy: a Policy not made by Parse
		supported    bool
		fifo         bool  // the started thread's
		startErr     error // startRT's
		wantThread   bool
		wantStarted  bool // startRT called
		wantBy, log  string
		wantErr      string
	}{
		{name: "auto", policy: auto, supported: true, fifo: true,
			wantThread: true, wantStarted: true, wantBy: "real-time thread, SCHED_FIFO 10", log: "level=INFO msg=\"new connections' creates are sent by the real-time thread\" sched_fifo=10"},
		{name: "auto without SCHED_FIFO", policy: auto, supported: true,
			wantStarted: true, wantBy: "event reader", log: "level=WARN msg=\"new connections' creates are sent by the event reader, not the real-time thread: it cannot run at SCHED_FIFO"},
		{name: "auto without cgo", policy: auto,
			wantBy: "event reader", log: "not the real-time thread: this build has none (built without cgo) (creates.thread: auto; write reader to mean it)"},
		{name: "auto, the thread fails", policy: auto, supported: true, startErr: errors.New("no socket"),
			wantStarted: true, wantBy: "event reader", log: "not the real-time thread: it did not start (creates.thread: auto; write reader to mean it)\" err=\"no socket\""},
		{name: "reader", policy: reader, supported: true,
			wantBy: "event reader", log: "level=INFO msg=\"new connections' creates are sent by the event reader (creates.thread: reader)\""},
		{name: "realtime", policy: realtime, supported: true, fifo: true,
			wantThread: true, wantStarted: true, wantBy: "real-time thread, SCHED_FIFO 20", log: "level=INFO msg=\"new connections' creates are sent by the real-time thread\" sched_fifo=20"},
		{name: "realtime without SCHED_FIFO", policy: realtime, supported: true,
			wantThread: true, wantStarted: true, wantBy: "real-time thread, at the daemon's scheduling", log: "level=WARN msg=\"the create thread runs at the daemon's scheduling"},
		{name: "realtime, the thread fails", policy: realtime, supported: true, startErr: errors.New("no socket"),
			wantStarted: true, wantErr: "no socket"},
		{name: "a thread Parse would refuse", policy: realtime, thread: "fast", supported: true, wantErr: `creates.thread: "fast": want auto, reader or realtime`},
		{name: "server", policy: reloadBases["server"], supported: true, fifo: true},
		{name: "in-kernel PM", policy: reloadBases["kernel"], supported: true, fifo: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log testbed.LockedBuffer
			c, _, _ := fakeController(t, tc.policy, &log)
			var started *startedRT
			defer func(orig func(rtcreate.Options) (newRT, error)) { startRT = orig }(startRT)
			startRT = func(o rtcreate.Options) (newRT, error) {
				if tc.startErr != nil {
					started = &startedRT{}
					return nil, tc.startErr
				}
				if o.Priority != c.pol.Creates.Priority {
					t.Errorf("started at priority %d, want the policy's %d", o.Priority, c.pol.Creates.Priority)
				}
				started = &startedRT{fifo: tc.fifo}
				return started, nil
			}
			if tc.thread != "" {
				c.pol.Creates.Thread = tc.thread
			}
			th, err := c.startCreates(c.pol, tc.supported)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (th != nil) != tc.wantThread || (started != nil) != tc.wantStarted {
				t.Errorf("thread %v (started: %v), want a thread %v (started: %v)", th, started != nil, tc.wantThread, tc.wantStarted)
			}
			if started != nil && tc.startErr == nil && started.closed != (th == nil) {
				t.Errorf("the thread started was closed: %v, used: %v", started.closed, th != nil)
			}
			if c.createsBy != tc.wantBy {
				t.Errorf("createsBy %q, want %q", c.createsBy, tc.wantBy)
			}
			if got := c.snapshot().Creates; got != tc.wantBy {
				t.Errorf("status says creates %q, want %q", got, tc.wantBy)
			}
			if !strings.Contains(log.String(), tc.log) {
				t.Errorf("log:\n%s\nwant %q", log.String(), tc.log)
			}
		})
	}
}
