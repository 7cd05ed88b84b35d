package controller

import (
	"net/netip"
	"slices"
	"time"

	"github.com/gigapath/gigapath/pathmgr"
)

// rxCount is a subflow's counters at the previous health sample: data
// segments received and out-of-order packets (receive side), and bytes on
// the wire (acknowledged + retransmitted) and retransmitted (send side).
type rxCount struct {
	segs, ooo  uint32
	wire, retr uint64
}

// rcvRTTValid reports whether a subflow's rcv_rtt is an RTT rather than the
// gap between sparse arrivals. The kernel takes it from the timestamp the
// peer echoes in its data: when the peer sends only now and then (a backup
// subflow's trickle, an application that paces its writes), the echo is of
// our last ACK, sent at the previous arrival, so the "RTT" is the silence
// in between (the testbed showed 430 ms on an idle backup lte subflow whose
// path RTT is below 1 ms, and 10 ms, the pacing interval, on a download
// paced every 10 ms). It counts when the subflow received at least
// rcvRTTMinSegs segments per rcv_rtt on average over the window: a sender
// that keeps less than an initial window in flight is application-limited
// or recovering, and its rcv_rtt measures gaps.
func rcvRTTValid(rcvRTT time.Duration, segs uint32, window time.Duration) bool {
	if rcvRTT <= 0 || window <= 0 {
		return false
	}
	return float64(segs)*float64(rcvRTT) >= rcvRTTMinSegs*float64(window)
}

// takeoverGrace is how long the reorder share of a path that just became
// the primary, and the peer's passing it over, do not count: two 1 s
// samples, so the first full window under its new load is skipped.
const takeoverGrace = 2 * time.Second

// rcvRTTMinSegs: segments per rcv_rtt for the estimate to count (see
// rcvRTTValid); the initial congestion window.
const rcvRTTMinSegs = 10

// ifTotals is one interface's part of a health sample: the send side
// (largest smoothed RTT; bytes on the wire and retransmitted since the
// previous sample) and the receive side (largest valid rcv_rtt, see
// rcvRTTValid; data segments and out-of-order packets received since the
// previous sample; bypassed, the connections whose peer passed over their
// subflows through the interface, see bypassedBy).
type ifTotals struct {
	rtt        time.Duration
	sent, retr uint64
	rxRTT      time.Duration
	segs, ooo  uint64
	// bypassed, and the sum over those connections of what the backup
	// subflow that received most received
	bypassed     int
	bypassedSegs uint64
}

// bypassRatio: a connection's backup subflow that received at least
// rcvRTTMinSegs data segments in a window, and more than bypassRatio times
// what each of its other subflows received, says that the peer passed
// over those (bypassedBy).
const bypassRatio = 10

// bypassedBy reports whether a subflow that received segs data segments
// in a window was passed over by the peer, which sent backupSegs on a
// backup subflow of the same connection meanwhile. A Linux peer sends on a
// subflow flagged backup (by either end) only when no other is active:
// each is stale (retransmission timeouts without progress) or gone; then
// it moves what they held there too. A path that loses most of what is
// sent on it ends there within a second or two, and from then on this
// side receives nothing on it to tell its loss by: only the subflow's
// retransmissions, a few in several seconds (the testbed, 100 % loss on
// wifi during a download: 4 in 6 s, and 2.7 MB a second on the lte
// backup). The ratio leaves out the moment the peer takes a new flag in
// (an MP_PRIO on its way: both subflows carry data then) and a peer whose
// scheduler spreads data without regard for the flag.
func bypassedBy(segs, backupSegs uint64) bool {
	return backupSegs >= rcvRTTMinSegs && segs*bypassRatio < backupSegs
}

// healthAgg turns health samples into per-interface totals since the
// previous sample: it keeps each subflow's counters between samples.
// The sampler owns the daemon's (off the event loop, which then applies
// totals of a few interfaces instead of walking every subflow).
type healthAgg struct {
	prev   map[pathmgr.Subflow]rxCount // subflow → counters at the previous sample
	prevAt time.Time                   // when prev was taken
	conn   []connRx                    // add's, kept for its memory
}

func newHealthAgg() *healthAgg { return &healthAgg{prev: map[pathmgr.Subflow]rxCount{}} }

