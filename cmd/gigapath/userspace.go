package main

import (
	"net/netip"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/gigapath/gigapath/pathmgr"
)

// Commands of the userspace path manager. They act on one MPTCP connection,
// named by its token (from `gigapath monitor`, `gigapath conn list`, or
// `ss -Mi` in hex), in a namespace whose net.mptcp.path_manager is "userspace".

func init() {
	register(pmCommand(&cli.Command{
		Name:      "announce",
		Usage:     "userspace PM: advertise a local address to the peer of a connection (ADD_ADDR)",
		ArgsUsage: "ADDR id N token T [dev IF] [port P]",
		Description: `The address gets local id N (1..255) in that connection. With a port,
   something must listen there: the kernel accepts a join to another port
   than the connection's only through an MPTCP socket bound to exactly that
   address and port, and this command opens none (gigapath run keeps one
   for each announce: entry with a port). Tokens are decimal, as
   gigapath monitor prints them, or hex with 0x (ss -Mi prints
   "token:81ec9513": write 0x81ec9513). Examples:
   gigapath announce 10.0.2.2 id 2 token 3482749567
   gigapath --netns cli announce 10.0.2.2 id 2 token 0xcf96a37f dev lte0 port 10100`,
		Action: announceCmd,
	}, ""))
	register(pmCommand(&cli.Command{
		Name:      "remove",
		Usage:     "userspace PM: withdraw a local address id from a connection (RM_ADDR) and close its subflows",
		ArgsUsage: "id N token T",
		Description: `Example:
   gigapath remove id 2 token 3482749567`,
		Action: removeCmd,
	}, ""))
	register(pmCommand(&cli.Command{
		Name:  "subflow",
		Usage: "userspace PM: create, destroy or prioritise one subflow of a connection",
		Description: `Examples:
   gigapath subflow create token 3482749567 local 10.0.2.1 id 2 dev lte0 remote 10.0.1.2 port 443
   gigapath subflow set token 3482749567 local 10.0.2.1 remote 10.0.1.2 port 443 backup
   gigapath subflow destroy token 3482749567 local 10.0.2.1 port 40212 remote 10.0.1.2 port 443`,
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "open a new subflow from a local address to the peer (once the connection is established)",
				ArgsUsage: "token T local ADDR [id N] [dev IF] remote ADDR port P",
				Description: `Example:
   gigapath subflow create token 3482749567 local 10.0.2.1 id 2 dev lte0 remote 10.0.1.2 port 443`,
				Action: subflowCreate,
			},
			{
				Name:      "destroy",
				Usage:     "close the subflow with these ends",
				ArgsUsage: "token T local ADDR port P remote ADDR port P",
				Description: `Both ports are needed (ss -tn shows them). Example:
   gigapath subflow destroy token 3482749567 local 10.0.2.1 port 40212 remote 10.0.1.2 port 443`,
				Action: subflowDestroy,
			},
			{
				Name:      "set",
				Usage:     "mark a subflow as backup or not; the peer is told with MP_PRIO",
				ArgsUsage: "token T local ADDR [port P] remote ADDR port P backup|nobackup",
				Description: `Example:
   gigapath subflow set token 3482749567 local 10.0.2.1 remote 10.0.1.2 port 443 backup`,
				Action: subflowSet,
			},
		},
	}, ""))
}

// userspaceArgs is the parsed form of the userspace-PM commands.
type userspaceArgs struct {
	token       uint32
	hasToken    bool
	hasID       bool
	local       pathmgr.Endpoint // address, id, port, interface
	dev         string
	remote      netip.AddrPort
	backup      *bool
	haveLocal   bool
	haveRemote  bool
	positionalA netip.Addr // announce's ADDR
}

// keywordHelp shows each keyword of the userspace commands with its value.
var keywordHelp = map[string]string{
	"ADDR": "ADDR", "token": "token T", "id": "id N", "dev": "dev IF", "port": "port P",
	"local": "local ADDR", "remote": "remote ADDR", "backup": "backup, nobackup",
}

