package pathmgr

import (
	"errors"
	"fmt"
	"syscall"
)

// commandNames are the mptcp_pm commands by number, named as in the
// kernel's netlink spec (Documentation/netlink/specs/mptcp_pm.yaml).
var commandNames = map[uint8]string{
	cmdAddAddr:        "add-addr",
	cmdDelAddr:        "del-addr",
	cmdGetAddr:        "get-addr",
	cmdFlushAddrs:     "flush-addrs",
	cmdSetLimits:      "set-limits",
	cmdGetLimits:      "get-limits",
	cmdSetFlags:       "set-flags",
	cmdAnnounce:       "announce",
	cmdRemove:         "remove",
	cmdSubflowCreate:  "subflow-create",
	cmdSubflowDestroy: "subflow-destroy",
}

// GenlFamily is the name of the MPTCP path manager's generic netlink family.
const GenlFamily = familyName

// CommandName returns the netlink-spec name of mptcp_pm command number cmd
// ("add-addr", "subflow-create", ...), or "" for a number this package
// does not know. With Commands it lets tools say which of the family's
// operations a kernel offers (from CTRL_ATTR_OPS).
func CommandName(cmd uint8) string { return commandNames[cmd] }

// Commands returns the numbers of every mptcp_pm command this package
// uses, in ascending order.
func Commands() []uint8 {
	out := make([]uint8, 0, len(commandNames))
	for c := uint8(cmdAddAddr); c <= cmdSubflowDestroy; c++ {
		out = append(out, c)
	}
	return out
}

// SupportsConnectionAddrs asks the kernel whether GET_ADDR honours a
// connection token (Linux 6.7 and later), which ConnectionAddrs needs. It
// dumps the addresses of token 0: kernels that know the token attribute
// refuse it ("invalid token"), older ones ignore it and dump the in-kernel
// endpoints. Run it where no MPTCP connection could have token 0, e.g. a
// scratch namespace; it changes nothing.
func (c *Client) SupportsConnectionAddrs() (bool, error) {
	_, err := c.request("connection addresses probe", cmdGetAddr, true, func(ae *attrEncoder) {
		ae.Uint32(attrToken, 0)
	})
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOENT):
		return true, nil
	default:
		return false, fmt.Errorf("pathmgr: probe GET_ADDR with a token: %w", err)
	}
}
