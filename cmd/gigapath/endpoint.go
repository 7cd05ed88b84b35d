package main

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/pathmgr"
)

func init() {
	register(pmCommand(&cli.Command{
		Name:  "endpoint",
		Usage: "in-kernel path manager endpoints (like ip mptcp endpoint)",
		Description: `Endpoints are the local addresses the in-kernel path manager uses for
   extra subflows (subflow), announces to the peer (signal), or keeps as
   backup. Syntax as in iproute2:
   gigapath endpoint add 10.0.2.2 dev lte0 id 7 subflow backup
   gigapath endpoint change id 7 nobackup
   gigapath -j endpoint show
   gigapath --netns cli endpoint del id 7
   gigapath endpoint flush`,
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add an endpoint",
				ArgsUsage: "ADDR [port P] [dev IF] [id N] [signal|subflow|backup|fullmesh|laminar]...",
				Description: `Without id, or with id 0, the kernel picks a free id (as with ip mptcp
   endpoint add). Examples:
   gigapath endpoint add 10.0.2.2 dev lte0 id 7 subflow backup
   gigapath endpoint add 10.0.1.1 port 10100 signal
   gigapath endpoint add fd00:2::2 dev lte0 subflow fullmesh`,
				Action: endpointAdd,
			},
			{
				Name:      "del",
				Aliases:   []string{"delete"},
				Usage:     "delete an endpoint by id (id 0, the initial subflow's address, needs ADDR)",
				ArgsUsage: "id N [ADDR]",
				Description: `Examples:
   gigapath endpoint del id 7
   gigapath endpoint del id 0 10.0.1.1`,
				Action: endpointDel,
			},
			{
				Name:      "change",
				Usage:     "set the backup and fullmesh flags of an endpoint, found by id or address",
				ArgsUsage: "id N|ADDR [port P] [backup|nobackup|fullmesh|nofullmesh]...",
				Description: `As ip mptcp endpoint change: the endpoint ends up with exactly the
   backup and fullmesh flags named, so "change id 7 fullmesh" clears backup
   and "change id 7" clears both; nobackup and nofullmesh only say so
   explicitly. Other flags (signal, subflow, laminar) are kept. A backup
   change is sent to the peers of existing connections (MP_PRIO).
   Differences from ip mptcp: ADDR without port finds the endpoint with that
   address whatever its port (ip mptcp then finds only one without a port),
   and backup with nobackup (or fullmesh with nofullmesh) is refused rather
   than read as backup. Examples:
   gigapath endpoint change id 7 backup
   gigapath endpoint change 10.0.2.2 backup fullmesh
   gigapath endpoint change 10.0.1.1 port 10100 nobackup`,
				Action: endpointChange,
			},
			{
				Name:      "show",
				Usage:     "list endpoints, one by id, or the local addresses of a userspace-PM connection",
				ArgsUsage: "[id N | token T]",
				Description: `With token T: the addresses a userspace-PM connection announced or
   uses for subflows it was told to create (Linux >= 6.7). Examples:
   gigapath endpoint show
   gigapath endpoint show id 7 -j
   gigapath --netns cli endpoint show token 0x81ec9513
   JSON: [{"id":7,"address":"10.0.2.2","port":0,"dev":"lte0","flags":["subflow","backup"]}]`,
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Aliases: []string{"j"}, Usage: "print JSON"}},
				Action: endpointShow,
			},
			{
				Name:  "flush",
				Usage: "delete every endpoint",
				Description: `Example:
   gigapath --netns cli endpoint flush`,
				Action: endpointFlush,
			},
		},
	}, "show"))
}

// pmCommand finishes a path-manager command: bad flags are usage errors
// (exit 2) in it and every subcommand; a group without an action of its
// own, given no subcommand, runs defaultSub (as `ip mptcp endpoint` shows)
// and, given an unknown one, exits 2 listing the valid ones.
func pmCommand(cmd *cli.Command, defaultSub string) *cli.Command {
	usage := func(c *cli.Context, err error, _ bool) error {
		name := strings.TrimPrefix(c.Command.HelpName, "gigapath ")
		if msg := err.Error(); strings.HasSuffix(msg, ": -netns") || strings.HasSuffix(msg, ": -n") {
			return usageErrorf("%s: %v: --netns goes before the command: gigapath --netns NAME %s ...", name, err, name)
		}
		return usageErrorf("%s: %v", name, err)
	}
	cmd.OnUsageError = usage
	var names []string
	for _, sc := range cmd.Subcommands {
		sc.OnUsageError = usage
		names = append(names, sc.Name)
	}
	if cmd.Action != nil {
		return cmd
	}
	cmd.Action = func(c *cli.Context) error {
		if c.NArg() == 0 && defaultSub != "" {
			for _, sc := range cmd.Subcommands {
				if sc.Name == defaultSub {
					return sc.Action(c)
				}
			}
		}
		if c.NArg() == 0 {
			return usageErrorf("%s: want a subcommand: %s", cmd.Name, strings.Join(names, ", "))
		}
		return usageErrorf("%s: unknown subcommand %q (valid: %s)", cmd.Name, c.Args().First(), strings.Join(names, ", "))
	}
	return cmd
}

