package controller

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/reuse"
	"github.com/gigapath/gigapath/pathmgr"
)

// subflowSample is one subflow's counters at a health sample, whichever
// source read them.
type subflowSample struct {
	sf      pathmgr.Subflow
	ifindex int // the kernel's, 0 when the source does not say
	// conn tells the sample's connections apart (1, 2, ...: the same
	// number for the subflows of one, which the sample holds together),
	// and backup says that the peer's scheduler takes the subflow for a
	// backup (either end flagged it); conn is 0 when the source does not
	// say (telemetry), or the subflow is not established.
	conn   int
	backup bool
	// smoothed RTT of what this host sends, and the receiver's RTT
	// estimate (tcpi_rcv_rtt) of what it receives
	rtt, rcvRTT              time.Duration
	bytesAcked, bytesRetrans uint64
	dataSegsIn, rcvOOOPack   uint32
}

// Health sources.
const (
	sourceTelemetry = "telemetry" // the sockops program's per-subflow map
	sourceSockDiag  = "sock_diag" // a dump of the namespace's MPTCP sockets
)

// healthBatch is one health sample, as the sampler hands it to the loop:
// totals per interface (per); subs, the subflows' counters they come
// from, only before the sampler aggregates them.
type healthBatch struct {
	at     time.Time
	read   time.Time // when it was read, on the real clock (loop metrics)
	subs   []subflowSample
	per    map[int]*ifTotals
	source string
	err    error
	// fellBack says why the telemetry was not used for this sample.
	fellBack string
	// shared: the sock_diag sample is the resync's dump, not its own.
	shared bool
}

// sampler reads health samples off the event loop: every so often (as
// the loop sets it; 0 stops sampling) it reads every subflow's counters
// from the telemetry map of the sockops program where that is loaded and
// covers the subflows the loop knows of, from a sock_diag dump otherwise,
// turns them into totals per interface since the previous sample, and
// sends those to the loop, which only applies them: the loop's part costs
// O(interfaces), whatever the number of subflows.
type sampler struct {
	diag  inventory                             // the sock_diag source
	tel   atomic.Pointer[pathpolicy.PathPolicy] // the telemetry source, nil until loaded
	known atomic.Int64                          // subflows the loop knows of
	every chan time.Duration                    // from the loop; the latest wins
	out   chan healthBatch                      // to the loop
	now   func() time.Time
	took  func(source string, d time.Duration) // metrics
	agg   *healthAgg                           // the sampler goroutine's
	// addrs maps local addresses to interface indexes, as the loop last
	// published them (publishAddrs).
	addrs atomic.Pointer[map[netip.Addr]int]
	// primary is priority steering's primary interface as the loop last
	// saw it (0: none, or another mode); pair, set by the sampler's
	// goroutine, says that the next sample must pair subflows with their
	// connections (passedOver).
	primary atomic.Int64
	pair    bool
	// active: sampling is on. shared is the resync's latest inventory
	// dump, left here while sampling is on: a sample that needs sock_diag
	// takes it when it is at most an interval old instead of dumping
	// again (at 50,000 connections a dump is a third of a second of
	// kernel CPU, and a second one at the same time doubled a resync's).
	active atomic.Bool
	shared atomic.Pointer[sharedDump]
	maxAge atomic.Int64 // a shared dump's, in ns: the interval
	// lastRead is when the previous sample was read (real clock; the
	// sampler's goroutine only): a shared dump older than it would make
	// the counters go backwards.
	lastRead time.Time
	// telBuf is the last read of the telemetry map, which the next one
	// reuses (only the sampler's goroutine touches it).
	telBuf []pathpolicy.SubflowStats
	// sweeping is set by the loop while it sweeps a resync; a sample
	// waits for the sweep's end (holdForSweep).
	sweeping atomic.Bool
	// followed are the cookies of subflows an earlier program followed
	// that have no entry in the map yet (followed.go); unfollowed those
	// of live subflows that neither have an entry nor are followed, as
	// of the dump read at followedAt and the map of checkedFor (nil: not
	// checked yet). The sampler's goroutine's; followed is set before it
	// starts and read after it ends.
	followed, unfollowed map[uint64]struct{}
	followedAt           time.Time
	checkedFor           *pathpolicy.PathPolicy
	// list is where the list of followed subflows is kept while the
	// daemon runs (followed.go; nil: not kept); wrote is when the sampler
	// last tried to write it, wroteN with how many map entries. The
	// sampler's goroutine's.
	list   *followedList
	wrote  time.Time
	wroteN int
}

// sharedDump is an inventory dump the resync read, for the sampler.
type sharedDump struct {
	list []pathmgr.Connection
	at   time.Time // the controller's clock
	read time.Time // real clock
}

