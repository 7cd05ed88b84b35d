//go:build linux

package pathmgr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// client is the Linux side of Client: one generic netlink socket bound to
// the mptcp_pm family, used by one request at a time.
type client struct {
	mu     sync.Mutex
	c      *genetlink.Conn
	family genetlink.Family

	// For requests answered by an acknowledgement only (see ack), guarded
	// by mu: the socket's descriptor (nil on a socket without one, such
	// as a test's fake: those go through Execute), the last sequence
	// number used, and buffers reused from request to request.
	rc                      syscall.RawConn
	seq                     uint32
	sbuf, rbuf              []byte
	enc                     attrEncoder // writes into sbuf
	got                     int         // the length of the datagram recv read
	ioErr                   error       // what send or recv failed with
	held                    bool        // send keeps the P (see ack and send)
	sendFn, recvFn, drainFn func(uintptr) bool
}

// dialNetlink opens a generic netlink socket in the namespace cfg names,
// with strict checking and extended acknowledgements. The namespace file is
// closed once the socket exists; the calling thread never changes
// namespace.
func dialNetlink(cfg *Config) (*genetlink.Conn, error) {
	ns, err := cfg.netnsFile()
	if err != nil {
		return nil, err
	}
	// Strict turns on ExtendedAcknowledge (the kernel's reasons for a
	// refusal) and strict attribute checking of dump requests. A fixed,
	// pooled receive buffer saves a peek and an allocation per reply: the
	// kernel sizes a dump's datagrams by the buffers it has seen, at most
	// 32 KiB.
	nlcfg := &netlink.Config{Strict: true, MessageBufferSize: 32 << 10}
	if ns != nil {
		defer ns.Close()
		nlcfg.NetNS = int(ns.Fd())
	}
	c, err := genetlink.Dial(nlcfg)
	if err != nil {
		return nil, fmt.Errorf("pathmgr: open generic netlink socket: %w", err)
	}
	return c, nil
}

// resolveFamily looks up mptcp_pm, with a plain message when it is absent.
func resolveFamily(c *genetlink.Conn) (genetlink.Family, error) {
	f, err := c.GetFamily(familyName)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return f, fmt.Errorf("pathmgr: MPTCP path manager (generic netlink family %s) not available: kernel without CONFIG_MPTCP or MPTCP disabled: %w", familyName, err)
		}
		return f, fmt.Errorf("pathmgr: resolve generic netlink family %s: %w", familyName, err)
	}
	return f, nil
}

func dial(cfg *Config) (*client, error) {
	c, err := dialNetlink(cfg)
	if err != nil {
		return nil, err
	}
	cl, err := initClient(c)
	if err != nil {
		return nil, err
	}
	return cl.c, nil
}

