package controller

import (
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// The server side of the decision core: what each accepted connection is
// told (ADD_ADDR, RM_ADDR) follows the policy's announce: entries and the
// interfaces.

// announceWant lists, by local id, what the policy announces to a
// server-side connection now: each fixed address, and for each interface
// entry one address per family while the interface is up, of the
// connection's family and other than the connection's own address and
// port (the kernel never announces that one: it is the connection's id
// 0). The connection's own address with another port is announced: a
// balancer that DNATs to the node's address (kube-proxy, host network)
// makes that address every connection's local one. What
// the connection was told stays as long as it is still valid: an
// interface keeps its announced address while it has it (a new, lower one
// does not replace it), and an address keeps the id it was announced with
// (an address moving to another interface is not withdrawn and announced
// again), because every RM_ADDR makes the peer close its subflows to the
// address. Otherwise: a global address before a link-local one, then the
// lowest.
//
// The list is sorted by id, one entry per id, and lives in a buffer the
// next call reuses: a sweep over 50,000 connections allocated a map per
// connection here, most of its garbage.
func (c *Controller) announceWant(cn *conn) []pathmgr.Endpoint {
	out := c.annWant[:0]
	defer func() { c.annWant = out }()
	v4 := cn.remote.Addr().Unmap().Is4()
	own := func(addr netip.Addr, port uint16) bool {
		return addr == cn.local.Addr().Unmap() && (port == 0 || port == cn.local.Port())
	}
	for _, a := range c.pol.Announce {
		var addr netip.Addr
		if a.Address.IsValid() {
			addr = a.Address.Unmap()
		} else if l, ok := c.netSt.LinkByName(a.Interface); ok && c.announceUp(l) {
			cands := c.annCands[:0]
			for _, x := range c.netSt.Addrs[l.Index] {
				if cand := x.Prefix.Addr().Unmap(); cand.Is4() == v4 && !own(cand, a.Port) {
					cands = append(cands, cand)
				}
			}
			c.annCands = cands
			if cur, ok := announcedOf(cn, cands); ok {
				addr = cur
			} else {
				for _, cand := range cands {
					if !addr.IsValid() || better(cand, addr) {
						addr = cand
					}
				}
			}
		}
		if !addr.IsValid() || addr.Is4() != v4 || own(addr, a.Port) {
			continue
		}
		id, ok := uint8(0), false
		for _, e := range cn.ann {
			if e.Addr == addr && e.Port == a.Port {
				id, ok = e.ID, true // announced before under this id: keep it
			}
		}
		if !ok {
			if id, ok = c.ids.get(netip.AddrPortFrom(addr, a.Port), c.addrLive); !ok {
				c.log.Warn("announce: no free address id", "token", cn.token, "addr", addr)
				continue
			}
		}
		if i, dup := idIndex(out, id); !dup {
			out = slices.Insert(out, i, pathmgr.Endpoint{ID: id, Addr: addr, Port: a.Port})
		}
	}
	return out
}

// wanted is the entry with id of a list sorted by id (announceWant's, a
// connection's ann).
func wanted(list []pathmgr.Endpoint, id uint8) (pathmgr.Endpoint, bool) {
	if i, ok := idIndex(list, id); ok {
		return list[i], true
	}
	return pathmgr.Endpoint{}, false
}

// idIndex is where the entry with id is in a list sorted by id, or would
// be.
func idIndex(list []pathmgr.Endpoint, id uint8) (int, bool) {
	return slices.BinarySearchFunc(list, id, func(e pathmgr.Endpoint, id uint8) int { return cmp.Compare(e.ID, id) })
}

// sameAnnouncement reports whether a and b announce the same address and
// port under the same id.
func sameAnnouncement(a, b pathmgr.Endpoint) bool {
	return a.ID == b.ID && a.Addr == b.Addr && a.Port == b.Port
}

// announceHold is how long an interface may be down before what it
// announced is withdrawn: a carrier blip shorter than this does not make
// every peer close its subflows to the address and open them again.
const announceHold = 3 * time.Second

// announceUp reports whether an announce entry's interface counts as up:
// up, or down for less than announceHold (the tick reconciles, so the
// withdrawal follows within a second of the hold).
func (c *Controller) announceUp(l netmon.Link) bool {
	if l.Up() {
		return true
	}
	at, ok := c.linkDownAt[l.Index]
	return ok && c.now().Sub(at) < announceHold
}

// noteLinksDown records when each link went down (for announceUp).
func (c *Controller) noteLinksDown(now time.Time) {
	for idx, l := range c.netSt.Links {
		if l.Up() {
			delete(c.linkDownAt, idx)
		} else if _, ok := c.linkDownAt[idx]; !ok {
			c.linkDownAt[idx] = now
		}
	}
	for idx := range c.linkDownAt {
		if _, ok := c.netSt.Links[idx]; !ok {
			delete(c.linkDownAt, idx)
		}
	}
}

// better orders the candidates for an interface's announced address.
func better(a, b netip.Addr) bool {
	if la, lb := a.IsLinkLocalUnicast(), b.IsLinkLocalUnicast(); la != lb {
		return lb
	}
	return a.Less(b)
}

// syncAnnounce makes what a server-side connection was told match
// announceWant: RM_ADDR for what is no longer there (an address removed,
// its interface down, a reload), ADD_ADDR for what is new (an address
// added later, its interface back). A refused announce is retried after
// retryBackoff.
func (c *Controller) syncAnnounce(cn *conn) {
	want := c.announceWant(cn)
	if slices.EqualFunc(want, cn.ann, sameAnnouncement) {
		return // nothing to change (a sweep, mostly): no garbage
	}
	now := c.now()
	for i := 0; i < len(cn.ann); i++ {
		e := cn.ann[i]
		id := e.ID
		if w, ok := wanted(want, id); ok && sameAnnouncement(w, e) {
			continue
		}
		if now.Before(cn.annRetry.at(id)) {
			continue
		}
		c.sent("remove")
		if err := c.pm.Remove(cn.token, id); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			// Still announced in the kernel: tried again after the
			// back-off (ENOENT/EINVAL: the kernel has no such id).
			c.m.CommandErrors.WithLabelValues("remove").Inc()
			c.log.Warn("withdraw", "token", cn.token, "addr", e.Addr, "id", id, "err", err)
			cn.annRetry.set(id, now.Add(retryBackoff))
			continue
		}
		cn.dropAnnounced(id)
		cn.annRetry.del(id)
		i-- // the next one moved to i
		c.log.Debug("withdrawn", "token", cn.token, "addr", e.Addr, "id", id)
	}
	for _, ep := range want {
		id := ep.ID
		if _, ok := cn.announced(id); ok || now.Before(cn.annRetry.at(id)) {
			continue
		}
		c.sent("announce")
		if err := c.pm.Announce(cn.token, ep); err != nil {
			c.m.CommandErrors.WithLabelValues("announce").Inc()
			c.log.Warn("announce", "token", cn.token, "addr", ep.Addr, "id", id, "err", err)
			cn.annRetry.set(id, now.Add(retryBackoff))
			continue
		}
		cn.annRetry.del(id)
		cn.setAnnounced(ep)
		c.log.Debug("announced", "token", cn.token, "addr", ep.Addr, "id", id)
	}
}