// share offers the sampler a dump the resync read (never kept while
// sampling is off: it would hold the listing's memory).
func (s *sampler) share(list []pathmgr.Connection, at, read time.Time) {
	if s.active.Load() {
		s.shared.Store(&sharedDump{list: list, at: at, read: read})
	}
}

func newSampler(diag inventory, now func() time.Time, took func(string, time.Duration)) *sampler {
	return &sampler{diag: diag, every: make(chan time.Duration, 1), out: make(chan healthBatch, 1), now: now, took: took, agg: newHealthAgg()}
}

// setEvery changes the interval (0: stop sampling). It never blocks.
func (s *sampler) setEvery(d time.Duration) {
	s.active.Store(d > 0)
	s.maxAge.Store(int64(d))
	if d == 0 {
		s.shared.Store(nil)
	}
	for {
		select {
		case s.every <- d:
			return
		default:
		}
		select {
		case <-s.every: // replace a value the sampler has not taken yet
		default:
		}
	}
}

// sampleShare bounds the sampler's CPU: after a sample that took d, the
// next one starts no sooner than sampleShare*d later (a tenth of a CPU at
// most), whatever the interval asked for. A sock_diag dump of 50,000
// connections takes about a second: those are then sampled every ten.
const sampleShare = 10

// nextSampleIn is the wait after a sample that took took, for samples
// every every: the interval counted from the sample's start, or
// sampleShare times what it took.
func nextSampleIn(every, took time.Duration) time.Duration {
	return max(every, sampleShare*took) - took
}

// sweepPoll is how often a held sample looks whether the sweep ended.
const sweepPoll = 5 * time.Millisecond

