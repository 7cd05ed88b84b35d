package controller

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/gigapath/gigapath/pathmgr/netns"
)

// idAlloc gives each local address (with a port when it is announced with
// one) the MPTCP address id the daemon uses for it: in subflow creates and announcements (userspace PM, where the
// kernel refuses an id that a connection already knows with another
// address: "did not match address and id") and for the endpoints it makes
// (in-kernel PM, where ids are unique per namespace). An address keeps its
// id for the daemon's life, across restarts (the record in Config.StateDir
// and the ids of live subflows) and upgrades (the handoff); a new address
// gets a free one. IPv4 addresses get 1-127, IPv6 ones 128-255, so the two
// families never share one and 0 stays the initial subflow's.
//
// It also records which in-kernel PM endpoints the daemon made (owned):
// an endpoint is the daemon's because it made it, never because its id or
// interface look like it, so endpoints made by anyone else are never
// touched, and their ids are never handed out (foreign).
type idAlloc struct {
	byAddr  map[netip.AddrPort]uint8
	addr    [256]netip.AddrPort // by id; the zero AddrPort: free
	seq     [256]uint64         // when each id was given out, for reuse
	n       uint64
	foreign [256]bool
	owned   map[uint8]netip.Addr
	changed bool // since the last save
}

func newIDAlloc() *idAlloc {
	return &idAlloc{byAddr: map[netip.AddrPort]uint8{}, owned: map[uint8]netip.Addr{}}
}

// idRange is the ids of a family.
func idRange(v6 bool) (lo, hi int) {
	if v6 {
		return 128, 255
	}
	return 1, 127
}

// get returns the id of addr (port 0: a local address without a port),
// giving it one if it has none: the lowest free id of its family; when
// every id is taken, the one given out longest ago to an address that is
// gone (live says which addresses are on an interface now). false when
// there is none (every id of the family is live or foreign).
func (a *idAlloc) get(addr netip.AddrPort, live func(netip.Addr) bool) (uint8, bool) {
	addr = norm(addr)
	if id, ok := a.byAddr[addr]; ok && !a.foreign[id] {
		return id, true
	}
	lo, hi := idRange(addr.Addr().Is6())
	pick := -1
	for id := lo; id <= hi; id++ {
		if !a.foreign[id] && !a.addr[id].IsValid() {
			pick = id
			break
		}
	}
	if pick < 0 {
		for id := lo; id <= hi; id++ {
			if a.foreign[id] || (live != nil && live(a.addr[id].Addr())) {
				continue
			}
			if pick < 0 || a.seq[id] < a.seq[pick] {
				pick = id
			}
		}
	}
	if pick < 0 {
		return 0, false
	}
	a.set(addr, uint8(pick))
	return uint8(pick), true
}

// set gives addr the id, taking it from whatever address had it.
func (a *idAlloc) set(addr netip.AddrPort, id uint8) {
	if old := a.addr[id]; old.IsValid() && old != addr {
		delete(a.byAddr, old)
	}
	if prev, ok := a.byAddr[addr]; ok && prev != id {
		a.addr[prev] = netip.AddrPort{}
	}
	a.n++
	a.addr[id], a.seq[id], a.byAddr[addr] = addr, a.n, id
	a.changed = true
}

// adopt records that addr has id (in the kernel, the handoff or the
// record): unless the id is foreign or of the other family, addr then
// keeps it.
func (a *idAlloc) adopt(addr netip.AddrPort, id uint8) {
	addr = norm(addr)
	lo, hi := idRange(addr.Addr().Is6())
	if !addr.IsValid() || int(id) < lo || int(id) > hi || a.foreign[id] {
		return
	}
	if a.byAddr[addr] == id && a.addr[id] == addr {
		return
	}
	a.set(addr, id)
}

// setForeign marks the ids of endpoints the daemon did not make; an
// address that had one of them gets another at its next get.
func (a *idAlloc) setForeign(ids []uint8) {
	a.foreign = [256]bool{}
	for _, id := range ids {
		a.foreign[id] = true
	}
}

// own records an endpoint the daemon made; disown one it deleted.
func (a *idAlloc) own(id uint8, addr netip.Addr) {
	a.owned[id] = addr.Unmap()
	a.changed = true
}

func (a *idAlloc) disown(id uint8) {
	delete(a.owned, id)
	a.changed = true
}

// ours reports whether the endpoint (id, addr) is one the daemon made.
func (a *idAlloc) ours(id uint8, addr netip.Addr) bool {
	o, ok := a.owned[id]
	return ok && o == addr.Unmap()
}

