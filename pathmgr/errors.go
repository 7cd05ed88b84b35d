package pathmgr

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/mdlayher/netlink"
)

// ErrNotSupported is matched (errors.Is) by errors for a command, attribute
// or family that the running kernel (or OS) does not offer.
var ErrNotSupported = errors.New("not supported by this kernel")

// Error is a refusal from the kernel. Message is the kernel's extended
// acknowledgement text ("missing remote port", "invalid token", ...),
// verbatim, when the kernel gave one; otherwise a short explanation of the
// errno where one helps (EPERM: needs CAP_NET_ADMIN). Err is the errno.
//
// errors.Is maps ENOENT to os.ErrNotExist, EPERM and EACCES to
// os.ErrPermission, and EOPNOTSUPP to ErrNotSupported; errors.Is(err,
// syscall.EINVAL) and friends work through Unwrap.
type Error struct {
	Op      string // the command, e.g. "subflow create"
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("%s: %s (%v)", e.Op, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, os.ErrNotExist) and friends work.
func (e *Error) Is(target error) bool {
	switch target {
	case os.ErrNotExist:
		return errors.Is(e.Err, syscall.ENOENT)
	case os.ErrPermission:
		return errors.Is(e.Err, syscall.EPERM) || errors.Is(e.Err, syscall.EACCES)
	case ErrNotSupported:
		return errors.Is(e.Err, syscall.EOPNOTSUPP) || errors.Is(e.Err, syscall.ENOTSUP)
	}
	return false
}

// opError turns a netlink error into *Error, keeping the extack message.
func opError(op string, err error) error {
	var oe *netlink.OpError
	if !errors.As(err, &oe) {
		return &Error{Op: op, Err: err}
	}
	e := &Error{Op: op, Message: oe.Message, Err: oe.Err}
	if e.Message == "" {
		// The kernel gave no reason: say what the errno means here.
		switch {
		case errors.Is(oe.Err, syscall.EOPNOTSUPP):
			e.Message = "command not supported by this kernel's MPTCP path manager"
		case errors.Is(oe.Err, syscall.EPERM):
			e.Message = "needs CAP_NET_ADMIN in the network namespace"
		}
	}
	return e
}
