package controller

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/pathmgr"
)

// handoffVersion numbers the format of Handoff; a process refuses a
// handoff of another version (it then starts as after a crash).
const handoffVersion = 1

// handoff is what the kernel cannot tell a new process: the addresses each
// connection's peer announced (the inventory shows only those that carry a
// subflow), the path manager the host had before gigapath changed it, and
// the local address ids with the endpoints the daemon made (a binary
// without IDs reads the record in Config.StateDir instead).
type handoff struct {
	Version        int    `json:"version"`
	PathManagerWas string `json:"path_manager_was,omitempty"`
	// JoinsWas is net.mptcp.allow_join_initial_addr_port before the
	// daemon set it to 0 (initial_address_joins: refuse).
	JoinsWas string        `json:"allow_join_initial_was,omitempty"`
	Conns    []handoffConn `json:"conns,omitempty"`
	IDs      *idRecord     `json:"ids,omitempty"`
	// TelemetryLayout is the layout of the telemetry map's entries
	// (pathpolicy.TelemetryLayout) when the map is handed over: a binary
	// that writes another layout does not keep it.
	TelemetryLayout string `json:"telemetry_layout,omitempty"`
}

type handoffConn struct {
	Token uint32        `json:"token"`
	Peers []handoffPeer `json:"peers"` // in the order they were announced
	// NoJoinRemote: the peer set the C flag, which the inventory does
	// not show.
	NoJoinRemote bool `json:"no_join_remote,omitempty"`
	// Server: a connection accepted here; Announced what this process
	// announced to it (by id), so that the next one need not ask the
	// kernel connection by connection (GET_ADDR).
	Server    bool          `json:"server,omitempty"`
	Announced []handoffPeer `json:"announced,omitempty"`
}

type handoffPeer struct {
	ID   uint8          `json:"id"`
	Addr netip.AddrPort `json:"addr"`
}

// makeHandoff encodes the state a new process needs (loop goroutine).
func (c *Controller) makeHandoff() []byte {
	rec := c.ids.record()
	h := handoff{Version: handoffVersion, PathManagerWas: c.pmWas, JoinsWas: c.joinsWas, IDs: &rec}
	if c.pp != nil {
		h.TelemetryLayout, _ = pathpolicy.TelemetryLayout() // "": not kept
	}
	for tok, cn := range c.conns {
		if len(cn.peers) == 0 && !cn.noJoinRemote && !cn.server {
			continue
		}
		hc := handoffConn{Token: tok, NoJoinRemote: cn.noJoinRemote, Server: cn.server}
		for _, p := range cn.peers { // in announcement order
			hc.Peers = append(hc.Peers, handoffPeer{ID: p.key, Addr: p.val})
		}
		for _, e := range cn.ann { // in id order
			hc.Announced = append(hc.Announced, handoffPeer{ID: e.ID, Addr: netip.AddrPortFrom(e.Addr, e.Port)})
		}
		h.Conns = append(h.Conns, hc)
	}
	slices.SortFunc(h.Conns, func(a, b handoffConn) int { return cmp.Compare(a.Token, b.Token) })
	b, _ := json.Marshal(h)
	return b
}

// holdLinks duplicates the descriptors of the BPF links this process
// holds (pathpolicy, mptcpify). They travel apart from the handoff
// ($GIGAPATH_HELD_BPF_LINKS), so that a new binary that cannot read the
// handoff still releases them. A duplicate does not have FD_CLOEXEC, so it outlives the exec
// and keeps the program attached while the old process closes its own
// descriptors and the new binary starts: sockets made in that gap still
// get their congestion control, mark and MPTCP.
func (c *Controller) holdLinks() []int {
	var ls []link.Link
	if c.pp != nil {
		ls = append(ls, c.pp.Links()...)
	}
	if c.mp != nil && c.mp.Link() != nil {
		ls = append(ls, c.mp.Link())
	}
	var fds []int
	for _, l := range ls {
		f, ok := l.(interface{ FD() int })
		if !ok {
			c.log.Warn("upgrade: a BPF attachment without a link descriptor is not held", "link", fmt.Sprintf("%T", l))
			continue
		}
		fd, err := unix.Dup(f.FD())
		if err != nil {
			c.log.Warn("upgrade: BPF link not held", "err", err)
			continue
		}
		fds = append(fds, fd)
	}
	return fds
}