// adoptAnnounced fills a server-side connection's record of what it was
// announced from the kernel (GET_ADDR with its token, Linux 6.7 and
// later), so an address that went away while no daemon ran is withdrawn.
// Without it (older kernels) everything is announced again.
func (c *Controller) adoptAnnounced(cn *conn) {
	if c.kpm == nil || c.pol.Side != policy.SideServer || c.pol.PathManager != policy.PMUserspace {
		return
	}
	eps, err := c.kpm.ConnectionAddrs(cn.token)
	if err != nil {
		c.log.Debug("announced addresses of an adopted connection unknown", "token", cn.token, "err", err)
		return
	}
	for _, e := range eps {
		if e.Flags&pathmgr.FlagSignal != 0 && e.ID != 0 {
			cn.setAnnounced(pathmgr.Endpoint{ID: e.ID, Addr: e.Addr.Unmap(), Port: e.Port})
			c.ids.adopt(netip.AddrPortFrom(e.Addr, e.Port), e.ID)
		}
	}
}

// announcedOf is the address among cands the connection was told, if any.
// When several are, the one with the lowest id.
func announcedOf(cn *conn, cands []netip.Addr) (netip.Addr, bool) {
	for _, e := range cn.ann { // in id order
		if slices.Contains(cands, e.Addr) {
			return e.Addr, true
		}
	}
	return netip.Addr{}, false
}
