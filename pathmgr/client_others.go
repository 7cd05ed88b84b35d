//go:build !linux

package pathmgr

import (
	"fmt"
	"net/netip"
	"runtime"
)

var errOS = fmt.Errorf("pathmgr: MPTCP path manager not supported on %s/%s", runtime.GOOS, runtime.GOARCH)

// Client is unavailable outside Linux; Dial returns an error.
type Client struct{}

// Dial returns an error: the MPTCP path manager is Linux only.
func Dial(*Config) (*Client, error)                                     { return nil, errOS }
func (*Client) Close() error                                            { return errOS }
func (*Client) AddEndpoint(Endpoint) error                              { return errOS }
func (*Client) DeleteEndpoint(uint8, netip.Addr) error                  { return errOS }
func (*Client) Endpoint(uint8) (Endpoint, error)                        { return Endpoint{}, errOS }
func (*Client) Endpoints() ([]Endpoint, error)                          { return nil, errOS }
func (*Client) FlushEndpoints() error                                   { return errOS }
func (*Client) SetEndpointFlags(uint8, netip.Addr, EndpointFlags) error { return errOS }
func (*Client) Limits() (Limits, error)                                 { return Limits{}, errOS }
func (*Client) SetLimits(LimitsUpdate) error                            { return errOS }
func (*Client) Announce(uint32, Endpoint) error                         { return errOS }
func (*Client) Remove(uint32, uint8) error                              { return errOS }
func (*Client) CreateSubflow(uint32, Endpoint, netip.AddrPort) error    { return errOS }
func (*Client) DestroySubflow(uint32, Subflow) error                    { return errOS }
func (*Client) SetSubflowBackup(uint32, Subflow, bool) error            { return errOS }
func (*Client) ConnectionAddrs(uint32) ([]Endpoint, error)              { return nil, errOS }
func (*Client) FamilyVersion() uint8                                    { return 0 }
