//go:build linux

package pathmgr_test

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"

	"github.com/gigapath/gigapath/pathmgr"
)

// Dial the path manager of a named network namespace (as `ip -n cli`) and
// list the in-kernel PM's endpoints.
func ExampleDial() {
	c, err := pathmgr.Dial(&pathmgr.Config{NetNS: "cli"}) // nil: this namespace
	if err != nil {
		log.Fatal(err) // e.g. no such namespace, or a kernel without MPTCP
	}
	defer c.Close()
	eps, err := c.Endpoints()
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range eps {
		fmt.Println(e.ID, e.Addr, e.Flags) // 7 10.0.2.2 subflow backup
	}
}

// Add an lte address as a backup subflow endpoint, like
// `ip mptcp endpoint add 10.0.2.2 dev lte0 id 7 subflow backup`.
func ExampleClient_AddEndpoint() {
	c, err := pathmgr.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lte, err := net.InterfaceByName("lte0") // in the client's namespace
	if err != nil {
		log.Fatal(err)
	}
	err = c.AddEndpoint(pathmgr.Endpoint{
		ID:      7,
		Addr:    netip.MustParseAddr("10.0.2.2"),
		Flags:   pathmgr.FlagSubflow | pathmgr.FlagBackup,
		IfIndex: lte.Index,
	})
	var ke *pathmgr.Error
	if errors.As(err, &ke) {
		// The kernel refused; Message is its own explanation.
		log.Fatalf("kernel says: %s (%v)", ke.Message, ke.Err)
	}
}

// Raise one limit and keep the other, like `ip mptcp limits set subflow 4`.
func ExampleClient_SetLimits() {
	c, err := pathmgr.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	four := uint32(4)
	if err := c.SetLimits(pathmgr.LimitsUpdate{Subflows: &four}); err != nil {
		log.Fatal(err)
	}
	l, err := c.Limits()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("subflows %d add_addr_accepted %d\n", l.Subflows, l.AddAddrAccepted)
}

// Under the userspace PM (sysctl net.mptcp.path_manager=userspace), open a
// second subflow of an established connection over lte, make it a backup,
// then close it. The token comes from an "established" event
// (pathmgr.ListenEvents) or from the inventory.
func ExampleClient_CreateSubflow() {
	c, err := pathmgr.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	const token = 0xcf96a37f
	remote := netip.MustParseAddrPort("10.0.2.1:443")
	local := pathmgr.Endpoint{Addr: netip.MustParseAddr("10.0.2.2"), ID: 2}
	if err := c.CreateSubflow(token, local, remote); err != nil {
		log.Fatal(err) // e.g. "subflow create: invalid token (invalid argument)"
	}
	// A local port of 0 matches the subflow from that address.
	sf := pathmgr.Subflow{Local: netip.AddrPortFrom(local.Addr, 0), Remote: remote}
	if err := c.SetSubflowBackup(token, sf, true); err != nil {
		log.Fatal(err)
	}
	// Destroying needs both ports: take the local one from the
	// sub_established event or the inventory.
	sf.Local = netip.MustParseAddrPort("10.0.2.2:40212")
	if err := c.DestroySubflow(token, sf); err != nil {
		log.Fatal(err)
	}
}

// Announce an extra address to the peer of a userspace-PM connection and
// withdraw it again.
func ExampleClient_Announce() {
	c, err := pathmgr.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	const token = 0xcf96a37f
	if err := c.Announce(token, pathmgr.Endpoint{Addr: netip.MustParseAddr("10.0.2.3"), ID: 5}); err != nil {
		log.Fatal(err)
	}
	if err := c.Remove(token, 5); err != nil {
		log.Fatal(err)
	}
}

// Kernel refusals map to the usual sentinel errors.
func ExampleError() {
	c, err := pathmgr.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.ConnectionAddrs(1)
	switch {
	case errors.Is(err, pathmgr.ErrNotSupported):
		fmt.Println("this kernel cannot dump a connection's addresses (Linux >= 6.7)")
	case errors.Is(err, os.ErrPermission):
		fmt.Println("needs CAP_NET_ADMIN")
	case err != nil:
		fmt.Println(err) // "connection addresses: invalid token (invalid argument)"
	}
}