// add folds one sample into per-interface totals; ifindexOf names the
// interface of a subflow's local address (the source's index a hint).
func (a *healthAgg) add(list []subflowSample, ifindexOf func(netip.Addr, int) int, now time.Time) map[int]*ifTotals {
	per := map[int]*ifTotals{}
	rx := make(map[pathmgr.Subflow]rxCount, len(a.prev))
	window := now.Sub(a.prevAt)
	a.prevAt = now
	// The subflows of the connection being read: a sample holds each
	// connection's together (one not established among them, conn 0,
	// neither ends nor joins the group).
	conn := a.conn[:0]
	for _, s := range list {
		if s.conn != 0 && len(conn) > 0 && s.conn != conn[0].conn {
			countBypassed(conn, per)
			conn = conn[:0]
		}
		idx := ifindexOf(s.sf.Local.Addr(), s.ifindex)
		t := per[idx]
		if t == nil {
			t = &ifTotals{}
			per[idx] = t
		}
		if s.rtt > t.rtt {
			t.rtt = s.rtt
		}
		// Counters are taken per subflow, so a subflow that closes or
		// opens between two samples does not make the interface's
		// totals jump; a subflow's first sample is only its baseline.
		// What went over the wire is acknowledged plus retransmitted
		// bytes. bytes_sent also counts every attempt a local qdisc
		// refused (the segment stays queued and is sent again), so a
		// sender that overruns its own shaper would hide its loss.
		cur := rxCount{segs: s.dataSegsIn, ooo: s.rcvOOOPack, wire: s.bytesAcked + s.bytesRetrans, retr: s.bytesRetrans}
		rx[s.sf] = cur
		prev, seen := a.prev[s.sf]
		if !seen {
			continue
		}
		if cur.wire > prev.wire && cur.retr >= prev.retr {
			t.sent += cur.wire - prev.wire
			t.retr += cur.retr - prev.retr
		}
		if cur.segs < prev.segs || cur.ooo < prev.ooo {
			continue
		}
		d := cur.segs - prev.segs
		if s.conn != 0 {
			conn = append(conn, connRx{conn: s.conn, ifindex: idx, backup: s.backup, segs: uint64(d)})
		}
		if d == 0 {
			continue
		}
		t.segs += uint64(d)
		t.ooo += uint64(cur.ooo - prev.ooo)
		if s.rcvRTT > t.rxRTT && rcvRTTValid(s.rcvRTT, d, window) {
			t.rxRTT = s.rcvRTT
		}
	}
	countBypassed(conn, per)
	a.conn = conn[:0]
	a.prev = rx
	return per
}

// connRx is what a subflow of a known connection (subflowSample.conn)
// received in the window: for countBypassed.
type connRx struct {
	conn, ifindex int
	backup        bool
	segs          uint64
}

// countBypassed counts, in per, the connection of the subflows in conn
// against each interface through which the peer passed over its subflows
// (bypassedBy): each not flagged backup received next to nothing while a
// backup one took the data.
func countBypassed(conn []connRx, per map[int]*ifTotals) {
	var most, backup uint64 // the most any non-backup subflow, and any backup one, received
	for _, r := range conn {
		if r.backup {
			backup = max(backup, r.segs)
		} else {
			most = max(most, r.segs)
		}
	}
	if !bypassedBy(most, backup) {
		return
	}
	for n, r := range conn {
		counted := slices.ContainsFunc(conn[:n], func(o connRx) bool { return !o.backup && o.ifindex == r.ifindex })
		if !r.backup && !counted { // once per interface for the connection
			per[r.ifindex].bypassed++
			per[r.ifindex].bypassedSegs += backup
		}
	}
}

// applyHealth folds a sample into the controller's own aggregate and
// applies it: what the sampler and the loop do together, in one place
// (tests and benchmarks).
func (c *Controller) applyHealth(list []subflowSample, now time.Time) {
	c.applyTotals(c.agg.add(list, c.ifindexOf, now), now)
}

