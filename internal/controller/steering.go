package controller

import (
	"slices"
	"time"

	"github.com/gigapath/gigapath/internal/policy"
)

// want is the steering decision for one interface of one connection.
type want struct {
	open   bool // a subflow should exist
	backup bool // with this backup flag
}

// strategy is a steering mode: which of the available interfaces carry
// subflows, with which backup flag, and by which health thresholds (if
// any) their paths are judged.
type strategy interface {
	// decide returns the decision for each of ifs, the available
	// interfaces, in their order, written over buf (its capacity reused;
	// nil for a new one).
	decide(buf []want, ifs []*iface, now time.Time) []want
	// thresholds are the health checks of the mode; nil: the mode needs
	// no health samples.
	thresholds() *thresholds
}

// thresholds judge a path's health samples (health.update).
type thresholds struct {
	rtt     time.Duration
	loss    float64 // send side, percent; 0: off
	reorder float64 // receive side, percent; 0: off
	// bypass: the peer passing a path over counts against it
	// (bypassedBy); only priority keeps a backup subflow beside the
	// primary's, and reorder_percent 0 turns it off with the reorder share.
	bypass     bool
	hysteresis float64 // percent the thresholds are lowered by to recover
	hold       time.Duration
	failures   int           // bad samples in a row that make a path unhealthy
	every      time.Duration // sampling interval
}

// strategyFor is the strategy of the policy's steering mode.
func strategyFor(p *policy.Policy) strategy {
	switch p.Steering {
	case policy.SteerHandover:
		h := p.Handover
		every := h.Interval
		if every <= 0 {
			every = time.Second
		}
		return &handover{thr: thresholds{rtt: h.RTT, loss: h.LossPercent, reorder: h.ReorderPercent,
			hold: h.Hold, failures: h.Failures, every: every}}
	case policy.SteerPriority:
		r := p.Priority
		return &priority{thr: thresholds{rtt: r.RTT, loss: r.LossPercent, reorder: r.ReorderPercent, bypass: r.ReorderPercent > 0,
			hysteresis: r.HysteresisPercent, hold: r.Hold, failures: 1, every: time.Second}}
	default:
		return byFlag{}
	}
}

// byFlag is aggregate and active-standby: every available interface
// carries a subflow, backup as its policy entry says (none is under
// aggregate unless the file says so).
type byFlag struct{}

func (byFlag) decide(buf []want, ifs []*iface, _ time.Time) []want {
	out := slices.Grow(buf[:0], len(ifs))[:len(ifs)]
	for n, i := range ifs {
		out[n] = want{open: true, backup: i.pol.Backup}
	}
	return out
}

func (byFlag) thresholds() *thresholds { return nil }

// handover keeps the backup interfaces' subflows closed while a primary
// (non-backup) interface is healthy; a primary that came back must stay
// for hold before they close again.
type handover struct{ thr thresholds }

func (h *handover) decide(buf []want, ifs []*iface, now time.Time) []want {
	out := slices.Grow(buf[:0], len(ifs))[:len(ifs)]
	var primaryOK bool
	for _, i := range ifs {
		if !i.pol.Backup && !i.health.unhealthy && now.Sub(i.availSince) >= h.thr.hold {
			primaryOK = true
		}
	}
	for n, i := range ifs {
		if i.pol.Backup {
			out[n] = want{open: !primaryOK, backup: false}
		} else {
			out[n] = want{open: true, backup: !primaryOK && i.health.unhealthy}
		}
	}
	return out
}

func (h *handover) thresholds() *thresholds { return &h.thr }

// priority keeps a subflow on every interface and makes all but the
// primary backup: the first healthy interface in policy order.
type priority struct {
	thr thresholds
	// primary is the primary's index at the last observe (0: none yet).
	primary int
}

func (p *priority) decide(buf []want, ifs []*iface, _ time.Time) []want {
	out := slices.Grow(buf[:0], len(ifs))[:len(ifs)]
	primary := primaryOf(ifs)
	for n, i := range ifs {
		out[n] = want{open: true, backup: primary != nil && i != primary}
	}
	return out
}

func (p *priority) thresholds() *thresholds { return &p.thr }

// observe records when another interface becomes the primary
// (health.tookOver: its reorder share does not count for a while).
func (p *priority) observe(ifs []*iface, now time.Time) {
	pr := primaryOf(ifs)
	if pr == nil || pr.index == p.primary {
		return
	}
	if p.primary != 0 {
		pr.health.tookOver = now
	}
	p.primary = pr.index
}

// primaryOf is the first healthy interface in policy order, or the first
// one when none is healthy.
func primaryOf(ifs []*iface) *iface {
	sorted := slices.Clone(ifs)
	slices.SortFunc(sorted, func(a, b *iface) int { return a.order - b.order })
	for _, i := range sorted {
		if !i.health.unhealthy {
			return i
		}
	}
	if len(sorted) > 0 {
		return sorted[0]
	}
	return nil
}