// idRecord is what the allocator keeps across restarts and hands over at
// an upgrade: the ids by address and the endpoints the daemon made.
type idRecord struct {
	IDs       map[netip.AddrPort]uint8 `json:"ids,omitempty"`
	Endpoints []idEndpoint             `json:"endpoints,omitempty"`
}

type idEndpoint struct {
	ID   uint8      `json:"id"`
	Addr netip.Addr `json:"addr"`
}

func (a *idAlloc) record() idRecord {
	r := idRecord{IDs: map[netip.AddrPort]uint8{}}
	for addr, id := range a.byAddr {
		r.IDs[addr] = id
	}
	for id, addr := range a.owned {
		r.Endpoints = append(r.Endpoints, idEndpoint{ID: id, Addr: addr})
	}
	slices.SortFunc(r.Endpoints, func(x, y idEndpoint) int { return int(x.ID) - int(y.ID) })
	return r
}

// load takes a record over (the handoff's or the file's).
func (a *idAlloc) load(r idRecord) {
	addrs := make([]netip.AddrPort, 0, len(r.IDs))
	for addr := range r.IDs {
		addrs = append(addrs, addr)
	}
	// In id order, so that the oldest ids are reused first again.
	slices.SortFunc(addrs, func(x, y netip.AddrPort) int { return int(r.IDs[x]) - int(r.IDs[y]) })
	for _, addr := range addrs {
		a.adopt(addr, r.IDs[addr])
	}
	for _, e := range r.Endpoints {
		a.owned[e.ID] = e.Addr.Unmap()
	}
	a.changed = false
}

// idFile is the allocator's record in dir for the network namespace with
// the cookie: one file per namespace, so daemons of several namespaces
// share the directory. The directory belongs under /run: the cookie is
// unique only until the machine reboots, and so is the record.
func idFile(dir string, cookie uint64) string {
	return filepath.Join(dir, fmt.Sprintf("ids-netns-%d.json", cookie))
}

const idFileVersion = 1

type idFileData struct {
	Version int `json:"version"`
	idRecord
}

// readIDFile reads the record; a missing file is an empty record.
func readIDFile(path string) (idRecord, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return idRecord{}, nil
	}
	if err != nil {
		return idRecord{}, fmt.Errorf("address id record: %w", err)
	}
	var d idFileData
	if err := json.Unmarshal(b, &d); err != nil {
		return idRecord{}, fmt.Errorf("address id record %s: %w", path, err)
	}
	if d.Version != idFileVersion {
		return idRecord{}, fmt.Errorf("address id record %s: version %d, this binary reads %d", path, d.Version, idFileVersion)
	}
	return d.idRecord, nil
}

// writeIDFile replaces the record atomically (a crash leaves the old one
// or the new one).
func writeIDFile(path string, r idRecord) error {
	b, err := json.Marshal(idFileData{Version: idFileVersion, idRecord: r})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, b); err != nil {
		return fmt.Errorf("address id record: %w", err)
	}
	return nil
}

// writeFileAtomic replaces the file at path with b (written beside it,
// then renamed over it), making its directory when missing: a reader
// finds the old content or the new, never part of it.
func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// loadIDs takes the allocator's state over from the handoff of an
// upgrading predecessor, or else from the record in Config.StateDir.
func (c *Controller) loadIDs(h *handoff) {
	if c.cfg.StateDir != "" {
		cookie, err := netns.Cookie(c.cfg.NetNS)
		if err != nil {
			c.log.Warn("address ids are not recorded: the namespace has no cookie", "err", err)
		} else {
			c.idPath = idFile(c.cfg.StateDir, cookie)
		}
	}
	if h != nil && h.IDs != nil {
		c.ids.load(*h.IDs)
		return
	}
	if c.idPath == "" {
		return
	}
	r, err := readIDFile(c.idPath)
	if err != nil {
		c.log.Warn("starting without the address id record: endpoints made by a previous run are left alone", "err", err)
		return
	}
	c.ids.load(r)
}

// saveIDs writes the allocator's record when something changed.
func (c *Controller) saveIDs() {
	if !c.ids.changed {
		return
	}
	c.ids.changed = false
	if c.idPath == "" {
		return
	}
	if err := writeIDFile(c.idPath, c.ids.record()); err != nil {
		c.log.Warn("address id record not saved: a restart may not recognise the endpoints it made", "err", err)
	}
}
