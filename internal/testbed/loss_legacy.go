//go:build linux

package testbed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Numbers from include/uapi/linux/pkt_sched.h and pkt_cls.h, for the
// legacy tc attachment (clsact qdisc + cls_bpf filter) used where tcx
// (Linux 6.6) is missing.
const (
	tcHClsact      = 0xFFFFFFF1 // TC_H_CLSACT (== TC_H_INGRESS)
	tcHMinIngress  = 0xFFF2     // TC_H_MIN_INGRESS
	tcaBPFFD       = 6          // TCA_BPF_FD
	tcaBPFName     = 7          // TCA_BPF_NAME
	tcaBPFFlags    = 8          // TCA_BPF_FLAGS
	tcaBPFFlagDA   = 1          // TCA_BPF_FLAG_ACT_DIRECT
	ethPAll        = 0x0003     // ETH_P_ALL
	lossFilterPrio = 0xC0DE     // priority of our filter, so removal finds only it
)

// tcmsg encodes struct tcmsg.
func tcmsg(ifindex int, handle, parent, info uint32) []byte {
	b := make([]byte, 20)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(ifindex))
	binary.NativeEndian.PutUint32(b[8:], handle)
	binary.NativeEndian.PutUint32(b[12:], parent)
	binary.NativeEndian.PutUint32(b[16:], info)
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// legacyLoss is a cls_bpf filter on the clsact ingress hook of one
// interface, attached by netlink from inside the namespace.
type legacyLoss struct {
	ns      *NetNS
	ifname  string
	ifindex int
}

func rtnlDo(msgs ...netlink.Message) error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetOption(netlink.ExtendedAcknowledge, true)
	for _, m := range msgs {
		if _, err := c.Execute(m); err != nil {
			return err
		}
	}
	return nil
}

// attachLegacy adds a clsact qdisc (if missing) and a direct-action bpf
// filter with prog on the ingress of ifname in n.
func attachLegacy(n *NetNS, ifname string, prog *ebpf.Program) (*legacyLoss, error) {
	l := &legacyLoss{ns: n, ifname: ifname}
	err := n.Do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		l.ifindex = ifc.Index
		ae := netlink.NewAttributeEncoder()
		ae.String(unix.TCA_KIND, "clsact")
		qd, _ := ae.Encode()
		err = rtnlDo(netlink.Message{
			Header: netlink.Header{Type: unix.RTM_NEWQDISC, Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
			Data:   append(tcmsg(ifc.Index, 0xFFFF0000, tcHClsact, 0), qd...),
		})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add clsact qdisc: %w", err)
		}
		ae = netlink.NewAttributeEncoder()
		ae.String(unix.TCA_KIND, "bpf")
		ae.Nested(unix.TCA_OPTIONS, func(o *netlink.AttributeEncoder) error {
			o.Uint32(tcaBPFFD, uint32(prog.FD()))
			o.String(tcaBPFName, "gp_loss")
			o.Uint32(tcaBPFFlags, tcaBPFFlagDA)
			return nil
		})
		f, err := ae.Encode()
		if err != nil {
			return err
		}
		err = rtnlDo(netlink.Message{
			Header: netlink.Header{Type: unix.RTM_NEWTFILTER, Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Replace},
			Data:   append(tcmsg(ifc.Index, 0, tcHClsact&0xFFFF0000|tcHMinIngress, lossFilterPrio<<16|uint32(htons(ethPAll))), f...),
		})
		if err != nil {
			return fmt.Errorf("add bpf filter: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("[%s] legacy tc loss program on %s ingress: %w", n.Name, ifname, err)
	}
	return l, nil
}

// Close removes the filter (the clsact qdisc stays, empty). A namespace
// already gone is not an error.
func (l *legacyLoss) Close() error {
	if !l.ns.Exists() {
		return nil
	}
	return l.ns.Do(func() error {
		err := rtnlDo(netlink.Message{
			Header: netlink.Header{Type: unix.RTM_DELTFILTER, Flags: netlink.Request | netlink.Acknowledge},
			Data:   tcmsg(l.ifindex, 0, tcHClsact&0xFFFF0000|tcHMinIngress, lossFilterPrio<<16|uint32(htons(ethPAll))),
		})
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("[%s] remove loss filter on %s: %w", l.ns.Name, l.ifname, err)
		}
		return nil
	})
}
