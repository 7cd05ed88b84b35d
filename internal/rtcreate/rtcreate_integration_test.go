//go:build linux && cgo

package rtcreate_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/rtcreate"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// bed is two namespaces joined by a "wifi" and an "lte" veth link, the
// client's on the userspace path manager: cli 10.9.1.1 (wifi0) / 10.9.2.1
// (lte0), srv 10.9.1.2 / 10.9.2.2, an MPTCP sink on srv's port 10500.
type bed struct {
	cli, srv      *testbed.NetNS
	wifi, lte     int
	events        <-chan pathmgr.Event
	cliWiFi       netip.Addr
	cliLTE        netip.Addr
	srvWiFi       netip.Addr
	wifiEP, lteEP pathmgr.Endpoint
}

const port = 10500

func newBed(t *testing.T) *bed {
	t.Helper()
	b := &bed{cli: testbed.NetNST(t, "rtc"), srv: testbed.NetNST(t, "rts"),
		cliWiFi: netip.MustParseAddr("10.9.1.1"), cliLTE: netip.MustParseAddr("10.9.2.1"), srvWiFi: netip.MustParseAddr("10.9.1.2")}
	testbed.ConnectT(t, b.cli, b.srv,
		testbed.VethLink{A: "wifi0", B: "wifi1", AAddr: "10.9.1.1/24", BAddr: "10.9.1.2/24"},
		testbed.VethLink{A: "lte0", B: "lte1", AAddr: "10.9.2.1/24", BAddr: "10.9.2.2/24"})
	for _, ns := range []*testbed.NetNS{b.cli, b.srv} {
		ns.RunT(t, "ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	}
	if err := b.cli.Sysctl("net.mptcp.path_manager", "userspace"); err != nil {
		t.Skipf("the userspace path manager by name (net.mptcp.path_manager, Linux 6.15): %v", err)
	}
	b.wifi = ifindex(t, b.cli, "wifi0")
	b.lte = ifindex(t, b.cli, "lte0")
	b.wifiEP = pathmgr.Endpoint{ID: 1, Addr: b.cliWiFi, IfIndex: b.wifi}
	b.lteEP = pathmgr.Endpoint{ID: 2, Addr: b.cliLTE, IfIndex: b.lte}
	testbed.ServeT(t, b.srv, "tcp", "0.0.0.0:"+strconv.Itoa(port), true, testbed.Sink)

	// The oracle: an independent listener on the client's events.
	l, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: b.cli.Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan pathmgr.Event, 1024)
	testbed.Collect(t, l.Receive, func(evs []pathmgr.Event, err error) bool {
		if err != nil {
			t.Errorf("client events: %v", err)
			return false
		}
		for _, e := range evs {
			ch <- e
		}
		return true
	})
	b.events = ch
	return b
}

func ifindex(t *testing.T, ns *testbed.NetNS, name string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(ns.RunT(t, "cat", "/sys/class/net/"+name+"/ifindex")))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// dial opens an MPTCP connection from the client's wifi address, keeps it
// sending (a connection becomes fully established on data) and returns
// its token, from its ESTABLISHED.
func (b *bed) dial(t *testing.T) uint32 {
	t.Helper()
	c := testbed.DialMPTCPT(t, b.cli, "tcp", b.cliWiFi.String(), net.JoinHostPort(b.srvWiFi.String(), strconv.Itoa(port)))
	testbed.KeepSending(t, c)
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	return b.wait(t, pathmgr.EventEstablished, func(e pathmgr.Event) bool { return e.Local == local }).Token
}

func (b *bed) wait(t *testing.T, typ pathmgr.EventType, ok func(pathmgr.Event) bool) pathmgr.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-b.events:
			if e.Type == typ && ok(e) {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event within 10s", typ)
		}
	}
}

func start(t *testing.T, b *bed, prio int) *rtcreate.Thread {
	t.Helper()
	th, err := rtcreate.Start(rtcreate.Options{NetNS: b.cli.Path(), Priority: prio})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { th.Close() })
	return th
}

func (b *bed) plan(eps ...pathmgr.Endpoint) *rtcreate.Plan {
	p := &rtcreate.Plan{Valid: time.Minute, Addrs: map[netip.Addr]int{b.cliWiFi: b.wifi, b.cliLTE: b.lte}}
	for _, ep := range eps {
		p.Ifaces = append(p.Ifaces, rtcreate.Iface{Index: ep.IfIndex, V4: ep})
	}
	return p
}

// reports passes the thread's reports to a channel until it is closed.
func reports(th *rtcreate.Thread) <-chan rtcreate.Report {
	ch := make(chan rtcreate.Report, 16)
	go func() {
		defer close(ch)
		for b := range batches(th) {
			for _, r := range b.rs {
				ch <- r
			}
		}
	}()
	return ch
}