// pmArgs walks positional, iproute2-style arguments. cmd names the
// command in error messages ("endpoint add").
type pmArgs struct {
	cmd  string
	args []string
	i    int
	json bool
}

// newPMArgs takes the arguments of c, pulling out -j/--json given after the
// keywords (the flag package stops at the first positional argument).
func newPMArgs(cmd string, args []string) *pmArgs {
	p := &pmArgs{cmd: cmd}
	for _, a := range args {
		if a == "-j" || a == "--json" || a == "-json" {
			p.json = true
			continue
		}
		p.args = append(p.args, a)
	}
	return p
}

func (p *pmArgs) more() bool { return p.i < len(p.args) }

func (p *pmArgs) next() string {
	s := p.args[p.i]
	p.i++
	return s
}

// value returns the argument following keyword kw.
func (p *pmArgs) value(kw, what string) (string, error) {
	if !p.more() {
		return "", usageErrorf("%s: %q needs a value: %s %s", p.cmd, kw, kw, what)
	}
	return p.next(), nil
}

func (p *pmArgs) unknown(tok, valid string) error {
	return usageErrorf("%s: unknown argument %q (valid: %s)", p.cmd, tok, valid)
}

func (p *pmArgs) parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, usageErrorf("%s: bad address %q: want an IPv4 or IPv6 address such as 10.0.2.2 or fd00::2", p.cmd, s)
	}
	return a.Unmap(), nil
}

func (p *pmArgs) parseID(s string, min int) (uint8, error) {
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || int(n) < min {
		return 0, usageErrorf("%s: bad id %q: want %d..255", p.cmd, s, min)
	}
	return uint8(n), nil
}

func (p *pmArgs) parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, usageErrorf("%s: bad port %q: want 1..65535", p.cmd, s)
	}
	return uint16(n), nil
}

// parseToken accepts a connection token in decimal (as gigapath monitor
// and pm_nl_ctl print it) or in hex with 0x (ss -Mi prints "token:81ec9513",
// hex without the prefix: a bare hex token is refused rather than guessed,
// since one made of digits only would read as a different decimal number).
func (p *pmArgs) parseToken(s string) (uint32, error) {
	base, digits := 10, s
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		base, digits = 16, h
	}
	n, err := strconv.ParseUint(digits, base, 32)
	if err != nil {
		if _, herr := strconv.ParseUint(s, 16, 32); herr == nil {
			return 0, usageErrorf("%s: bad token %q: hex tokens (as ss -Mi prints them) need 0x: 0x%s", p.cmd, s, s)
		}
		return 0, usageErrorf("%s: bad token %q: want a 32-bit connection token, decimal (2179765523) or hex with 0x (0x81ec9513)", p.cmd, s)
	}
	return uint32(n), nil
}

// endpointFlagWords are the flags a user may give to endpoint add
// (implicit is set by the kernel only).
const endpointFlagWords = "signal, subflow, backup, fullmesh, laminar"

// endpointAddArgs is the parsed form of `endpoint add`.
type endpointAddArgs struct {
	ep  pathmgr.Endpoint
	dev string
}

