//go:build linux

package netmon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Watcher follows one namespace. Create it with New, subscribe, then Run.
type Watcher struct {
	cfg   Config
	ev    *netlink.Conn   // multicast groups only
	req   *rtnetlink.Conn // dumps
	hub   hub
	ready chan struct{}
	once  sync.Once // closes ready

	mu sync.Mutex
	st *state
}

// New opens the netlink sockets in the configured namespace and joins the
// link, address and route groups. Events are read by Run.
func New(cfg Config) (*Watcher, error) {
	f, err := netnsFile(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	ncfg := &netlink.Config{}
	if f != nil {
		defer f.Close()
		ncfg.NetNS = int(f.Fd())
	}
	ecfg := *ncfg
	ecfg.Groups = unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR |
		unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE
	ev, err := netlink.Dial(unix.NETLINK_ROUTE, &ecfg)
	if err != nil {
		return nil, fmt.Errorf("netmon: rtnetlink event socket: %w", err)
	}
	// A large buffer makes ENOBUFS rare during bursts (link flaps with many
	// addresses); it is handled anyway.
	rb := cfg.ReadBuffer
	if rb == 0 {
		rb = 4 << 20
	}
	if err := ev.SetReadBuffer(rb); err != nil {
		ev.Close()
		return nil, fmt.Errorf("netmon: set read buffer to %d bytes: %w", rb, err)
	}
	req, err := rtnetlink.Dial(ncfg)
	if err != nil {
		ev.Close()
		return nil, fmt.Errorf("netmon: rtnetlink socket: %w", err)
	}
	return &Watcher{cfg: cfg, ev: ev, req: req, ready: make(chan struct{}), st: newState()}, nil
}

// Subscribe returns a channel of events with room for buf of them and a
// function that ends the subscription (and closes the channel). The
// channel is closed when Run returns. Subscribe before Run to see the
// initial state as events (LinkUp, AddrAdded, RouteAdded).
func (w *Watcher) Subscribe(buf int) (<-chan Event, func()) { return w.hub.subscribe(buf) }

// Ready is closed once the initial dump is in State, or when Run returns
// without one.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// State returns a copy of the current snapshot.
func (w *Watcher) State() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st.export()
}

// Run dumps the current state, then follows changes until ctx ends; it
// returns nil then. It closes the Watcher's sockets and subscriptions on
// return. Run may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	markReady := func() { w.once.Do(func() { close(w.ready) }) }
	defer markReady()
	defer w.hub.close()
	defer w.req.Close()
	defer w.ev.Close()

	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
			// Unblock Receive.
			_ = w.ev.SetReadDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()

	if err := w.resync(false); err != nil {
		return err
	}
	markReady()
	for {
		msgs, err := w.ev.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.ENOBUFS) {
				// The messages still queued are older than the ones the
				// kernel dropped: applied after a dump they would bring
				// back a past state. Throw them away, then dump.
				if err := w.drain(); err != nil {
					return err
				}
				if err := w.resync(true); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("netmon: receive: %w", err)
		}
		w.handle(msgs)
	}
}

// drain discards every message queued on the event socket without
// blocking.
func (w *Watcher) drain() error {
	rc, err := w.ev.SyscallConn()
	if err != nil {
		return fmt.Errorf("netmon: drain after ENOBUFS: %w", err)
	}
	buf := make([]byte, 64<<10)
	cerr := rc.Read(func(fd uintptr) bool {
		for {
			_, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if err != nil && !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EINTR) {
				return true // EAGAIN: empty
			}
		}
	})
	if cerr != nil {
		return fmt.Errorf("netmon: drain after ENOBUFS: %w", cerr)
	}
	return nil
}

// resync dumps links, addresses and routes, publishes the differences with
// the current snapshot and replaces it.
func (w *Watcher) resync(kernel bool) error {
	now := time.Now()
	n := newState()
	links, err := w.req.Link.List()
	if err != nil {
		return fmt.Errorf("netmon: dump links: %w", err)
	}
	for i := range links {
		applyLink(n, &links[i], false)
	}
	addrs, err := w.req.Address.List()
	if err != nil {
		return fmt.Errorf("netmon: dump addresses: %w", err)
	}
	for i := range addrs {
		w.applyAddr(n, &addrs[i], false)
	}
	if err := w.dumpRoutes(n); err != nil {
		return err
	}
	w.mu.Lock()
	evs := w.st.diff(n)
	w.st = n
	w.mu.Unlock()
	for _, e := range evs {
		e.Time = now
		w.hub.publish(e)
	}
	if kernel {
		w.hub.publish(Event{Type: Resync, Kernel: true, Time: now})
	}
	return nil
}

