//go:build linux

package routing

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Manager creates and removes the managed tables and rules of one
// namespace. Its methods are safe for concurrent use.
type Manager struct {
	cfg  Config
	mu   sync.Mutex
	conn *rtnetlink.Conn
}

// New opens an rtnetlink socket in the configured namespace.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	f, err := netnsFile(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	ncfg := &netlink.Config{}
	if f != nil {
		defer f.Close()
		ncfg.NetNS = int(f.Fd())
	}
	c, err := rtnetlink.Dial(ncfg)
	if err != nil {
		return nil, fmt.Errorf("routing: rtnetlink socket: %w", err)
	}
	// The kernel then says why it refuses a route or rule.
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	// Strict checking lets route dumps be filtered by the kernel (our
	// protocol, one table), which matters on hosts with large tables.
	// Kernels without it (< 4.20) dump everything; we filter anyway.
	_ = c.SetOption(netlink.GetStrictCheck, true)
	return &Manager{cfg: cfg, conn: c}, nil
}

// Close closes the socket; what the Manager made stays (see Cleanup).
func (m *Manager) Close() error { return m.conn.Close() }

// Table returns the table number of interface index.
func (m *Manager) Table(index int) uint32 { return m.cfg.Table(index) }

// Ensure makes the kernel hold exactly the table and rules of p: missing
// routes and rules are added, ours that p no longer needs (an address gone,
// a gateway changed) are removed. It is idempotent. A Path without
// addresses removes everything of that interface. Routes the kernel
// refuses because the link went down or away meanwhile are skipped: the
// watcher's next event for the link brings the next Ensure.
func (m *Manager) Ensure(p Path) error {
	if p.Index <= 0 {
		return fmt.Errorf("routing: interface %q has index %d; want the kernel's ifindex (> 0)", p.Name, p.Index)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	wantRules, wantRoutes := m.cfg.desired(p)
	haveRules, haveRoutes, err := m.owned(m.Table(p.Index))
	if err != nil {
		return err
	}
	var errs []error
	// Rules first out, last in: a rule never points at a half-built table.
	for _, r := range haveRules {
		if !containsRule(wantRules, r) {
			errs = append(errs, m.delRule(r, p.Name))
		}
	}
	for _, r := range haveRoutes {
		if !containsRoute(wantRoutes, r) {
			errs = append(errs, m.delRoute(r, p.Name))
		}
	}
	for _, r := range wantRoutes {
		if !containsRoute(haveRoutes, r) {
			errs = append(errs, m.addRoute(r, p.Name))
		}
	}
	for _, r := range wantRules {
		if !containsRule(haveRules, r) {
			errs = append(errs, m.addRule(r, p.Name))
		}
	}
	return errors.Join(errs...)
}

// Remove deletes every rule and route of ours for interface index.
func (m *Manager) Remove(index int) error {
	if index <= 0 {
		return fmt.Errorf("routing: interface index %d; want the kernel's ifindex (> 0)", index)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removeWhere(m.Table(index))
}

// Cleanup deletes every rule and route in the namespace that carries the
// Manager's protocol marker: what this process made, and what an earlier
// run left behind. Nothing else is touched.
func (m *Manager) Cleanup() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removeWhere(0)
}

// Prune deletes every rule and route of ours except those of the
// interfaces in keep. A restarted daemon calls Ensure for the interfaces it
// manages, then Prune with them: leftovers of interfaces that are gone are
// removed, and the tables of live ones never disappear, not even briefly.
func (m *Manager) Prune(keep []int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	tables := map[uint32]bool{}
	for _, i := range keep {
		tables[m.Table(i)] = true
	}
	rules, routes, err := m.owned(0)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rules {
		if !tables[r.Table] {
			errs = append(errs, m.delRule(r, ""))
		}
	}
	for _, r := range routes {
		if !tables[r.Table] {
			errs = append(errs, m.delRoute(r, ""))
		}
	}
	return errors.Join(errs...)
}

// Owned lists the rules and routes of ours currently in the kernel.
func (m *Manager) Owned() ([]Rule, []Route, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owned(0)
}

func (m *Manager) removeWhere(table uint32) error {
	rules, routes, err := m.owned(table)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rules {
		errs = append(errs, m.delRule(r, ""))
	}
	for _, r := range routes {
		errs = append(errs, m.delRoute(r, ""))
	}
	return errors.Join(errs...)
}

// owned dumps the rules and routes with our protocol in table (0: all
// tables).
func (m *Manager) owned(table uint32) ([]Rule, []Route, error) {
	rms, err := m.conn.Rule.List()
	if err != nil {
		return nil, nil, fmt.Errorf("routing: dump rules: %w", err)
	}
	var rules []Rule
	for _, rm := range rms {
		a := rm.Attributes
		if a == nil || a.Protocol == nil || *a.Protocol != m.cfg.Protocol {
			continue
		}
		r := Rule{Table: uint32(rm.Table)}
		if a.Table != nil {
			r.Table = *a.Table
		}
		if a.Priority != nil {
			r.Priority = *a.Priority
		}
		if a.Src != nil {
			if ip, ok := netip.AddrFromSlice(*a.Src); ok {
				r.From = netip.PrefixFrom(ip.Unmap(), int(rm.SrcLength))
			}
		}
		if !r.From.IsValid() {
			// Not a shape we make: still ours by its marker; delete by
			// table and priority.
			r.From = netip.Prefix{}
		}
		if table == 0 || r.Table == table {
			rules = append(rules, r)
		}
	}
	// A dump filtered by protocol and table (honoured under strict
	// checking; the loop below filters again).
	req := &rtnetlink.RouteMessage{Protocol: m.cfg.Protocol, Attributes: rtnetlink.RouteAttributes{Table: table}}
	msgs, err := m.conn.Execute(req, unix.RTM_GETROUTE, netlink.Request|netlink.Dump)
	if err != nil {
		return nil, nil, fmt.Errorf("routing: dump routes: %w", err)
	}
	var routes []Route
	for _, msg := range msgs {
		rm, ok := msg.(*rtnetlink.RouteMessage)
		if !ok || rm.Protocol != m.cfg.Protocol {
			continue
		}
		r := Route{Table: uint32(rm.Table), Index: int(rm.Attributes.OutIface)}
		if rm.Attributes.Table != 0 {
			r.Table = rm.Attributes.Table
		}
		dst, ok := netip.AddrFromSlice(rm.Attributes.Dst)
		if !ok {
			if rm.Family == unix.AF_INET6 {
				dst = netip.IPv6Unspecified()
			} else {
				dst = netip.IPv4Unspecified()
			}
		}
		r.Dst = netip.PrefixFrom(dst.Unmap(), int(rm.DstLength))
		if gw, ok := netip.AddrFromSlice(rm.Attributes.Gateway); ok {
			r.Gateway = gw.Unmap()
		}
		if src, ok := netip.AddrFromSlice(rm.Attributes.Src); ok && rm.Family == unix.AF_INET {
			r.Src = src.Unmap()
		}
		if table == 0 || r.Table == table {
			routes = append(routes, r)
		}
	}
	return rules, routes, nil
}

func containsRule(rs []Rule, r Rule) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

func containsRoute(rs []Route, r Route) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func ipOf(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func (m *Manager) ruleMessage(r Rule) *rtnetlink.RuleMessage {
	prio, table, proto := r.Priority, r.Table, m.cfg.Protocol
	msg := &rtnetlink.RuleMessage{
		Family: unix.AF_INET,
		Action: unix.FR_ACT_TO_TBL,
		Attributes: &rtnetlink.RuleAttributes{
			Priority: &prio,
			Table:    &table,
			Protocol: &proto,
		},
	}
	if table < 256 {
		msg.Table = uint8(table)
	}
	if r.From.IsValid() {
		src := ipOf(r.From.Addr())
		msg.Family = family(r.From.Addr())
		msg.SrcLength = uint8(r.From.Bits())
		msg.Attributes.Src = &src
	}
	return msg
}

func (m *Manager) addRule(r Rule, ifname string) error {
	err := m.conn.Rule.Add(m.ruleMessage(r))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("routing: add rule %q%s: %w", r, on(ifname), err)
	}
	return nil
}

func (m *Manager) delRule(r Rule, ifname string) error {
	msg := m.ruleMessage(r)
	if !r.From.IsValid() {
		// Ours but of unknown family: try both.
		err4 := m.conn.Rule.Delete(msg)
		msg.Family = unix.AF_INET6
		err6 := m.conn.Rule.Delete(msg)
		if err4 == nil || err6 == nil {
			return nil
		}
		return fmt.Errorf("routing: delete rule %q%s: %w", r, on(ifname), err4)
	}
	err := m.conn.Rule.Delete(msg)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("routing: delete rule %q%s: %w", r, on(ifname), err)
	}
	return nil
}

