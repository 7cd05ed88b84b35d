//go:build !linux || !cgo

package rtcreate

// Supported: this build has no thread.
const Supported = false

// Thread is the running thread; in this build there is none.
type Thread struct{}

// Start returns ErrUnsupported: this build has no C.
func Start(Options) (*Thread, error) { return nil, ErrUnsupported }

func (*Thread) RealTime() (bool, error) { return false, ErrUnsupported }
func (*Thread) Publish(*Plan) error     { return ErrUnsupported }
func (*Thread) Read() ([]Report, error) { return nil, ErrUnsupported }
func (*Thread) Busy() bool              { return false }
func (*Thread) Taken() uint64           { return 0 }
func (*Thread) Close() error            { return nil }
