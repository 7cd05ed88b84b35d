//go:build linux && cgo

package rtcreate

/*
#cgo CFLAGS: -O2 -Wall
#include <stdlib.h>
#include "rtcreate.h"
*/
import "C"

import (
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/pathmgr"
	"github.com/gigapath/gigapath/pathmgr/netns"
)

// Supported: this build has the thread.
const Supported = true

// reportBuffer is the room for reports the loop has not read yet, about
// 5,000 connections' (SO_SNDBUFFORCE; without CAP_NET_ADMIN, SO_SNDBUF,
// capped by wmem_max); the thread waits when it is full.
const reportBuffer = 1 << 20

// Thread is the running thread. Its methods are safe for concurrent use.
type Thread struct {
	mu       sync.Mutex // guards rt against Publish after Close
	rt       *C.struct_gp_rt
	reports  *os.File // the loop's end of the thread's reports
	theirs   int      // the thread's end
	fifo     bool
	schedErr error
}

// Start opens the thread's sockets in o.NetNS and starts it. If the
// kernel refuses SCHED_FIFO (no CAP_SYS_NICE), the thread runs at the
// caller's scheduling and RealTime says why.
func Start(o Options) (*Thread, error) {
	if o.Priority < 0 || o.Priority > 99 {
		return nil, fmt.Errorf("rtcreate: priority %d: want 1-99, or 0 for none", o.Priority)
	}
	pause, hold, err := o.pauseHold()
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("rtcreate: reports socket: %w", err)
	}
	ours, theirs := fds[0], fds[1]
	if unix.SetsockoptInt(theirs, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, reportBuffer) != nil {
		err = unix.SetsockoptInt(theirs, unix.SOL_SOCKET, unix.SO_SNDBUF, reportBuffer)
	}
	if err != nil {
		unix.Close(ours)
		unix.Close(theirs)
		return nil, fmt.Errorf("rtcreate: reports socket: %w", err)
	}
	if err := unix.SetNonblock(ours, true); err != nil { // so that os.File reads on Go's poller
		unix.Close(ours)
		unix.Close(theirs)
		return nil, fmt.Errorf("rtcreate: reports socket: %w", err)
	}
	t := &Thread{reports: os.NewFile(uintptr(ours), "rtcreate reports"), theirs: theirs}
	start := func() error {
		var fifo, serr C.int
		var msg [256]C.char
		t.rt = C.gp_rt_start(C.int(o.Priority), C.int(theirs), C.int(pause), C.int(hold), &fifo, &serr, &msg[0], C.int(len(msg)))
		if t.rt == nil {
			return fmt.Errorf("rtcreate: %s", C.GoString(&msg[0]))
		}
		t.fifo = fifo != 0
		if serr != 0 {
			t.schedErr = fmt.Errorf("SCHED_FIFO %d: %w", o.Priority, syscall.Errno(serr))
		}
		return nil
	}
	if o.NetNS != "" {
		err = netns.Do(o.NetNS, start) // the sockets belong to the namespace of the thread that opens them
	} else {
		err = start()
	}
	if err != nil {
		t.reports.Close()
		unix.Close(theirs)
		return nil, err
	}
	return t, nil
}

// RealTime reports whether the thread runs at SCHED_FIFO, and if it was
// asked to and does not, why (the kernel's refusal).
func (t *Thread) RealTime() (bool, error) { return t.fifo, t.schedErr }

// Publish makes p what each new connection gets from now on, for p.Valid;
// nil withdraws the plan (new connections get nothing, and NotSent
// reports). Interfaces and addresses past MaxIfaces and MaxAddrs are an
// error, and the plan in force stays.
func (t *Thread) Publish(p *Plan) error {
	var cp C.struct_gp_plan
	if p != nil {
		if len(p.Ifaces) > MaxIfaces || len(p.Addrs) > MaxAddrs {
			return fmt.Errorf("rtcreate: a plan of %d interfaces and %d addresses: at most %d and %d", len(p.Ifaces), len(p.Addrs), MaxIfaces, MaxAddrs)
		}
		var now unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
			return fmt.Errorf("rtcreate: %w", err)
		}
		cp.deadline = C.int64_t(now.Nano() + int64(p.Valid))
		for n, i := range p.Ifaces {
			ci := &cp.ifs[n]
			ci.index = C.int32_t(i.Index)
			putEP(&ci.v4, i.V4)
			putEP(&ci.v6, i.V6)
		}
		cp.nifs = C.int32_t(len(p.Ifaces))
		n := 0
		for a, idx := range p.Addrs {
			ca := &cp.addrs[n]
			ca.family, ca.addr = putAddr(a)
			ca.index = C.int32_t(idx)
			n++
		}
		cp.naddrs = C.int32_t(n)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rt != nil {
		C.gp_rt_publish(t.rt, &cp)
	}
	return nil
}

