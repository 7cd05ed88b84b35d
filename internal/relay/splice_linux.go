//go:build linux

package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// pipeSize is what each splice pipe is asked to hold (F_SETPIPE_SZ): 1 MiB,
// fs.pipe-max-size's default and the size Go's own splice uses
// (docs/benchmarks.md, "relay: what separates it from the direct path",
// compares others). A process without CAP_SYS_RESOURCE gets it only while
// its user's pipes stay under fs.pipe-user-pages-soft (16384 pages: 64
// such pipes); beyond, the kernel refuses to grow a pipe and makes new
// ones 8 KiB, which still work (docs/relay.md).
const pipeSize = 1 << 20

// pipe is a splice pipe: two fds, and the bytes spliced into it and not
// yet out.
type pipe struct {
	r, w, size, data int
}

// idlePipes keeps up to 8 empty pipes for reuse; more are closed, so a
// burst of connections that then go idle leaves at most 16 fds (and 8 of
// the user's 64 full-size pipes) behind.
var idlePipes = make(chan *pipe, 8)

func getPipe() (*pipe, error) {
	select {
	case p := <-idlePipes:
		return p, nil
	default:
		return newPipe()
	}
}

// putPipe keeps p for reuse when it is empty and there is room, else
// closes it (data left in it belongs to a connection that failed).
func putPipe(p *pipe) {
	if p.data == 0 {
		select {
		case idlePipes <- p:
			return
		default:
		}
	}
	unix.Close(p.r)
	unix.Close(p.w)
}

// dropIdlePipes closes the pipes kept for reuse (tests count fds).
func dropIdlePipes() {
	for {
		select {
		case p := <-idlePipes:
			unix.Close(p.r)
			unix.Close(p.w)
		default:
			return
		}
	}
}

func newPipe() (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	// A smaller pipe still works, with more system calls.
	size, err := unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize)
	if err != nil {
		size, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_GETPIPE_SZ, 0)
	}
	return &pipe{r: fds[0], w: fds[1], size: max(size, 4096)}, nil
}

// splicer moves one direction of a connection between two TCP (or MPTCP)
// sockets with splice(2): socket → pipe → socket, no copy through user
// space. It holds a pipe only while data flows: when the source has
// nothing to read, the pipe (empty then) goes back to the pool and the
// splicer waits in the poller holding nothing, so an idle connection
// costs no pipe fds. Unlike (*net.TCPConn).ReadFrom it keeps its pipe
// from one chunk to the next and needs no readiness probe before each
// chunk.
type splicer struct {
	dst, src   *net.TCPConn
	rdst, rsrc syscall.RawConn
	p          *pipe
	copying    bool // no pipe to be had (fds exhausted) or splice refused: copy
}

// newSplicer returns nil when the sockets give no raw access.
func newSplicer(dst, src *net.TCPConn) *splicer {
	rdst, err1 := dst.SyscallConn()
	rsrc, err2 := src.SyscallConn()
	if err1 != nil || err2 != nil {
		return nil
	}
	return &splicer{dst: dst, src: src, rdst: rdst, rsrc: rsrc}
}

var errNoPipe = errors.New("no splice pipe")

// move moves up to limit bytes; it returns a nil error when it moved
// limit bytes or reached EOF, like ReadFrom of an io.LimitedReader.
// Errors of either socket (the source's read deadline included) come back
// as the net package reports them.
func (s *splicer) move(limit int64) (int64, error) {
	if s.copying {
		return copyChunk(s.dst, s.src, limit)
	}
	var moved int64
	for moved < limit {
		n, err := s.fill(int(min(limit-moved, pipeSize)))
		if errors.Is(err, errNoPipe) || errors.Is(err, unix.EINVAL) {
			// EMFILE/ENFILE for the pipe, or a socket that refuses
			// splice (EINVAL consumes nothing; the pipe is empty
			// before every fill): copy from here on.
			s.copying = true
			m, err := copyChunk(s.dst, s.src, limit-moved)
			return moved + m, err
		}
		if err != nil {
			return moved, err
		}
		if n == 0 {
			return moved, nil // EOF
		}
		m, err := s.drain()
		moved += m
		if err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// fill splices up to max bytes from the source into the pipe, waiting for
// data without a pipe when there is none.
func (s *splicer) fill(max int) (int, error) {
	var n int
	var serr error
	err := s.rsrc.Read(func(fd uintptr) bool {
		if s.p == nil {
			p, err := getPipe()
			if err != nil {
				serr = fmt.Errorf("%w: %w", errNoPipe, err)
				return true
			}
			s.p = p
		}
		for {
			n, serr = splice(int(fd), s.p.w, min(max, s.p.size))
			if serr != unix.EINTR {
				break
			}
		}
		if serr == unix.EAGAIN {
			// Nothing to read: wait holding no pipe (it is empty, drain
			// emptied it).
			putPipe(s.p)
			s.p = nil
			return false
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	s.p.data += n
	return n, nil
}

// drain splices everything in the pipe into the destination.
func (s *splicer) drain() (int64, error) {
	var moved int64
	var serr error
	err := s.rdst.Write(func(fd uintptr) bool {
		for s.p.data > 0 {
			n, err := splice(s.p.r, int(fd), s.p.data)
			if n > 0 {
				s.p.data -= n
				moved += int64(n)
				continue
			}
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				return false
			}
			if err == nil {
				err = io.ErrUnexpectedEOF // the pipe cannot be empty here
			}
			serr = err
			return true
		}
		return true
	})
	if err == nil {
		err = serr
	}
	return moved, err
}

// release gives the pipe back (or closes it, if a failed write left
// data in it).
func (s *splicer) release() {
	if s.p != nil {
		putPipe(s.p)
		s.p = nil
	}
}

func splice(in, out, n int) (int, error) {
	m, err := unix.Splice(in, nil, out, nil, n, unix.SPLICE_F_NONBLOCK)
	return int(m), err
}
