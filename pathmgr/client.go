// Package pathmgr is a client of the Linux kernel's MPTCP path manager, the
// generic netlink family "mptcp_pm": the in-kernel PM's endpoints and
// limits, the userspace PM's per-connection commands (announce, remove,
// subflow create/destroy, backup), the PM's events, and an inventory of live
// MPTCP connections from sock_diag.
//
// Every Client works in one network namespace, chosen by Config. Kernel
// refusals come back as *Error with the kernel's own message. Outside Linux
// the package builds, and Dial says that it is not supported there.
package pathmgr

import (
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// A Client talks to the kernel's MPTCP path manager in one network
// namespace. It is safe for concurrent use. Methods that change state need
// CAP_NET_ADMIN in that namespace.
//
// The in-kernel PM (net.mptcp.path_manager=kernel) is driven through
// endpoints and limits, per namespace; the userspace PM
// (net.mptcp.path_manager=userspace) through per-connection commands that
// name the connection by its token.
type Client struct {
	c *client // per OS: client_linux.go, client_others.go
}

// Dial opens a Client in the network namespace cfg names (nil or an empty
// NetNS: the current one). It fails with an error matching os.ErrNotExist
// when the namespace or the mptcp_pm family does not exist.
func Dial(cfg *Config) (*Client, error) {
	c, err := dial(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{c: c}, nil
}

// Close releases the netlink socket.
func (c *Client) Close() error { return c.c.close() }

// FamilyVersion is the version the kernel reports for mptcp_pm (1 on every
// kernel so far).
func (c *Client) FamilyVersion() uint8 { return c.c.familyVersion() }

// request runs one command: encode writes its attributes (nil: none).
// Commands that change state are sent with an acknowledgement request;
// dumps with the dump flag. op names the command in errors ("subflow
// create").
func (c *Client) request(op string, cmd uint8, dump bool, encode func(*attrEncoder)) ([]genetlink.Message, error) {
	flags := netlink.Request
	switch {
	case dump:
		flags |= netlink.Dump
	case !replies[cmd]:
		// Commands that change state send no reply unless asked for an
		// acknowledgement; without one the request would wait forever.
		if sent, err := c.c.ack(cmd, oneConnection[cmd], encode); sent {
			if err != nil {
				return nil, opError(op, err)
			}
			return nil, nil
		}
		flags |= netlink.Acknowledge
	}
	var ae attrEncoder
	if encode != nil {
		encode(&ae)
	}
	msgs, err := c.c.execute(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: familyVersion},
		Data:   ae.b,
	}, flags)
	if err != nil {
		return nil, opError(op, err)
	}
	return msgs, nil
}

// replies lists the commands whose "do" form answers with a message (and
// must not also be asked for an acknowledgement: a trailing ACK left in the
// socket would break the next request's sequence check).
var replies = map[uint8]bool{cmdGetAddr: true, cmdGetLimits: true}

// oneConnection lists the commands in which the kernel's work is one
// connection's: the userspace path manager's per-connection commands that
// the daemon sends for every connection (SET_FLAGS is left out: without a
// token it changes an endpoint). The kernel serves them inline, in the
// system call that sends them; in a process with one P, ack sends them
// without handing the P back to the Go scheduler for that time (see
// client.send). The other commands (endpoints, flush, limits) may walk
// every connection of the namespace in that call.
var oneConnection = map[uint8]bool{cmdAnnounce: true, cmdRemove: true, cmdSubflowCreate: true, cmdSubflowDestroy: true}
