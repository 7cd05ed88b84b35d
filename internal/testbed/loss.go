//go:build linux

package testbed

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// tc verdicts (TC_ACT_OK/TCX_PASS and TC_ACT_SHOT/TCX_DROP).
const (
	tcPass = 0
	tcDrop = 2
)

// lossProgram builds a sched_cls program that drops a packet when
// bpf_get_prandom_u32() falls below threshold (threshold/2^32 is the drop
// share). It is assembled here so the testbed needs no clang.
func lossProgram(threshold uint32) (*ebpf.Program, error) {
	insns := asm.Instructions{
		asm.FnGetPrandomU32.Call(),
		asm.LoadImm(asm.R2, int64(threshold), asm.DWord),
		asm.JLT.Reg(asm.R0, asm.R2, "drop"),
		asm.Mov.Imm(asm.R0, tcPass),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcDrop).WithSymbol("drop"),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "gp_loss",
		Type:         ebpf.SchedCLS,
		Instructions: insns,
		License:      "GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("load tc loss program: %w", err)
	}
	return prog, nil
}

// errTCXUnsupported selects the legacy tc attachment.
var errTCXUnsupported = errors.New("tcx not supported")

// forceLegacyTC makes SetLoss use the legacy attachment even where tcx
// works (tests of the fallback).
var forceLegacyTC bool

// lossThreshold maps a percentage to the prandom threshold.
func lossThreshold(percent float64) uint32 {
	v := percent / 100 * (1 << 32)
	if v >= math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(v)
}

// SetLoss drops percent % of the packets in each direction of l, with a tc
// BPF program attached (tcx, Linux 6.6+) to the ingress of both ends: a
// packet is lost after its sender sent it (and after the sender's tbf), as
// on a radio link. On the sender's own egress a drop is not a loss: the
// stack learns of it (NET_XMIT_DROP) and an MPTCP subflow sends the data
// again as new, so 10 % dropped there showed as 1.5 % retransmitted, against
// 10.5 % with the drop at the receiver (TestIntegrationBedLossIsTCPLoss).
// 0 removes it. With tcx the attachments are held by file descriptors of this
// process: they end with Close, with the process, or with the interfaces.
// Before Linux 6.6 a cls_bpf filter on a clsact qdisc is used instead; it
// lives until SetLoss(l, 0), Close, or the namespaces go.
func (b *Bed) SetLoss(l Link, percent float64) error {
	cif, pif, err := Iface(l)
	if err != nil {
		return err
	}
	if percent < 0 || percent > 100 || math.IsNaN(percent) {
		return fmt.Errorf("loss of %s: %v %% is out of range: valid is 0 to 100", l, percent)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.loss[l]; st != nil {
		for _, lk := range st.links {
			lk.Close()
		}
		delete(b.loss, l)
	}
	if percent == 0 {
		return nil
	}
	prog, err := lossProgram(lossThreshold(percent))
	if err != nil {
		return err
	}
	// The links keep their own reference to the program.
	defer prog.Close()
	st := &lossState{percent: percent}
	for _, e := range []struct {
		n      *NetNS
		ifname string
	}{{b.Client, cif}, {b.Proxy, pif}} {
		var lk io.Closer
		err := errTCXUnsupported
		if !forceLegacyTC {
			err = e.n.Do(func() error {
				ifc, err := net.InterfaceByName(e.ifname)
				if err != nil {
					return fmt.Errorf("[%s] %s: %w", e.n.Name, e.ifname, err)
				}
				lk, err = link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: prog, Attach: ebpf.AttachTCXIngress})
				if errors.Is(err, ebpf.ErrNotSupported) {
					return errTCXUnsupported
				}
				if err != nil {
					return fmt.Errorf("[%s] attach loss program to %s ingress with tcx: %w", e.n.Name, e.ifname, err)
				}
				return nil
			})
		}
		if errors.Is(err, errTCXUnsupported) {
			// Before Linux 6.6: a cls_bpf filter on a clsact qdisc.
			lk, err = attachLegacy(e.n, e.ifname, prog)
		}
		if err != nil {
			for _, x := range st.links {
				x.Close()
			}
			return err
		}
		st.links = append(st.links, lk)
	}
	b.loss[l] = st
	return nil
}

// Loss returns the loss percentage last set on l.
func (b *Bed) Loss(l Link) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.loss[l]; st != nil {
		return st.percent
	}
	return 0
}