// applyTotals takes one health sample's per-interface totals and updates
// each interface's health (with hysteresis): an interface is judged on
// the send side (largest smoothed RTT, retransmitted share of the bytes
// acknowledged or retransmitted) and the receive side (largest rcv_rtt of
// the subflows that received enough data, out-of-order share of the data
// segments received, the peer passing it over for a backup). A direction
// without data in the window gives no evidence, unless the peer passed
// the path over.
func (c *Controller) applyTotals(per map[int]*ifTotals, now time.Time) {
	thr := c.strat.thresholds()
	if thr == nil {
		return // the mode changed since the sample was asked for
	}
	for idx, i := range c.ifs {
		a := per[idx]
		if a == nil {
			continue
		}
		was := i.health.unhealthy
		h := &i.health
		h.tx = a.sent > 0
		if h.tx {
			h.rtt, h.loss = a.rtt, 100*float64(a.retr)/float64(a.sent)
		}
		// No rcv_rtt yet (too little data for an estimate) is no RTT
		// evidence, but the reorder share still counts.
		h.rx = a.segs > 0
		if h.rx {
			h.rxRTT, h.reorder = a.rxRTT, 100*float64(a.ooo)/float64(a.segs)
		}
		// The peer passed the path over for the backup only if what it
		// sent there dwarfs all the path received (bypassedBy), not just
		// a connection's: a lone connection stuck on lte (a peer whose
		// scheduler ignores the flag, an MP_PRIO lost) while the others
		// download through wifi is not. Where the mode does not count
		// it (thr.bypass), h.bypassed stays 0.
		h.bypassed = 0
		if thr.bypass && bypassedBy(a.segs, a.bypassedSegs) {
			h.bypassed = a.bypassed
		}
		if h.tx || h.rx || h.bypassed > 0 {
			h.update(thr, now)
		} else {
			// No data through it either way since the last sample (a
			// backup path carries none): no evidence. An unhealthy path
			// is given traffic again after Hold, and demoted again by
			// the next samples if it is still bad.
			h.idle(thr, now)
		}
		if was != h.unhealthy {
			c.log.Info("path health", "interface", i.name, "unhealthy", h.unhealthy,
				"rtt", h.rtt, "loss_percent", h.loss, "rcv_rtt", h.rxRTT, "reorder_percent", h.reorder,
				"bypassed_by_peer", h.bypassed)
		}
	}
}

// update applies the thresholds of the steering mode with hysteresis to
// the directions that carried data (h.tx, h.rx): the path is bad when
// either direction is bad (RTT above rtt, or send loss above loss_percent,
// or receive reorder share above reorder_percent; a threshold of 0 is off;
// or the peer passed it over, h.bypassed) and good when every direction
// with data is below the thresholds lowered by the hysteresis.
func (h *health) update(t *thresholds, now time.Time) {
	rttMax, lossMax, reorderMax, hold, hyst, failuresNeeded := t.rtt, t.loss, t.reorder, t.hold, t.hysteresis, max(t.failures, 1)
	// above reports whether v crosses max lowered by the fraction cut.
	above := func(v, max, cut float64) bool { return max > 0 && v > max*(1-cut) }
	rtt := float64(rttMax)
	// A path that has just taken over a bulk transfer fills its own queue
	// for a moment: its first window's reorder share says so, not that it
	// is lossy (1 run in 5 marked lte unhealthy right after the switch).
	// Nor does the peer's passing over it count then: the peer learns of
	// the new primary from an MP_PRIO, and sends on the old one until then.
	settled := now.Sub(h.tookOver) >= takeoverGrace
	check := func(cut float64) bool {
		return h.tx && (above(float64(h.rtt), rtt, cut) || above(h.loss, lossMax, cut)) ||
			h.rx && (above(float64(h.rxRTT), rtt, cut) || settled && above(h.reorder, reorderMax, cut)) ||
			settled && h.bypassed > 0
	}
	bad := check(0)
	good := !check(hyst / 100)
	h.sampled = true
	if !h.unhealthy {
		if bad {
			h.failures++
			if h.failures >= failuresNeeded {
				h.unhealthy = true
				h.since = now
				h.goodSince = time.Time{}
			}
		} else {
			h.failures = 0
		}
		return
	}
	if !good {
		h.goodSince = time.Time{}
		return
	}
	if h.goodSince.IsZero() {
		h.goodSince = now
	}
	if now.Sub(h.goodSince) >= hold {
		h.unhealthy = false
		h.failures = 0
	}
}

// idle handles a sample without traffic: an unhealthy path is retried once
// it has been unhealthy for the hold time.
func (h *health) idle(t *thresholds, now time.Time) {
	if h.unhealthy && now.Sub(h.since) >= t.hold {
		h.unhealthy = false
		h.failures = 0
		h.loss, h.reorder = 0, 0
	}
}

// unhealthyIfaces lists the interfaces judged unhealthy, by index: the
// only part of health the steering decisions read.
func (c *Controller) unhealthyIfaces() []int {
	var out []int
	for idx, i := range c.ifs {
		if i.health.unhealthy {
			out = append(out, idx)
		}
	}
	slices.Sort(out)
	return out
}