// initClient resolves the family on an open connection; it closes the
// connection on failure. Tests call it with a genltest connection.
func initClient(c *genetlink.Conn) (*Client, error) {
	f, err := resolveFamily(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	cl := &client{c: c, family: f}
	if rc, err := c.SyscallConn(); err == nil {
		cl.rc = rc
		cl.rbuf = make([]byte, ackBufferBytes)
		cl.sendFn, cl.recvFn, cl.drainFn = cl.send, cl.recv, cl.drain
	}
	return &Client{c: cl}, nil
}

func (c *client) close() error { return c.c.Close() }

func (c *client) familyVersion() uint8 { return c.family.Version }

// execute sends one request and returns the replies. Answers left on the
// socket (a request of ack's that ended on a receive error, such as
// ENOBUFS, before its acknowledgement was read) are read and dropped
// first: Execute would take the first datagram for its reply.
func (c *client) execute(req genetlink.Message, flags netlink.HeaderFlags) ([]genetlink.Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rc != nil {
		_ = c.rc.Read(c.drainFn)
	}
	return c.c.Execute(req, c.family.ID, flags)
}

// ackBufferBytes is the receive buffer of ack: an acknowledgement of a
// refusal echoes the request (a few dozen bytes) and carries the kernel's
// message.
const ackBufferBytes = 4 << 10

// Flags of netlink headers that ack reads and writes.
const (
	nlmFRequest     = 0x1   // NLM_F_REQUEST
	nlmFAck         = 0x4   // NLM_F_ACK
	nlmFCapped      = 0x100 // NLM_F_CAPPED: the echoed request is its header only
	nlmFAckTLVs     = 0x200 // NLM_F_ACK_TLVS: extended acknowledgement attributes follow
	nlmsgerrAttrMsg = 1     // NLMSGERR_ATTR_MSG
)

// ack sends one request of a command that the kernel answers with an
// acknowledgement only (the commands that change state: SUBFLOW_CREATE
// among them, which a userspace path manager sends for every connection)
// and waits for that acknowledgement. It writes and reads the socket's
// descriptor directly, with buffers kept from request to request, where
// Execute allocates some 40 times per request (BenchmarkAck). It returns
// false, without sending, on a socket without a descriptor; the caller
// then uses Execute.
//
// The reply is matched by sequence number, so a message left on the
// socket by an earlier request that failed halfway is skipped, not taken
// for this one's answer. A refusal is a *netlink.OpError as Execute's
// would be, with the kernel's extended acknowledgement message verbatim.
// oneConn says that the kernel's work for the command is one connection's:
// in a process with one P it is sent without giving up the P (see send).
func (c *client) ack(cmd uint8, oneConn bool, encode func(*attrEncoder)) (bool, error) {
	if c.rc == nil {
		return false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	seq := c.seq
	c.enc.b = append(c.sbuf[:0], make([]byte, nlmsgHdrLen+genlHdrLen)...)
	if encode != nil {
		encode(&c.enc)
	}
	b := c.enc.b
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], c.family.ID)
	binary.NativeEndian.PutUint16(b[6:8], nlmFRequest|nlmFAck)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	clear(b[12:16]) // the sender's port id: 0, the kernel fills it in
	b[16], b[17], b[18], b[19] = cmd, familyVersion, 0, 0
	c.sbuf = b

	c.ioErr, c.held = nil, oneConn && runtime.GOMAXPROCS(0) == 1
	err := c.rc.Write(c.sendFn)
	if err == nil {
		err = c.ioErr
	}
	if err != nil {
		return true, &netlink.OpError{Op: "send", Err: err}
	}
	for {
		err := c.rc.Read(c.recvFn)
		if err == nil {
			err = c.ioErr
		}
		if err != nil {
			return true, &netlink.OpError{Op: "receive", Err: err}
		}
		if c.got > len(c.rbuf) {
			// A datagram larger than the buffer, its tail gone: a
			// leftover dump's, unless it is this request's (a refusal
			// with a message of kilobytes, never seen).
			if c.got >= nlmsgHdrLen && binary.NativeEndian.Uint32(c.rbuf[8:12]) == seq {
				return true, &netlink.OpError{Op: "receive", Err: unix.EMSGSIZE, Sequence: seq}
			}
			continue
		}
		if done, err := ackOf(c.rbuf[:c.got], seq); done {
			return true, err
		}
	}
}

// send writes sbuf to the socket (for RawConn.Write, as sendFn: a method
// value made once, where a closure would be allocated per request).
//
// The kernel serves the request inline, in this system call; a
// SUBFLOW_CREATE connects the subflow there (on a veth the whole
// handshake, some 40 µs). Through Syscall, the runtime's sysmon takes the
// P of a thread that stays in a call over 20 µs when no other P is idle,
// which under GOMAXPROCS=1 (as a client's daemon runs) is always, and
// wakes another thread to run it; the caller must win a P back on return.
// On CPUs that the connections keep busy, both threads then wait for a
// CPU. So in a process with one P, a command whose work is one
// connection's (held: create, destroy, announce, remove) goes through
// RawSyscall and keeps the P (measured: docs/benchmarks.md, "the create
// keeps its P"). Meanwhile the process's other goroutines wait for the
// kernel. Usually that is one connection's
// work, but the request may sleep: on the connection's lock, and on the
// generic netlink mutex, which any request of a family without
// parallel_ops holds, in any namespace and any process (a flush at
// 50,000 connections among them). With more than one P an idle one is
// usually there, sysmon leaves the call alone, and Syscall costs nothing
// more; the other commands may walk every connection and always go
// through Syscall.
func (c *client) send(fd uintptr) bool {
	var errno unix.Errno
	// Direct calls: the uintptr(unsafe.Pointer(...)) arguments keep the
	// buffer alive only in a call written as such.
	if c.held {
		_, _, errno = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&c.sbuf[0])), uintptr(len(c.sbuf)), 0, 0, 0)
	} else {
		_, _, errno = unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&c.sbuf[0])), uintptr(len(c.sbuf)), 0, 0, 0)
	}
	switch errno {
	case 0:
	case unix.EAGAIN, unix.EINTR:
		return false // wait until the socket is writable, or again
	default:
		c.ioErr = errno
	}
	return true
}