func parseEndpointAdd(args []string) (endpointAddArgs, error) {
	p := newPMArgs("endpoint add", args)
	const valid = "ADDR, port P, dev IF, id N, " + endpointFlagWords
	var r endpointAddArgs
	for p.more() {
		tok := p.next()
		var err error
		switch tok {
		case "port":
			var v string
			if v, err = p.value(tok, "1..65535"); err == nil {
				r.ep.Port, err = p.parsePort(v)
			}
		case "dev":
			r.dev, err = p.value(tok, "INTERFACE")
		case "id":
			var v string
			if v, err = p.value(tok, "0..255 (0: the kernel picks)"); err == nil {
				r.ep.ID, err = p.parseID(v, 0)
			}
		default:
			if f, ok := pathmgr.ParseEndpointFlag(tok); ok && f != pathmgr.FlagImplicit {
				r.ep.Flags |= f
				continue
			}
			if r.ep.Addr.IsValid() || !looksLikeAddr(tok) {
				return r, p.unknown(tok, valid)
			}
			r.ep.Addr, err = p.parseAddr(tok)
		}
		if err != nil {
			return r, err
		}
	}
	if !r.ep.Addr.IsValid() {
		return r, usageErrorf("endpoint add: missing the address: gigapath endpoint add ADDR [port P] [dev IF] [id N] [%s]...", strings.ReplaceAll(endpointFlagWords, ", ", "|"))
	}
	return r, nil
}

// looksLikeAddr tells an address attempt (to be reported as a bad address)
// from an unknown keyword.
func looksLikeAddr(s string) bool {
	return strings.ContainsAny(s, ".:") || (s != "" && s[0] >= '0' && s[0] <= '9')
}

func endpointAdd(c *cli.Context) error {
	r, err := parseEndpointAdd(c.Args().Slice())
	if err != nil {
		return err
	}
	if r.dev != "" {
		if r.ep.IfIndex, err = ifIndex(netnsName(c), r.dev); err != nil {
			return err
		}
	}
	return withPM(c, func(pm *pathmgr.Client) error { return pm.AddEndpoint(r.ep) })
}

// endpointDelArgs is the parsed form of `endpoint del`.
type endpointDelArgs struct {
	id   uint8
	addr netip.Addr
}

func parseEndpointDel(args []string) (endpointDelArgs, error) {
	p := newPMArgs("endpoint del", args)
	var r endpointDelArgs
	hasID := false
	for p.more() {
		tok := p.next()
		var err error
		switch {
		case tok == "id":
			var v string
			if v, err = p.value(tok, "0..255"); err == nil {
				r.id, err = p.parseID(v, 0)
				hasID = true
			}
		case !r.addr.IsValid() && looksLikeAddr(tok):
			r.addr, err = p.parseAddr(tok)
		default:
			return r, p.unknown(tok, "id N, ADDR")
		}
		if err != nil {
			return r, err
		}
	}
	if !hasID {
		return r, usageErrorf("endpoint del: missing the id: gigapath endpoint del id N [ADDR] (ids from `gigapath endpoint show`)")
	}
	if r.id == 0 && !r.addr.IsValid() {
		return r, usageErrorf("endpoint del: id 0 (the initial subflow's address) needs the address too: gigapath endpoint del id 0 ADDR")
	}
	return r, nil
}

func endpointDel(c *cli.Context) error {
	r, err := parseEndpointDel(c.Args().Slice())
	if err != nil {
		return err
	}
	return withPM(c, func(pm *pathmgr.Client) error { return pm.DeleteEndpoint(r.id, r.addr) })
}

// endpointChangeArgs is the parsed form of `endpoint change`: the
// endpoint (by id, or by address and optional port) and the backup and
// fullmesh flags it is to have.
type endpointChangeArgs struct {
	id    uint8
	addr  netip.Addr
	port  uint16
	flags pathmgr.EndpointFlags
}

// changeWords are the flag words of `endpoint change`: each sets or
// explicitly leaves out one of the two flags the kernel changes.
var changeWords = map[string]struct {
	flag pathmgr.EndpointFlags
	set  bool
}{
	"backup":     {pathmgr.FlagBackup, true},
	"nobackup":   {pathmgr.FlagBackup, false},
	"fullmesh":   {pathmgr.FlagFullmesh, true},
	"nofullmesh": {pathmgr.FlagFullmesh, false},
}

