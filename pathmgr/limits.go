package pathmgr

import (
	"fmt"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// Limits are the in-kernel PM's per-namespace limits (`ip mptcp limits`).
type Limits struct {
	// Subflows is the maximum number of additional subflows per connection.
	Subflows uint32 `json:"subflows"`
	// AddAddrAccepted is the maximum number of ADD_ADDR announcements from
	// the peer acted upon per connection.
	AddAddrAccepted uint32 `json:"add_addr_accepted"`
}

// LimitsUpdate sets some limits, leaving the others as they are (as
// `ip mptcp limits set subflow 4` does). Nil fields are not sent, and the
// kernel keeps the current value of a limit it is not sent.
type LimitsUpdate struct {
	Subflows        *uint32
	AddAddrAccepted *uint32
}

// MaxLimit is the largest value the kernels this package knows accept for
// either limit (MPTCP_PM_ADDR_MAX).
const MaxLimit = maxLimitValue

// Limits returns the in-kernel PM's limits.
func (c *Client) Limits() (Limits, error) {
	msgs, err := c.request("limits get", cmdGetLimits, false, nil)
	if err != nil {
		return Limits{}, err
	}
	return parseLimits(msgs)
}

func parseLimits(msgs []genetlink.Message) (Limits, error) {
	var l Limits
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data)
		if err != nil {
			return l, err
		}
		for ad.Next() {
			switch ad.Type() {
			case attrRcvAddAddrs:
				l.AddAddrAccepted = ad.Uint32()
			case attrSubflows:
				l.Subflows = ad.Uint32()
			}
		}
		if err := ad.Err(); err != nil {
			return l, err
		}
	}
	return l, nil
}

// SetLimits changes the limits given in u and keeps the others. Values
// above MaxLimit are refused before sending, naming the limit.
func (c *Client) SetLimits(u LimitsUpdate) error {
	for _, v := range []struct {
		name string
		p    *uint32
	}{{"subflow", u.Subflows}, {"add_addr_accepted", u.AddAddrAccepted}} {
		if v.p != nil && *v.p > MaxLimit {
			return fmt.Errorf("pathmgr: limits set: %s %d is out of range 0..%d", v.name, *v.p, MaxLimit)
		}
	}
	_, err := c.request("limits set", cmdSetLimits, false, func(ae *attrEncoder) {
		if u.AddAddrAccepted != nil {
			ae.Uint32(attrRcvAddAddrs, *u.AddAddrAccepted)
		}
		if u.Subflows != nil {
			ae.Uint32(attrSubflows, *u.Subflows)
		}
	})
	return err
}