// recvDatagram reads the next datagram queued on the socket fd into buf,
// without waiting (EAGAIN when none is queued): its whole length, past
// len(buf) when it was cut (MSG_TRUNC), or the errno. A raw system call on
// a caller's buffer, where the syscall package's Recvfrom allocates the
// sender's address: every reader of this package's sockets uses it from
// a RawConn callback.
//
// dump says that a dump may run on the socket: the kernel then fills the
// dump's next datagram inside this call (for the inventory's sock_diag
// dumps, a walk of the socket tables), which may take long, and the call
// goes through Syscall. Without one (events, acknowledgements) the call
// only copies what is queued, and goes through RawSyscall, without the
// runtime's bookkeeping for a call that might block (see send).
func recvDatagram(fd uintptr, buf []byte, dump bool) (int, unix.Errno) {
	var n uintptr
	var errno unix.Errno
	if dump {
		n, _, errno = unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
	} else {
		n, _, errno = unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
	}
	return int(n), errno
}

// drain reads and drops every datagram queued on the socket (for
// RawConn.Read, as drainFn); it never waits. What it drops may be the rest
// of a dump a failed request left running.
func (c *client) drain(fd uintptr) bool {
	for {
		if _, errno := recvDatagram(fd, c.rbuf, true); errno != 0 && errno != unix.EINTR {
			return true // EAGAIN: empty
		}
	}
}

// recv reads one datagram into rbuf, its whole length into got (for
// RawConn.Read, as recvFn).
func (c *client) recv(fd uintptr) bool {
	n, errno := recvDatagram(fd, c.rbuf, false)
	switch errno {
	case 0:
		c.got = n
	case unix.EAGAIN, unix.EINTR:
		return false // wait for the reply, or again
	default:
		c.ioErr = errno
	}
	return true
}

// ackOf looks in one datagram for the acknowledgement of request seq. It
// returns done with the request's outcome when it found it (or the
// datagram is malformed), and not done when the datagram is another
// request's.
func ackOf(b []byte, seq uint32) (done bool, err error) {
	for len(b) >= nlmsgHdrLen {
		m, rest, err := nextMessage(b)
		if err != nil {
			return true, &netlink.OpError{Op: "receive", Err: err}
		}
		b = rest
		if m.seq != seq || m.typ != nlmsgError {
			continue
		}
		data := m.data
		if len(data) < 4 {
			return true, &netlink.OpError{Op: "receive", Err: fmt.Errorf("acknowledgement of %d bytes, too short for its error number", len(data))}
		}
		code := int32(binary.NativeEndian.Uint32(data[0:4]))
		if code == 0 {
			return true, nil
		}
		oe := &netlink.OpError{Op: "receive", Err: unix.Errno(-code), Sequence: seq}
		if m.flags&nlmFAckTLVs != 0 && len(data) >= 4+nlmsgHdrLen {
			// After the errno, the echoed request: its header only when
			// capped, else the whole of it, padded to 4 bytes. Its length
			// is checked as a number first, so that a bad one cannot
			// turn negative as an int (32 bits on arm).
			off := 4 + nlmsgHdrLen
			if n := binary.NativeEndian.Uint32(data[4:8]); m.flags&nlmFCapped == 0 {
				if n < nlmsgHdrLen || n > uint32(len(data)-4) {
					return true, oe
				}
				off = 4 + int((n+3)&^3)
			}
			oe.Message = extackMessage(data[min(off, len(data)):])
		}
		return true, oe
	}
	return false, nil
}

// extackMessage is the NLMSGERR_ATTR_MSG text among extended
// acknowledgement attributes, "" without one.
func extackMessage(b []byte) string {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & 0x3fff
		if l < 4 || l > len(b) {
			return ""
		}
		if typ == nlmsgerrAttrMsg {
			return unix.ByteSliceToString(b[4:l])
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return ""
}

// unameRelease is uname -r.
func unameRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