func (m *Manager) routeMessage(r Route) *rtnetlink.RouteMessage {
	msg := &rtnetlink.RouteMessage{
		Family:    family(r.Dst.Addr()),
		DstLength: uint8(r.Dst.Bits()),
		Protocol:  m.cfg.Protocol,
		Scope:     unix.RT_SCOPE_UNIVERSE,
		Type:      unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{
			OutIface: uint32(r.Index),
			Table:    r.Table,
		},
	}
	if r.Table < 256 {
		msg.Table = uint8(r.Table)
	}
	if r.Dst.Bits() > 0 {
		msg.Attributes.Dst = ipOf(r.Dst.Addr())
	}
	if r.Gateway.IsValid() {
		msg.Attributes.Gateway = ipOf(r.Gateway)
	} else if msg.Family == unix.AF_INET {
		msg.Scope = unix.RT_SCOPE_LINK
	}
	if r.Src.IsValid() {
		msg.Attributes.Src = ipOf(r.Src)
	}
	return msg
}

func (m *Manager) addRoute(r Route, ifname string) error {
	if err := m.conn.Route.Replace(m.routeMessage(r)); err != nil {
		if errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ENODEV) {
			// The link went down or away after the caller's snapshot:
			// its LinkDown event is on the way and the next LinkUp
			// ensures again. Not an error of the policy.
			return nil
		}
		return fmt.Errorf("routing: add route %q%s: %w", r, on(ifname), err)
	}
	return nil
}

func (m *Manager) delRoute(r Route, ifname string) error {
	err := m.conn.Route.Delete(m.routeMessage(r))
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("routing: delete route %q%s: %w", r, on(ifname), err)
	}
	return nil
}

func on(ifname string) string {
	if ifname == "" {
		return ""
	}
	return " for " + ifname
}