func putEP(ce *C.struct_gp_ep, e pathmgr.Endpoint) {
	if !e.Addr.IsValid() {
		return
	}
	ce.family, ce.addr = putAddr(e.Addr)
	ce.id = C.uint8_t(e.ID)
	ce.flags = C.uint32_t(e.Flags)
}

func putAddr(a netip.Addr) (C.uint8_t, [16]C.uint8_t) {
	var out [16]C.uint8_t
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		for i, v := range b {
			out[i] = C.uint8_t(v)
		}
		return unix.AF_INET, out
	}
	b := a.As16()
	for i, v := range b {
		out[i] = C.uint8_t(v)
	}
	return unix.AF_INET6, out
}

func getAddr(family C.uint8_t, b [16]C.uint8_t) netip.Addr {
	var a [16]byte
	for i, v := range b {
		a[i] = byte(v)
	}
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(a[:4]))
	}
	return netip.AddrFrom16(a)
}

// Read waits for the thread's next reports: those it sent in one message,
// up to 64. The thread holds its reports while a burst lasts and sends
// them when it pauses (Options.Pause), or, as a connection comes, once
// the first it holds is Options.Hold old. After Close it returns
// os.ErrClosed.
func (t *Thread) Read() ([]Report, error) {
	var batch [C.GP_BATCH]C.struct_gp_report
	size := int(unsafe.Sizeof(batch[0]))
	b := unsafe.Slice((*byte)(unsafe.Pointer(&batch[0])), len(batch)*size)
	n, err := t.reports.Read(b)
	if err != nil {
		return nil, err
	}
	if n == 0 || n%size != 0 {
		return nil, fmt.Errorf("rtcreate: a message of %d bytes, want a multiple of %d", n, size)
	}
	out := make([]Report, 0, n/size)
	for _, cr := range batch[:n/size] {
		out = append(out, report(&cr))
	}
	return out, nil
}

func report(cr *C.struct_gp_report) Report {
	r := Report{Kind: Kind(cr.kind), Token: uint32(cr.token)}
	msg := C.GoString(&cr.msg[0])
	switch r.Kind {
	case Refused, NotSent, Sent:
		r.Remote = netip.AddrPortFrom(getAddr(cr.family, cr.remote), uint16(cr.port))
		switch r.Kind {
		case Refused:
			r.Local = pathmgr.Endpoint{ID: uint8(cr.id), Addr: getAddr(cr.family, cr.local), IfIndex: int(cr.index)}
			r.Err = &pathmgr.Error{Op: "subflow create", Message: msg, Err: syscall.Errno(cr.err)}
		case Sent:
			for _, idx := range cr.sent[:min(int(cr.nsent), len(cr.sent))] {
				r.Sent = append(r.Sent, int(idx))
			}
		}
	case Failed:
		r.Err = fmt.Errorf("rtcreate: %s: %w", msg, syscall.Errno(cr.err))
	}
	return r
}

// Busy reports whether the thread is in a burst: it took a new
// connection within its pause (Options.Pause), a plan in force for it,
// and holds reports, waiting for more. False after Close.
func (t *Thread) Busy() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rt != nil && C.gp_rt_busy(t.rt) != 0
}

// Taken counts the new connections the thread took with a plan in force
// (those it sent creates for, or tried to). Zero after Close.
func (t *Thread) Taken() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rt == nil {
		return 0
	}
	return uint64(C.gp_rt_taken(t.rt))
}

// Close stops the thread and waits for it. Reports not read are dropped.
func (t *Thread) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rt == nil {
		return nil
	}
	// Our end first: a thread waiting to report (the buffer full) gets
	// EPIPE and goes on to see that it is stopped.
	err := t.reports.Close()
	C.gp_rt_stop(t.rt)
	t.rt = nil
	unix.Close(t.theirs)
	return err
}