// holdForSweep waits while the loop sweeps a resync, for at most limit
// (samples are not put off for longer than an interval by sweeps that
// follow each other); it reports false when ctx ended meanwhile. A sample
// at 50,000 connections is tens of milliseconds of system calls (a read
// of the telemetry map) or hundreds (a dump); on a 2-core host the loop's
// thread then waited for a CPU in the middle of a sweep's slice: 10 ms
// slices where they are 2 ms otherwise (benchmarks.md, "a carrier
// proxy's load", run G).
func (s *sampler) holdForSweep(ctx context.Context, limit time.Duration) bool {
	if !s.sweeping.Load() {
		return true
	}
	t := time.NewTicker(sweepPoll)
	defer t.Stop()
	for deadline := time.Now().Add(limit); s.sweeping.Load() && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// run samples until ctx ends; it returns nil then. It runs on a thread of
// its own, below the loop's priority (background).
func (s *sampler) run(ctx context.Context) error {
	defer background()()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	var every time.Duration
	for {
		select {
		case <-ctx.Done():
			return nil
		case d := <-s.every:
			every = d
			t.Stop()
			if d > 0 {
				t.Reset(d)
			} else {
				s.telBuf = nil // not sampling: let the last read's memory go
			}
		case <-t.C:
			if !s.holdForSweep(ctx, every) {
				return nil // stopping: no sample to hold the shutdown
			}
			start := time.Now()
			b := s.sample()
			if b.err == nil {
				b.per = s.agg.add(b.subs, s.ifindexOf, b.at)
				b.subs = nil
			}
			s.pair = s.pairNext(b)
			b.read = time.Now()
			t.Reset(nextSampleIn(every, b.read.Sub(start)))
			select {
			case s.out <- b:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// sample reads one sample: from the telemetry map when it is loaded and
// holds at least as many established subflows as the loop knows, those an
// earlier program followed that have been idle since counted in
// (followed.go; a subflow established while no program was attached never
// gets an entry, nor, until its next callback, one established before the
// program; then the dump is the one that sees every subflow), from
// sock_diag otherwise.
func (s *sampler) sample() healthBatch {
	pp := s.tel.Load()
	if pp != nil && s.pair {
		d := s.fromDiag(pp)
		d.fellBack = "a backup path received data the primary did not: the dump tells whose connections"
		return d
	}
	if pp != nil {
		start := time.Now()
		stats, err := pp.AppendTelemetry(s.telBuf)
		// Read again by the next sample (only subs leave this goroutine),
		// unless most of the subflows have gone.
		s.telBuf = reuse.Keep(stats)
		b := healthBatch{source: sourceTelemetry}
		switch {
		case err != nil:
			b.fellBack = "telemetry: " + err.Error()
		default:
			subs := make([]subflowSample, 0, len(stats))
			for _, st := range stats {
				if st.State != tcpEstablished {
					continue
				}
				subs = append(subs, subflowSample{sf: pathmgr.Subflow{Local: st.Local, Remote: st.Remote},
					rtt: st.SRTT, rcvRTT: st.RcvRTT, bytesAcked: st.BytesAcked, bytesRetrans: st.BytesRetrans,
					dataSegsIn: st.DataSegsIn, rcvOOOPack: st.RcvOOOPack})
			}
			known := s.known.Load()
			covered := s.coverage(pp, pp.TelemetryMap().MaxEntries(), stats, len(subs), known)
			if covered >= known {
				// Not needed: a dump the resync left is let go.
				s.shared.Store(nil)
				s.lastRead = start
				b.at, b.subs = s.now(), subs
				s.took(sourceTelemetry, time.Since(start))
				s.keepFollowed(stats) // after the read's time, within the sample's
				return b
			}
			b.fellBack = fmt.Sprintf("the telemetry map holds %d established subflows of the %d known (%d more followed idle)", len(subs), known, covered-int64(len(subs)))
			s.keepFollowed(stats)
		}
		d := s.fromDiag(pp)
		d.fellBack = b.fellBack
		return d
	}
	return s.fromDiag(nil)
}

const tcpEstablished = 1

// pairNext says whether the sample after b must pair subflows with their
// connections: as long as the totals look as if the peer passed over the
// primary, a dump's that confirmed it too; not after a failed sample (a
// kernel without mptcp_diag fails every dump).
func (s *sampler) pairNext(b healthBatch) bool { return b.err == nil && s.passedOver(b.per) }

// passedOver reports whether a sample's totals look as if the peer passed
// over the primary for a backup path (bypassedBy, by interface). The
// telemetry map does not say which subflows belong to one connection, and
// connections with no subflow through the primary (an application bound
// to the lte interface) would look the same: the next sample, read from
// a sock_diag dump, which does, tells (healthAgg.countBypassed). While it
// holds every sample is a dump, within sampleShare.
func (s *sampler) passedOver(per map[int]*ifTotals) bool {
	primary := int(s.primary.Load())
	if primary == 0 {
		return false
	}
	var on uint64
	if t := per[primary]; t != nil {
		on = t.segs
	}
	for idx, t := range per {
		if idx != primary && bypassedBy(on, t.segs) {
			return true
		}
	}
	return false
}

// ifindexOf is the interface of a local address as the loop last
// published the addresses; hint (the source's) when none has it.
func (s *sampler) ifindexOf(addr netip.Addr, hint int) int {
	if m := s.addrs.Load(); m != nil {
		if idx, ok := (*m)[addr.Unmap()]; ok {
			return idx
		}
	}
	return hint
}

// fromDiag reads every subflow's tcp_info from a sock_diag dump: the
// resync's when it read one within the interval, its own otherwise. With
// pp (the telemetry map did not cover every subflow), its own dump also
// checks the list of followed subflows against the map read after it.
func (s *sampler) fromDiag(pp *pathpolicy.PathPolicy) healthBatch {
	start := time.Now()
	var list []pathmgr.Connection
	var err error
	b := healthBatch{source: sourceSockDiag}
	if sd := s.shared.Swap(nil); sd != nil && time.Since(sd.read) <= time.Duration(s.maxAge.Load()) && sd.read.After(s.lastRead) {
		list, b.at, b.shared = sd.list, sd.at, true
		s.lastRead = sd.read
	} else {
		list, err = s.diag.Connections(pathmgr.ListOptions{})
		b.at, b.err = s.now(), err
		s.lastRead = start
	}
	if err != nil {
		return b
	}
	if pp != nil && len(s.followed) > 0 && !b.shared {
		// Read after the dump: a subflow it shows established has its
		// entry by now if it is to have one. (A resync's dump was checked
		// already, against the sample's read of the map, which came
		// after it: followedCredit.)
		stats, err := pp.AppendTelemetry(s.telBuf)
		s.telBuf = reuse.Keep(stats)
		if err == nil {
			s.checkFollowed(pp, list, s.lastRead, stats)
		}
	}
	n := 0
	for _, k := range list {
		n += len(k.Subflows)
	}
	b.subs = make([]subflowSample, 0, n)
	for i, k := range list {
		for _, sf := range k.Subflows {
			b.subs = append(b.subs, sampleOf(i+1, sf))
		}
	}
	s.took(sourceSockDiag, time.Since(start))
	return b
}

// sampleOf is the sample of a subflow of the sock_diag inventory's conn-th
// connection. One that is not established (a join the kernel still
// retries, one closing) is no part of its connection's: the peer sends
// nothing on it either way (healthAgg.countBypassed).
func sampleOf(conn int, sf pathmgr.SubflowInfo) subflowSample {
	if sf.State != tcpEstablished {
		conn = 0
	}
	return subflowSample{sf: sf.Subflow(), ifindex: sf.IfIndex, conn: conn, backup: sf.Backup || sf.BackupRemote, rtt: sf.RTT, rcvRTT: sf.RcvRTT,
		bytesAcked: sf.BytesAcked, bytesRetrans: sf.BytesRetrans, dataSegsIn: sf.DataSegsIn, rcvOOOPack: sf.RcvOOOPack}
}