// parseUserspace reads the keywords listed in allowed (a subset of token,
// id, dev, port, local, remote, backup, ADDR). "port" belongs to the last
// "local" or "remote" given, or to the announced address.
func parseUserspace(cmd string, args []string, allowed ...string) (userspaceArgs, error) {
	p := newPMArgs(cmd, args)
	ok := map[string]bool{}
	for _, k := range allowed {
		ok[k] = true
	}
	validList := func() string {
		var words []string
		for _, k := range allowed {
			words = append(words, keywordHelp[k])
		}
		return strings.Join(words, ", ")
	}
	var r userspaceArgs
	side := "" // "local", "remote" or "" (announce's address)
	for p.more() {
		tok := p.next()
		kw := tok
		if tok == "nobackup" {
			kw = "backup"
		}
		if !ok[kw] {
			if ok["ADDR"] && !r.positionalA.IsValid() && looksLikeAddr(tok) {
				a, err := p.parseAddr(tok)
				if err != nil {
					return r, err
				}
				r.positionalA, r.local.Addr = a, a
				continue
			}
			return r, p.unknown(tok, validList())
		}
		var err error
		var v string
		switch kw {
		case "token":
			if v, err = p.value(tok, "T (decimal or 0x hex)"); err == nil {
				r.token, err = p.parseToken(v)
				r.hasToken = true
			}
		case "id":
			if v, err = p.value(tok, "N"); err == nil {
				min := 1
				if cmd == "remove" {
					min = 0
				}
				r.local.ID, err = p.parseID(v, min)
				r.hasID = true
			}
		case "dev":
			r.dev, err = p.value(tok, "INTERFACE")
		case "local", "remote":
			side = kw
			if v, err = p.value(tok, "ADDR"); err == nil {
				var a netip.Addr
				if a, err = p.parseAddr(v); err == nil {
					if kw == "local" {
						r.local.Addr, r.haveLocal = a, true
					} else {
						r.remote, r.haveRemote = netip.AddrPortFrom(a, r.remote.Port()), true
					}
				}
			}
		case "port":
			if v, err = p.value(tok, "1..65535"); err == nil {
				var port uint16
				if port, err = p.parsePort(v); err == nil {
					if side == "remote" {
						r.remote = netip.AddrPortFrom(r.remote.Addr(), port)
					} else {
						r.local.Port = port
					}
				}
			}
		case "backup":
			b := tok == "backup"
			r.backup = &b
		}
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

func needToken(cmd string, r userspaceArgs, usage string) error {
	if !r.hasToken {
		return usageErrorf("%s: missing the connection token: gigapath %s (tokens: gigapath monitor, gigapath conn list, or ss -Mi in hex as 0x...)", cmd, usage)
	}
	return nil
}

func parseAnnounce(args []string) (userspaceArgs, error) {
	const usage = "announce ADDR id N token T [dev IF] [port P]"
	r, err := parseUserspace("announce", args, "ADDR", "id", "token", "dev", "port")
	if err != nil {
		return r, err
	}
	if !r.local.Addr.IsValid() {
		return r, usageErrorf("announce: missing the address: gigapath %s", usage)
	}
	if !r.hasID {
		return r, usageErrorf("announce: missing the local id (1..255): gigapath %s", usage)
	}
	return r, needToken("announce", r, usage)
}

func announceCmd(c *cli.Context) error {
	r, err := parseAnnounce(c.Args().Slice())
	if err != nil {
		return err
	}
	if r.dev != "" {
		if r.local.IfIndex, err = ifIndex(netnsName(c), r.dev); err != nil {
			return err
		}
	}
	return withPM(c, func(pm *pathmgr.Client) error { return pm.Announce(r.token, r.local) })
}

func parseRemove(args []string) (userspaceArgs, error) {
	const usage = "remove id N token T"
	r, err := parseUserspace("remove", args, "id", "token")
	if err != nil {
		return r, err
	}
	if !r.hasID {
		return r, usageErrorf("remove: missing the local id (0..255): gigapath %s", usage)
	}
	return r, needToken("remove", r, usage)
}

func removeCmd(c *cli.Context) error {
	r, err := parseRemove(c.Args().Slice())
	if err != nil {
		return err
	}
	return withPM(c, func(pm *pathmgr.Client) error { return pm.Remove(r.token, r.local.ID) })
}

// checkEnds validates the two ends of a subflow command.
func checkEnds(cmd, usage string, r userspaceArgs, needLocalPort bool) error {
	if err := needToken(cmd, r, usage); err != nil {
		return err
	}
	if !r.haveLocal {
		return usageErrorf("%s: missing the local address: gigapath %s", cmd, usage)
	}
	if !r.haveRemote {
		return usageErrorf("%s: missing the remote address: gigapath %s", cmd, usage)
	}
	if r.remote.Port() == 0 {
		return usageErrorf("%s: missing the remote port (remote ADDR port P): gigapath %s", cmd, usage)
	}
	if needLocalPort && r.local.Port == 0 {
		return usageErrorf("%s: missing the local port (local ADDR port P; ss -tn shows it): gigapath %s", cmd, usage)
	}
	if r.local.Addr.Is4() != r.remote.Addr().Is4() {
		return usageErrorf("%s: local %s and remote %s are of different address families", cmd, r.local.Addr, r.remote.Addr())
	}
	return nil
}

func parseSubflowCreate(args []string) (userspaceArgs, error) {
	const usage = "subflow create token T local ADDR [id N] [dev IF] remote ADDR port P"
	r, err := parseUserspace("subflow create", args, "token", "local", "id", "dev", "remote", "port")
	if err != nil {
		return r, err
	}
	if r.local.Port != 0 {
		return r, usageErrorf("subflow create: a local port cannot be chosen; give port after remote ADDR: gigapath %s", usage)
	}
	return r, checkEnds("subflow create", usage, r, false)
}

func subflowCreate(c *cli.Context) error {
	r, err := parseSubflowCreate(c.Args().Slice())
	if err != nil {
		return err
	}
	if r.dev != "" {
		if r.local.IfIndex, err = ifIndex(netnsName(c), r.dev); err != nil {
			return err
		}
	}
	return withPM(c, func(pm *pathmgr.Client) error { return pm.CreateSubflow(r.token, r.local, r.remote) })
}

func parseSubflowDestroy(args []string) (userspaceArgs, error) {
	const usage = "subflow destroy token T local ADDR port P remote ADDR port P"
	r, err := parseUserspace("subflow destroy", args, "token", "local", "remote", "port")
	if err != nil {
		return r, err
	}
	return r, checkEnds("subflow destroy", usage, r, true)
}

func subflowDestroy(c *cli.Context) error {
	r, err := parseSubflowDestroy(c.Args().Slice())
	if err != nil {
		return err
	}
	sf := pathmgr.Subflow{Local: netip.AddrPortFrom(r.local.Addr, r.local.Port), Remote: r.remote}
	return withPM(c, func(pm *pathmgr.Client) error { return pm.DestroySubflow(r.token, sf) })
}

func parseSubflowSet(args []string) (userspaceArgs, error) {
	const usage = "subflow set token T local ADDR [port P] remote ADDR port P backup|nobackup"
	r, err := parseUserspace("subflow set", args, "token", "local", "remote", "port", "backup")
	if err != nil {
		return r, err
	}
	if err := checkEnds("subflow set", usage, r, false); err != nil {
		return r, err
	}
	if r.backup == nil {
		return r, usageErrorf("subflow set: say backup or nobackup: gigapath %s", usage)
	}
	return r, nil
}

func subflowSet(c *cli.Context) error {
	r, err := parseSubflowSet(c.Args().Slice())
	if err != nil {
		return err
	}
	sf := pathmgr.Subflow{Local: netip.AddrPortFrom(r.local.Addr, r.local.Port), Remote: r.remote}
	return withPM(c, func(pm *pathmgr.Client) error { return pm.SetSubflowBackup(r.token, sf, *r.backup) })
}