func parseEndpointChange(args []string) (endpointChangeArgs, error) {
	p := newPMArgs("endpoint change", args)
	const valid = "id N, ADDR, port P, backup, nobackup, fullmesh, nofullmesh"
	var r endpointChangeArgs
	said := map[pathmgr.EndpointFlags]string{} // flag -> the word that named it
	for p.more() {
		tok := p.next()
		var err error
		if w, ok := changeWords[tok]; ok {
			if prev, dup := said[w.flag]; dup && prev != tok {
				return r, usageErrorf("endpoint change: %q and %q contradict each other: give one", prev, tok)
			}
			said[w.flag] = tok
			if w.set {
				r.flags |= w.flag
			}
			continue
		}
		switch tok {
		case "id":
			var v string
			if v, err = p.value(tok, "1..255"); err == nil {
				r.id, err = p.parseID(v, 1)
			}
		case "port":
			var v string
			if v, err = p.value(tok, "1..65535"); err == nil {
				r.port, err = p.parsePort(v)
			}
		default:
			if r.addr.IsValid() || !looksLikeAddr(tok) {
				return r, p.unknown(tok, valid)
			}
			r.addr, err = p.parseAddr(tok)
		}
		if err != nil {
			return r, err
		}
	}
	if r.id == 0 && !r.addr.IsValid() {
		return r, usageErrorf("endpoint change: say which endpoint: gigapath endpoint change id N|ADDR [port P] [backup|nobackup|fullmesh|nofullmesh]...")
	}
	if r.port != 0 && !r.addr.IsValid() {
		return r, usageErrorf("endpoint change: port %d needs the address: gigapath endpoint change ADDR port %d ...", r.port, r.port)
	}
	return r, nil
}

func endpointChange(c *cli.Context) error {
	r, err := parseEndpointChange(c.Args().Slice())
	if err != nil {
		return err
	}
	return withPM(c, func(pm *pathmgr.Client) error {
		id := r.id
		if id == 0 {
			// Address it by the id found: a lookup by address alone misses
			// an endpoint that has a port (the kernel compares both).
			e, err := findEndpoint(pm, r.addr, r.port)
			if err != nil {
				return err
			}
			id = e.ID
		}
		return pm.SetEndpointFlags(id, netip.Addr{}, r.flags)
	})
}

// findEndpoint finds the endpoint with address addr and, when port is not
// 0, that port; without a port the address must name one endpoint.
func findEndpoint(pm *pathmgr.Client, addr netip.Addr, port uint16) (pathmgr.Endpoint, error) {
	eps, err := pm.Endpoints()
	if err != nil {
		return pathmgr.Endpoint{}, err
	}
	var found []pathmgr.Endpoint
	for _, e := range eps {
		if e.Addr == addr && (port == 0 || e.Port == port) {
			found = append(found, e)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		var ports []string
		for _, e := range found {
			ports = append(ports, fmt.Sprintf("port %d (id %d)", e.Port, e.ID))
		}
		return pathmgr.Endpoint{}, usageErrorf("endpoint change: %s names %d endpoints: %s; give port P or id N", addr, len(found), strings.Join(ports, ", "))
	case port != 0:
		return pathmgr.Endpoint{}, fmt.Errorf("endpoint change: no endpoint with address %s port %d (see `gigapath endpoint show`): %w", addr, port, os.ErrNotExist)
	}
	return pathmgr.Endpoint{}, fmt.Errorf("endpoint change: no endpoint with address %s (see `gigapath endpoint show`): %w", addr, os.ErrNotExist)
}

// endpointJSON is one element of `endpoint show -j`.
type endpointJSON struct {
	ID      uint8    `json:"id"`
	Address string   `json:"address"`
	Port    uint16   `json:"port"`
	Dev     string   `json:"dev"`
	IfIndex int      `json:"if_idx,omitempty"`
	Flags   []string `json:"flags"`
}

// endpointShowArgs is the parsed form of `endpoint show`.
type endpointShowArgs struct {
	id       uint8
	token    uint32
	hasToken bool
	json     bool
}

func parseEndpointShow(args []string) (endpointShowArgs, error) {
	p := newPMArgs("endpoint show", args)
	r := endpointShowArgs{json: p.json}
	for p.more() {
		tok := p.next()
		var v string
		var err error
		switch tok {
		case "id":
			if v, err = p.value(tok, "1..255"); err == nil {
				r.id, err = p.parseID(v, 1)
			}
		case "token":
			if v, err = p.value(tok, "T"); err == nil {
				r.token, err = p.parseToken(v)
				r.hasToken = true
			}
		default:
			return r, p.unknown(tok, "id N, token T")
		}
		if err != nil {
			return r, err
		}
	}
	if r.hasToken && r.id != 0 {
		return r, usageErrorf("endpoint show: give id N (an endpoint) or token T (a connection's addresses), not both")
	}
	return r, nil
}

func endpointShow(c *cli.Context) error {
	r, err := parseEndpointShow(c.Args().Slice())
	if err != nil {
		return err
	}
	var eps []pathmgr.Endpoint
	if err := withPM(c, func(pm *pathmgr.Client) error {
		var err error
		switch {
		case r.hasToken:
			eps, err = pm.ConnectionAddrs(r.token)
		case r.id != 0:
			var e pathmgr.Endpoint
			if e, err = pm.Endpoint(r.id); err == nil {
				eps = []pathmgr.Endpoint{e}
			}
		default:
			eps, err = pm.Endpoints()
		}
		return err
	}); err != nil {
		return err
	}
	names := ifNames(netnsName(c))
	if r.json || jsonOutput(c) {
		out := make([]endpointJSON, 0, len(eps))
		for _, e := range eps {
			out = append(out, endpointJSON{ID: e.ID, Address: e.Addr.String(), Port: e.Port,
				Dev: names[e.IfIndex], IfIndex: e.IfIndex, Flags: e.Flags.Strings()})
		}
		return printJSON(out)
	}
	for _, e := range eps {
		fmt.Println(formatEndpoint(e, names))
	}
	return nil
}

// formatEndpoint prints an endpoint as `ip mptcp endpoint show` does:
// "10.0.2.2 port 5 id 7 subflow backup dev lte0".
func formatEndpoint(e pathmgr.Endpoint, names map[int]string) string {
	var b strings.Builder
	b.WriteString(e.Addr.String())
	if e.Port != 0 {
		fmt.Fprintf(&b, " port %d", e.Port)
	}
	fmt.Fprintf(&b, " id %d", e.ID)
	if e.Flags != 0 {
		b.WriteString(" " + e.Flags.String())
	}
	if e.IfIndex != 0 {
		if n, ok := names[e.IfIndex]; ok {
			b.WriteString(" dev " + n)
		} else {
			fmt.Fprintf(&b, " dev if%d", e.IfIndex)
		}
	}
	return b.String()
}

func endpointFlush(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErrorf("endpoint flush: unexpected argument %q (flush takes none)", c.Args().First())
	}
	return withPM(c, func(pm *pathmgr.Client) error { return pm.FlushEndpoints() })
}

