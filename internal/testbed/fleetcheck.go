//go:build linux

package testbed

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Oracles and faults of the fleet, for tests in other packages: what the
// client's and the nodes' own tools (ss, nstat) show, and a node that
// dies.

// MPTCPConns counts the established MPTCP connections in n (ss -M).
func (n *NetNS) MPTCPConns() (int, error) {
	out, err := n.Run("ss", "-HMn", "state", "established")
	if err != nil {
		return 0, err
	}
	return countLines(out), nil
}

func countLines(s string) int {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	return strings.Count(s, "\n") + 1
}

// LTESubflows counts, from the client's ss, its established TCP subflows
// from the lte address, by remote address.
func (b *Bed) LTESubflows() (map[netip.Addr]int, error) {
	out, err := b.Client.Run("ss", "-Htn", "state", "established", "src", b.LTEAddr.String())
	if err != nil {
		return nil, err
	}
	got := map[netip.Addr]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		ap, err := netip.ParseAddrPort(f[3])
		if err != nil {
			return nil, fmt.Errorf("ss peer %q: %w", f[3], err)
		}
		got[ap.Addr()]++
	}
	return got, nil
}

// Subflow is one TCP subflow by its ends.
type Subflow struct {
	Local, Remote netip.AddrPort
}

// ClientConn is one of the client's MPTCP connections to the fleet, as
// its ss shows it: the subflows of one connection share the connection's
// inode.
type ClientConn struct {
	Inode    string
	Subflows []Subflow
}

// Initial is the connection's subflow to the service address (the one
// through the balancer), if it has one.
func (c ClientConn) Initial(b *Bed) (Subflow, bool) {
	for _, s := range c.Subflows {
		if s.Remote.Addr() == b.ProxyAddr || s.Remote.Addr() == b.ProxyAddr6 {
			return s, true
		}
	}
	return Subflow{}, false
}

// Node is the node (1-based) whose own address one of the connection's
// subflows goes to, 0 if none does.
func (c ClientConn) Node(b *Bed) int {
	for _, s := range c.Subflows {
		if i := b.NodeByAddr(s.Remote.Addr()); i > 0 {
			return i
		}
	}
	return 0
}

// From reports whether the connection has a subflow from local.
func (c ClientConn) From(local netip.Addr) bool {
	return slices.ContainsFunc(c.Subflows, func(s Subflow) bool { return s.Local.Addr() == local })
}

// NodeByAddr is the node (1-based) that has addr as its own address, 0
// for none.
func (b *Bed) NodeByAddr(addr netip.Addr) int {
	for _, n := range b.Nodes {
		if addr == n.Addr || addr == n.Addr6 {
			return n.Index
		}
	}
	return 0
}

// ClientConns lists the client's MPTCP connections to the fleet (those
// with a subflow to the service address or to a node's own address) with
// their established subflows, from `ss -Htne` in the client.
func (b *Bed) ClientConns() ([]ClientConn, error) {
	out, err := b.Client.Run("ss", "-Htne", "state", "established")
	if err != nil {
		return nil, err
	}
	return parseClientConns(out, b), nil
}

func parseClientConns(ss string, b *Bed) []ClientConn {
	byIno := map[string]*ClientConn{}
	var order []string
	for _, line := range strings.Split(ss, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		local, err1 := netip.ParseAddrPort(stripZone(f[2]))
		peer, err2 := netip.ParseAddrPort(f[3])
		ino := ""
		for _, x := range f[4:] {
			if v, ok := strings.CutPrefix(x, "ino:"); ok {
				ino = v
			}
		}
		if err1 != nil || err2 != nil || ino == "" || ino == "0" {
			continue
		}
		if a := peer.Addr(); a != b.ProxyAddr && a != b.ProxyAddr6 && b.NodeByAddr(a) == 0 {
			continue // not a subflow to the fleet
		}
		c := byIno[ino]
		if c == nil {
			c = &ClientConn{Inode: ino}
			byIno[ino] = c
			order = append(order, ino)
		}
		c.Subflows = append(c.Subflows, Subflow{Local: local, Remote: peer})
	}
	out := make([]ClientConn, 0, len(order))
	for _, ino := range order {
		c := byIno[ino]
		slices.SortFunc(c.Subflows, func(x, y Subflow) int {
			if d := x.Local.Compare(y.Local); d != 0 {
				return d
			}
			return x.Remote.Compare(y.Remote)
		})
		out = append(out, *c)
	}
	return out
}

// stripZone turns ss's "10.201.2.2%lte0:35887" into "10.201.2.2:35887".
func stripZone(s string) string {
	i, j := strings.IndexByte(s, '%'), strings.LastIndexByte(s, ':')
	if i < 0 || j < i {
		return s
	}
	return s[:i] + s[j:]
}

// NodeOfClientPorts maps the client's source ports of subflows from
// client to the node (1-based) that holds each, from the nodes' own ss:
// the balancer rewrites only the destination, so a node sees the client's
// address and port as they are.
func (b *Bed) NodeOfClientPorts(client netip.Addr) (map[uint16]int, error) {
	out := map[uint16]int{}
	for _, n := range b.Nodes {
		ss, err := n.Run("ss", "-Htn", "state", "established")
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(ss, "\n") {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			peer, err := netip.ParseAddrPort(f[3])
			if err == nil && peer.Addr().Unmap() == client {
				out[peer.Port()] = n.Index
			}
		}
	}
	return out, nil
}

// KillNode kills every process in node i's namespace (SIGKILL), as when
// the proxy software of a node crashes or is killed by the OOM killer: the
// node's kernel closes their sockets, resetting their connections (an
// MPTCP connection with unread data is closed with MP_FASTCLOSE and a
// reset on every subflow), and answers new ones with resets. The node's
// links, addresses and its place in the balancer stay: take it out with
// RemoveFromBalancer, as a health check would. It returns the processes
// it killed.
func (b *Bed) KillNode(i int) ([]int, error) {
	n, err := b.node(i)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command("ip", "netns", "pids", n.NetNS.Name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", n.NetNS.Name, err)
	}
	var killed []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed = append(killed, pid)
		}
	}
	return killed, nil
}
