package controller

import (
	"time"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// sampleHealth reads the subflows' tcp_info from the inventory and updates
// each interface's RTT, loss and health (with hysteresis).
func (c *Controller) sampleHealth() {
	if c.inv == nil {
		return
	}
	list, err := c.inv.Connections(pathmgr.ListOptions{})
	if err != nil {
		c.log.Warn("inventory", "err", err)
		return
	}
	type agg struct {
		rtt        time.Duration
		n          int
		sent, retr uint64
	}
	per := map[int]*agg{}
	for _, k := range list {
		for _, s := range k.Subflows {
			idx := c.ifindexOf(s.Local.Addr(), s.IfIndex)
			a := per[idx]
			if a == nil {
				a = &agg{}
				per[idx] = a
			}
			if s.RTT > a.rtt {
				a.rtt = s.RTT
			}
			a.n++
			a.sent += s.BytesSent
			a.retr += s.BytesRetrans
		}
	}
	now := time.Now()
	for idx, i := range c.ifs {
		a := per[idx]
		if a == nil {
			continue
		}
		prev := c.prevTot[idx]
		c.prevTot[idx] = [2]uint64{a.sent, a.retr}
		was := i.health.unhealthy
		if a.sent > prev[0] && a.retr >= prev[1] {
			i.health.rtt, i.health.loss = a.rtt, 100*float64(a.retr-prev[1])/float64(a.sent-prev[0])
			i.health.update(c.pol, now)
		} else {
			// No data sent through it since the last sample (a backup
			// path carries none): no evidence. An unhealthy path is
			// given traffic again after Hold, and demoted again by the
			// next samples if it is still bad.
			i.health.idle(c.pol, now)
		}
		if was != i.health.unhealthy {
			c.log.Info("path health", "interface", i.name, "unhealthy", i.health.unhealthy, "rtt", i.health.rtt, "loss_percent", i.health.loss)
		}
	}
}

// update applies the thresholds of the steering mode with hysteresis.
func (h *health) update(p *policy.Policy, now time.Time) {
	rttMax, lossMax, hold, hyst, failuresNeeded := p.Priority.RTT, p.Priority.LossPercent, p.Priority.Hold, p.Priority.HysteresisPercent, 1
	if p.Steering == policy.SteerHandover {
		rttMax, lossMax, hold, hyst, failuresNeeded = p.Handover.RTT, p.Handover.LossPercent, p.Handover.Hold, 0, p.Handover.Failures
	}
	bad := (rttMax > 0 && h.rtt > rttMax) || (lossMax > 0 && h.loss > lossMax)
	k := 1 - hyst/100
	good := !(rttMax > 0 && float64(h.rtt) > float64(rttMax)*k) && !(lossMax > 0 && h.loss > lossMax*k)
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
func (h *health) idle(p *policy.Policy, now time.Time) {
	hold := p.Priority.Hold
	if p.Steering == policy.SteerHandover {
		hold = p.Handover.Hold
	}
	if h.unhealthy && now.Sub(h.since) >= hold {
		h.unhealthy = false
		h.failures = 0
		h.loss = 0
	}
}