// pmDial opens a path-manager client in the namespace of --netns.
func pmDial(c *cli.Context) (*pathmgr.Client, error) {
	return pathmgr.Dial(&pathmgr.Config{NetNS: netnsName(c)})
}

// withPM runs one request on a client opened in the --netns namespace and
// closes it afterwards.
func withPM(c *cli.Context, fn func(*pathmgr.Client) error) error {
	pm, err := pmDial(c)
	if err != nil {
		return err
	}
	defer pm.Close()
	return fn(pm)
}

// rtnlDial opens an rtnetlink socket in the namespace netns names (a name
// under /run/netns or an absolute path), or the current one.
func rtnlDial(netns string) (*rtnetlink.Conn, error) {
	cfg := &netlink.Config{}
	f, err := pathmgr.OpenNetNS(netns)
	if err != nil {
		return nil, err
	}
	if f != nil {
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	return rtnetlink.Dial(cfg)
}

// ifNames maps interface indexes to names in the namespace (best effort:
// an empty map if the links cannot be listed).
func ifNames(netns string) map[int]string {
	names := map[int]string{}
	conn, err := rtnlDial(netns)
	if err != nil {
		return names
	}
	defer conn.Close()
	links, err := conn.Link.List()
	if err != nil {
		return names
	}
	for _, l := range links {
		if l.Attributes != nil {
			names[int(l.Index)] = l.Attributes.Name
		}
	}
	return names
}

// ifIndex resolves an interface name in the namespace; an unknown name is
// a usage error listing the interfaces that exist.
func ifIndex(netns, name string) (int, error) {
	conn, err := rtnlDial(netns)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	links, err := conn.Link.List()
	if err != nil {
		return 0, fmt.Errorf("list interfaces: %w", err)
	}
	var have []string
	for _, l := range links {
		if l.Attributes == nil {
			continue
		}
		if l.Attributes.Name == name {
			return int(l.Index), nil
		}
		have = append(have, l.Attributes.Name)
	}
	where := "this namespace"
	if netns != "" {
		where = "namespace " + netns
	}
	return 0, usageErrorf("dev %q: no such interface in %s (have: %s)", name, where, strings.Join(have, ", "))
}
