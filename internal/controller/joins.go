package controller

import (
	"fmt"
	"strings"

	"github.com/gigapath/gigapath/internal/policy"
)

// The server side's "C" flag (initial_address_joins: refuse): the
// namespace's net.mptcp.allow_join_initial_addr_port is 0 while the
// daemon runs with refuse, and what it was before comes back when the
// daemon stops or a reload turns refuse off. The kernel reads the setting
// when it accepts a connection, so connections accepted earlier keep
// what they were told.

// joinsKey names the sysctl in messages.
const joinsKey = "net.mptcp.allow_join_initial_addr_port"

// applyInitialJoins makes the sysctl what the policy says: 0 under
// refuse; under allow, the value found before this daemon (or the one it
// upgraded from) set it to 0, if it did.
func (c *Controller) applyInitialJoins() error {
	if c.pol.InitialAddressJoins == policy.JoinsRefuse {
		prev, err := c.sysctl(c.cfg.NetNS, joinsSysctl, "0", "")
		if err != nil {
			return fmt.Errorf("initial_address_joins: refuse: set %s=0: %w", joinsKey, err)
		}
		if prev != "0" && c.joinsWas == "" {
			c.joinsWas = prev
			c.log.Info("refusing joins to the initial address (the C flag)", "sysctl", joinsKey+"=0", "was", prev)
		}
		return nil
	}
	c.restoreInitialJoins()
	return nil
}

// restoreInitialJoins puts back the value the sysctl had before the
// daemon set it to 0, unless someone changed it since.
func (c *Controller) restoreInitialJoins() {
	if c.joinsWas == "" {
		return
	}
	cur, err := c.sysctl(c.cfg.NetNS, joinsSysctl, c.joinsWas, "0")
	if err != nil {
		c.log.Warn("restore "+joinsKey, "value", c.joinsWas, "err", err)
		return
	}
	if cur != "0" {
		c.log.Info(joinsKey+" changed by someone else while the daemon ran: left as it is", "value", cur)
	} else {
		c.log.Info("joins to the initial address allowed again", "sysctl", joinsKey+"="+c.joinsWas)
	}
	c.joinsWas = ""
}

// validJoinsWas checks a value a predecessor handed over.
func validJoinsWas(v string) bool {
	return v == "" || strings.Trim(v, "0123456789") == ""
}