// batch is one of the thread's messages of reports, and when it was read.
type batch struct {
	rs []rtcreate.Report
	at time.Time
}

// batches passes the thread's messages to a channel until it is closed.
func batches(th *rtcreate.Thread) <-chan batch {
	ch := make(chan batch, 64)
	go func() {
		defer close(ch)
		for {
			rs, err := th.Read()
			if err != nil {
				return
			}
			ch <- batch{rs, time.Now()}
		}
	}()
	return ch
}

func nextReport(t *testing.T, ch <-chan rtcreate.Report) rtcreate.Report {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no report within 10s")
		return rtcreate.Report{}
	}
}

// threads lists this process's threads with their scheduling policy
// (/proc's stat field 41).
func threads(t *testing.T) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, task := range tasks {
		raw, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // after "pid (comm) "
		out[task.Name()] = f[41-3]
	}
	return out
}

func TestIntegrationCreates(t *testing.T) {
	b := newBed(t)
	before := threads(t)
	th := start(t, b, 10)
	if fifo, err := th.RealTime(); !fifo {
		t.Fatalf("not at SCHED_FIFO as root: %v", err)
	}
	fifo := 0
	for tid, policy := range threads(t) {
		if _, ok := before[tid]; !ok && policy == "1" {
			fifo++
		}
	}
	if fifo != 1 {
		t.Errorf("%d new threads at SCHED_FIFO (policy 1 in /proc), want 1", fifo)
	}
	rep := reports(th)
	if err := th.Publish(b.plan(b.wifiEP, b.lteEP)); err != nil {
		t.Fatal(err)
	}

	// A new connection gets its lte subflow and nothing on wifi, its
	// initial subflow's interface.
	token := b.dial(t)
	sub := b.wait(t, pathmgr.EventSubEstablished, func(e pathmgr.Event) bool { return e.Token == token })
	want := netip.AddrPortFrom(b.srvWiFi, port)
	if sub.Local.Addr() != b.cliLTE || sub.LocalID != 2 || sub.Remote != want || sub.IfIndex != b.lte {
		t.Errorf("sub_established = %v, want from %v (id 2, ifindex %d) to %v", sub, b.cliLTE, b.lte, want)
	}
	if ss := b.cli.RunT(t, "ss", "-tnH", "state", "established", "src", b.cliLTE.String()); !strings.Contains(ss, want.String()) {
		t.Errorf("ss shows no lte subflow to %v:\n%s", want, ss)
	}
	if r := nextReport(t, rep); r.Kind != rtcreate.Sent || r.Token != token || r.Remote != want || !slices.Equal(r.Sent, []int{b.lte}) {
		t.Errorf("report = %+v, want %d to %v sent from lte0 (%d) only", r, token, want, b.lte)
	}
	if ss := b.cli.RunT(t, "ss", "-tnH", "state", "established", "src", b.cliWiFi.String(), "dst", want.String()); strings.Count(ss, "\n") != 1 {
		t.Errorf("ss shows other than the one wifi subflow (the initial) to %v:\n%s", want, ss)
	}

	// A refusal: an endpoint whose address is not the namespace's. The
	// report names the connection, the endpoint and the kernel's reason.
	bogus := pathmgr.Endpoint{ID: 3, Addr: netip.MustParseAddr("10.9.3.1"), IfIndex: b.lte}
	if err := th.Publish(b.plan(bogus)); err != nil {
		t.Fatal(err)
	}
	token = b.dial(t)
	r := nextReport(t, rep)
	var pe *pathmgr.Error
	if r.Kind != rtcreate.Refused || r.Token != token || r.Local != bogus || r.Remote != want || !errors.As(r.Err, &pe) {
		t.Fatalf("report = %+v (%v), want %v's create from %v to %v refused with the kernel's error", r, r.Err, token, bogus, want)
	}
	t.Logf("refused: %v", r.Err)
	if r := nextReport(t, rep); r.Kind != rtcreate.Sent || r.Token != token || len(r.Sent) != 0 {
		t.Errorf("report = %+v, want %d sent nothing", r, token)
	}

	// No plan: the connection is reported, and gets nothing.
	if err := th.Publish(nil); err != nil {
		t.Fatal(err)
	}
	token = b.dial(t)
	if r := nextReport(t, rep); r.Kind != rtcreate.NotSent || r.Token != token || r.Remote != want {
		t.Errorf("report = %+v, want %d to %v not sent", r, token, want)
	}

	// An expired plan is no plan.
	p := b.plan(b.lteEP)
	p.Valid = time.Millisecond
	if err := th.Publish(p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	token = b.dial(t)
	if r := nextReport(t, rep); r.Kind != rtcreate.NotSent || r.Token != token {
		t.Errorf("report = %+v, want %d not sent", r, token)
	}

	// Close stops the thread: this process has the threads it had, and
	// reading ends.
	if err := th.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-rep; ok {
		t.Error("a report after Close")
	}
	testbed.Eventually(t, "the thread gone", func() (bool, string) {
		for tid, policy := range threads(t) {
			if policy == "1" {
				return false, "thread " + tid + " at SCHED_FIFO"
			}
		}
		return true, ""
	})
	if err := th.Publish(b.plan(b.lteEP)); err != nil {
		t.Errorf("Publish after Close: %v", err)
	}
}

// The thread holds its reports while connections keep coming, each
// within its pause of the last: a burst's reports come after it, in one
// message (up to 64), and the thread is busy until then, and counts them.
// A connection it sends nothing for (no plan) makes it neither. While
// connections keep coming, their reports come at the hold, served or
// skipped (the peer opened them), or once it has served none for its
// pause.
func TestIntegrationHoldsReports(t *testing.T) {
	b := newBed(t)
	th, err := rtcreate.Start(rtcreate.Options{NetNS: b.cli.Path(), Pause: time.Second, Hold: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { th.Close() })
	if th.Busy() {
		t.Error("busy before any connection")
	}
	rep := batches(th)
	if err := th.Publish(b.plan(b.lteEP)); err != nil {
		t.Fatal(err)
	}
	var tokens []uint32
	for range 5 {
		token := b.dial(t)
		tokens = append(tokens, token)
		// Its lte subflow: the thread took it.
		b.wait(t, pathmgr.EventSubEstablished, func(e pathmgr.Event) bool { return e.Token == token })
		if !th.Busy() {
			t.Fatalf("not busy after connection %d, within its pause", len(tokens))
		}
	}
	dialed := time.Now()
	select {
	case bt := <-rep:
		// Each dial waits for its ESTABLISHED (a few milliseconds):
		// a report before the pause went by comes from a thread that
		// does not hold them.
		if len(bt.rs) != len(tokens) || bt.at.Before(dialed) {
			t.Fatalf("%d reports in the first message, read %v after the last connection; want all %d, after it", len(bt.rs), bt.at.Sub(dialed), len(tokens))
		}
		for i, r := range bt.rs {
			if r.Kind != rtcreate.Sent || r.Token != tokens[i] {
				t.Errorf("report %d = %+v, want connection %d sent", i, r, tokens[i])
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reports within 10s")
	}
	if th.Busy() {
		t.Error("busy after its pause, its reports handed over")
	}
	if n := th.Taken(); n != uint64(len(tokens)) {
		t.Errorf("Taken() = %d, want %d", n, len(tokens))
	}
	if err := th.Publish(nil); err != nil {
		t.Fatal(err)
	}
	b.dial(t)
	// Within its pause of that connection: not busy.
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if th.Busy() {
			t.Fatal("busy after a connection it sent nothing for")
		}
	}
	select {
	case bt := <-rep:
		if r := bt.rs[0]; r.Kind != rtcreate.NotSent {
			t.Fatalf("report %+v, want not sent", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no report within 10s")
	}
	if th.Taken() != uint64(len(tokens)) {
		t.Errorf("taken %d after a connection it sent nothing for; want %d", th.Taken(), len(tokens))
	}
	th.Close()

	// A listener on the client for connections the server opens: the
	// thread skips them (the loop's to decide).
	testbed.ServeT(t, b.cli, "tcp", b.cliWiFi.String()+":"+strconv.Itoa(port+1), true, testbed.Sink)
	for _, tc := range []struct {
		name        string
		pause, hold time.Duration
		skipped     bool
	}{
		{"Hold", 5 * time.Second, 200 * time.Millisecond, false},
		{"HoldWhileSkipping", 5 * time.Second, 200 * time.Millisecond, true},
		{"PauseWhileSkipping", 200 * time.Millisecond, 30 * time.Second, true},
	} {
		skipped := tc.skipped
		t.Run(tc.name, func(t *testing.T) {
			th, err := rtcreate.Start(rtcreate.Options{NetNS: b.cli.Path(), Pause: tc.pause, Hold: tc.hold})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { th.Close() })
			rep := batches(th)
			if err := th.Publish(b.plan(b.lteEP)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for n := 0; ; n++ {
				select {
				case bt := <-rep:
					t.Logf("%d reports %v after the first connection, while connection %d was opened", len(bt.rs), bt.at.Sub(start), n)
					if bt.at.Sub(start) < 200*time.Millisecond {
						t.Errorf("reports %v after the first connection, before 200ms", bt.at.Sub(start))
					}
					// It holds nothing more (it skips what came
					// since): its burst is over.
					if skipped && th.Busy() {
						t.Error("busy after it handed over all it held")
					}
					return
				default:
				}
				if n == 200 {
					t.Fatalf("no reports while 200 connections came, each within its pause (%v) of the last, in %v (hold %v)", tc.pause, time.Since(start), tc.hold)
				}
				if n > 0 && skipped {
					c := testbed.DialMPTCPT(t, b.srv, "tcp", "", net.JoinHostPort(b.cliWiFi.String(), strconv.Itoa(port+1)))
					testbed.KeepSending(t, c)
				} else {
					b.dial(t)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestIntegrationPlanLimits(t *testing.T) {
	b := newBed(t)
	th := start(t, b, 0)
	if fifo, err := th.RealTime(); fifo || err != nil {
		t.Errorf("RealTime() = %v, %v; want false, nil for priority 0", fifo, err)
	}
	p := b.plan()
	for i := range rtcreate.MaxIfaces + 1 {
		p.Ifaces = append(p.Ifaces, rtcreate.Iface{Index: i + 1})
	}
	if err := th.Publish(p); err == nil || !strings.Contains(err.Error(), "at most 8") {
		t.Errorf("Publish(%d interfaces) = %v, want an error naming the limit", len(p.Ifaces), err)
	}
	if _, err := rtcreate.Start(rtcreate.Options{NetNS: b.cli.Path(), Priority: 100}); err == nil || !strings.Contains(err.Error(), "1-99") {
		t.Errorf("Start(priority 100) = %v, want an error naming 1-99", err)
	}
	for _, o := range []rtcreate.Options{{Pause: time.Microsecond}, {Pause: 1500 * time.Microsecond}, {Hold: -time.Second}, {Hold: 2 * time.Hour}} {
		if _, err := rtcreate.Start(o); err == nil || !strings.Contains(err.Error(), "whole milliseconds from 1ms to 1h") {
			t.Errorf("Start(pause %v, hold %v) = %v, want an error naming what is valid", o.Pause, o.Hold, err)
		}
	}
	if _, err := rtcreate.Start(rtcreate.Options{NetNS: "/nonexistent"}); err == nil {
		t.Error("Start in a namespace that does not exist: no error")
	}
}

// startWithoutSysNice starts a thread from an OS thread without
// CAP_SYS_NICE (the created thread inherits the creator's capabilities),
// under RLIMIT_RTPRIO rtprio, as a daemon under the systemd unit
// (CapabilityBoundingSet without it; the unit's LimitRTPRIO=10,
// docs/deploy.md).
func startWithoutSysNice(t *testing.T, rtprio uint64) (fifo bool, err error) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_RTPRIO, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_RTPRIO, &unix.Rlimit{Cur: rtprio, Max: max(old.Max, rtprio)}); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("RLIMIT_RTPRIO %d: raising the hard limit (%d) needs CAP_SYS_RESOURCE, which this environment does not grant (the systemd pass, .ci/vmtest-systemd, checks the same rule through LimitRTPRIO=): %v", rtprio, old.Max, err)
		}
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_RTPRIO, &old)
	type result struct {
		fifo bool
		err  error
	}
	done := make(chan result)
	go func() {
		// Never unlocked: the OS thread, its capabilities dropped,
		// exits with the goroutine.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- result{err: err}
			return
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_NICE
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- result{err: err}
			return
		}
		th, err := rtcreate.Start(rtcreate.Options{Priority: 10})
		if err != nil {
			done <- result{err: err}
			return
		}
		fifo, serr := th.RealTime()
		th.Close()
		done <- result{fifo, serr}
	}()
	r := <-done
	return r.fifo, r.err
}

// Without CAP_SYS_NICE the thread is refused SCHED_FIFO, runs all the
// same and says why; under RLIMIT_RTPRIO 10 it gets priority 10.
func TestIntegrationRealTimeWithoutCapSysNice(t *testing.T) {
	testbed.NeedRoot(t)
	fifo, err := startWithoutSysNice(t, 0)
	if fifo || !errors.Is(err, syscall.EPERM) {
		t.Errorf("without CAP_SYS_NICE, RLIMIT_RTPRIO 0: real-time %v (%v), want false and EPERM", fifo, err)
	}
	t.Run("LimitRTPRIO", func(t *testing.T) {
		if fifo, err := startWithoutSysNice(t, 10); !fifo || err != nil {
			t.Errorf("without CAP_SYS_NICE, RLIMIT_RTPRIO 10: real-time %v (%v), want true", fifo, err)
		}
	})
}