// holdTelemetry duplicates the descriptor of the sockops program's
// telemetry map, for the new binary's program to keep writing to
// (Config.HeldTelemetryFD): a subflow gets an entry when it is established
// and at its callbacks, so in a new map an idle subflow has none, and
// health samples would come from sock_diag dumps until every subflow had
// sent a segment (docs/benchmarks.md: a dump a sample, up to a tenth of
// a CPU at 50,000 connections).
func (c *Controller) holdTelemetry() []int {
	if c.pp == nil {
		return nil
	}
	fd, err := unix.Dup(c.pp.TelemetryMap().FD())
	if err != nil {
		c.log.Warn("upgrade: telemetry map not held", "err", err)
		return nil
	}
	return []int{fd}
}

// heldTelemetry takes the telemetry map the previous process handed over
// (Config.HeldTelemetryFD), with the layout its handoff gave; nil when
// there is none. The caller closes the map.
func (c *Controller) heldTelemetry() *pathpolicy.HeldTelemetry {
	fd := c.cfg.HeldTelemetryFD
	if fd <= 0 {
		return nil
	}
	c.cfg.HeldTelemetryFD = 0
	m, err := ebpf.NewMapFromFD(fd) // owns fd from here on
	if err != nil {
		c.log.Warn("the telemetry map from the previous binary cannot be read", "err", err)
		return nil
	}
	return &pathpolicy.HeldTelemetry{Map: m, Layout: c.telemetryLayoutIn}
}

// releaseHeld closes the BPF links the previous process held across
// the exec (Config.HeldLinks) and the telemetry map it handed over, once
// this one has attached its own programs; Run also calls it on its way
// out, whatever happened.
func (c *Controller) releaseHeld() {
	for _, fd := range c.cfg.HeldLinks {
		unix.Close(fd)
	}
	c.cfg.HeldLinks = nil
	if c.cfg.HeldTelemetryFD > 0 {
		unix.Close(c.cfg.HeldTelemetryFD)
		c.cfg.HeldTelemetryFD = 0
	}
}

// parseHandoff decodes Config.Handoff; empty input is no handoff.
func parseHandoff(b []byte) (*handoff, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var h handoff
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("handoff from the previous process: %w", err)
	}
	if h.Version != handoffVersion {
		return nil, fmt.Errorf("handoff from the previous process: version %d, this binary reads %d", h.Version, handoffVersion)
	}
	switch h.PathManagerWas {
	case "", "kernel", "userspace":
	default:
		return nil, fmt.Errorf("handoff from the previous process: path_manager_was %q, want kernel or userspace", h.PathManagerWas)
	}
	if !validJoinsWas(h.JoinsWas) {
		return nil, fmt.Errorf("handoff from the previous process: allow_join_initial_was %q, want a number", h.JoinsWas)
	}
	return &h, nil
}

// connsByToken indexes the handed-over connections by token.
func (h *handoff) connsByToken() map[uint32]handoffConn {
	m := make(map[uint32]handoffConn, len(h.Conns))
	for _, hc := range h.Conns {
		m[hc.Token] = hc
	}
	return m
}

// inheritAnnounced gives a server-side connection adopted at start what
// the previous process announced to it, and reports whether the handoff
// said (else the kernel is asked, adoptAnnounced).
func (c *Controller) inheritAnnounced(cn *conn) bool {
	hc, ok := c.peersIn[cn.token]
	if !ok || !hc.Server {
		return false
	}
	for _, a := range hc.Announced {
		cn.setAnnounced(pathmgr.Endpoint{ID: a.ID, Addr: a.Addr.Addr().Unmap(), Port: a.Addr.Port()})
		c.ids.adopt(a.Addr, a.ID)
	}
	return true
}

// inheritPeers gives a connection adopted at start what the previous
// process knew and the inventory does not show: the peer addresses, in
// their announcement order, and the peer's C flag.
func (c *Controller) inheritPeers(cn *conn) {
	hc := c.peersIn[cn.token]
	for _, p := range hc.Peers {
		if p.Addr.IsValid() {
			cn.addPeer(p.ID, p.Addr)
		}
	}
	cn.noJoinRemote = hc.NoJoinRemote
}
