package pathmgr

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotSupported is matched (errors.Is) by errors for a command, attribute
// or family that the running kernel does not offer.
var ErrNotSupported = errors.New("not supported by this kernel")

// Error is a refusal from the kernel. Message is the kernel's extended
// acknowledgement text ("missing remote port", "invalid token", ...),
// verbatim, when the kernel gave one. Err is the errno.
//
// errors.Is maps ENOENT to os.ErrNotExist, EPERM and EACCES to
// os.ErrPermission, and EOPNOTSUPP to ErrNotSupported.
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
		return errors.Is(e.Err, unix.ENOENT)
	case os.ErrPermission:
		return errors.Is(e.Err, unix.EPERM) || errors.Is(e.Err, unix.EACCES)
	case ErrNotSupported:
		return errors.Is(e.Err, unix.EOPNOTSUPP) || errors.Is(e.Err, unix.ENOTSUP)
	}
	return false
}