func (w *Watcher) dumpRoutes(n *state) error {
	routes, err := w.req.Route.List()
	if err != nil {
		return fmt.Errorf("netmon: dump routes: %w", err)
	}
	for k := range n.routes {
		delete(n.routes, k)
	}
	for i := range routes {
		applyRoute(n, &routes[i], false)
	}
	return nil
}

// handle applies one batch of messages and publishes what changed.
func (w *Watcher) handle(msgs []netlink.Message) {
	now := time.Now()
	w.mu.Lock()
	n := w.st.clone()
	w.mu.Unlock()
	redumpRoutes := false
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.RTM_NEWLINK, unix.RTM_DELLINK:
			var lm rtnetlink.LinkMessage
			if lm.UnmarshalBinary(m.Data) == nil {
				applyLink(n, &lm, m.Header.Type == unix.RTM_DELLINK)
				// IPv4 routes through a link that goes down or away are
				// flushed without a notification: look again.
				redumpRoutes = true
			}
		case unix.RTM_NEWADDR, unix.RTM_DELADDR:
			var am rtnetlink.AddressMessage
			if am.UnmarshalBinary(m.Data) == nil {
				w.applyAddr(n, &am, m.Header.Type == unix.RTM_DELADDR)
				if m.Header.Type == unix.RTM_DELADDR {
					redumpRoutes = true // same for routes via a removed subnet
				}
			}
		case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
			var rm rtnetlink.RouteMessage
			if rm.UnmarshalBinary(m.Data) == nil {
				applyRoute(n, &rm, m.Header.Type == unix.RTM_DELROUTE)
			}
		}
	}
	if redumpRoutes {
		_ = w.dumpRoutes(n) // on failure keep what the messages said
	}
	w.mu.Lock()
	evs := w.st.diff(n)
	w.st = n
	w.mu.Unlock()
	for _, e := range evs {
		e.Time = now
		w.hub.publish(e)
	}
}

func applyLink(s *state, m *rtnetlink.LinkMessage, del bool) {
	idx := int(m.Index)
	if del {
		delete(s.links, idx)
		for a := range s.addrs {
			if a.Index == idx {
				delete(s.addrs, a)
			}
		}
		for r := range s.routes {
			if r.Index == idx {
				delete(s.routes, r)
			}
		}
		return
	}
	if m.Flags&unix.IFF_LOOPBACK != 0 {
		return
	}
	l := Link{
		Index:   idx,
		AdminUp: m.Flags&unix.IFF_UP != 0,
		OperUp:  m.Flags&unix.IFF_RUNNING != 0,
	}
	if a := m.Attributes; a != nil {
		l.Name = a.Name
		l.MTU = int(a.MTU)
		l.HardwareAddr = a.Address
	}
	s.links[idx] = l
}

func (w *Watcher) applyAddr(s *state, m *rtnetlink.AddressMessage, del bool) {
	if m.Attributes == nil {
		return
	}
	ip := m.Attributes.Local // IFA_LOCAL is the local side on point-to-point links
	if ip == nil {
		ip = m.Attributes.Address
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return
	}
	a = a.Unmap()
	p, err := a.Prefix(int(m.PrefixLength))
	if err != nil {
		return
	}
	key := Addr{Index: int(m.Index), Prefix: netip.PrefixFrom(a, p.Bits())}
	flags := m.Attributes.Flags
	if flags == 0 {
		flags = uint32(m.Flags)
	}
	if _, known := s.links[key.Index]; !known && !del {
		// Unknown or loopback link: not reported.
		return
	}
	if del || !usableAddr(a, flags, w.cfg.IncludeLinkLocal) {
		delete(s.addrs, key)
		return
	}
	s.addrs[key] = true
}

func applyRoute(s *state, m *rtnetlink.RouteMessage, del bool) {
	table := uint32(m.Table)
	if m.Attributes.Table != 0 {
		table = m.Attributes.Table
	}
	if table != unix.RT_TABLE_MAIN || m.DstLength != 0 || m.Type != unix.RTN_UNICAST {
		return
	}
	add := func(idx uint32, gw []byte) {
		r := Route{Index: int(idx), Family: int(m.Family), Metric: m.Attributes.Priority}
		if a, ok := netip.AddrFromSlice(gw); ok {
			r.Gateway = a.Unmap()
		}
		if del {
			delete(s.routes, r)
			return
		}
		if _, ok := s.links[r.Index]; ok {
			s.routes[r] = true
		}
	}
	if len(m.Attributes.Multipath) > 0 {
		for _, nh := range m.Attributes.Multipath {
			add(nh.Hop.IfIndex, nh.Gateway)
		}
		return
	}
	add(m.Attributes.OutIface, m.Attributes.Gateway)
}
