// Package socks5 is the SOCKS version 5 wire format (RFC 1928) and its
// username/password sub-negotiation (RFC 1929): typed enums, the address
// type, and parse/encode functions for every message a relay or a client
// reads or writes. It holds no policy and does no I/O beyond the reader or
// writer it is given.
package socks5

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// Version is the protocol version byte of RFC 1928.
const Version = 0x05

// AuthVersion is the sub-negotiation version byte of RFC 1929.
const AuthVersion = 0x01

// Method is an authentication method of the greeting.
type Method byte

// Methods of RFC 1928 section 3.
const (
	MethodNoAuth       Method = 0x00
	MethodGSSAPI       Method = 0x01
	MethodUserPass     Method = 0x02
	MethodNoAcceptable Method = 0xff
)

func (m Method) String() string {
	switch m {
	case MethodNoAuth:
		return "no-auth"
	case MethodGSSAPI:
		return "gssapi"
	case MethodUserPass:
		return "username/password"
	case MethodNoAcceptable:
		return "no-acceptable-methods"
	}
	return "method-0x" + strconv.FormatUint(uint64(m), 16)
}

// Command is the CMD field of a request.
type Command byte

// Commands of RFC 1928 section 4.
const (
	CmdConnect      Command = 0x01
	CmdBind         Command = 0x02
	CmdUDPAssociate Command = 0x03
)

func (c Command) String() string {
	switch c {
	case CmdConnect:
		return "connect"
	case CmdBind:
		return "bind"
	case CmdUDPAssociate:
		return "udp-associate"
	}
	return "command-0x" + strconv.FormatUint(uint64(c), 16)
}

// AddrType is the ATYP field.
type AddrType byte

// Address types of RFC 1928 section 5.
const (
	AtypIPv4   AddrType = 0x01
	AtypDomain AddrType = 0x03
	AtypIPv6   AddrType = 0x04
)

func (a AddrType) String() string {
	switch a {
	case AtypIPv4:
		return "ipv4"
	case AtypDomain:
		return "domain"
	case AtypIPv6:
		return "ipv6"
	}
	return "atyp-0x" + strconv.FormatUint(uint64(a), 16)
}

// Reply is the REP field of a reply.
type Reply byte

// Reply codes of RFC 1928 section 6.
const (
	Succeeded               Reply = 0x00
	GeneralFailure          Reply = 0x01
	NotAllowed              Reply = 0x02
	NetworkUnreachable      Reply = 0x03
	HostUnreachable         Reply = 0x04
	ConnectionRefused       Reply = 0x05
	TTLExpired              Reply = 0x06
	CommandNotSupported     Reply = 0x07
	AddressTypeNotSupported Reply = 0x08
)

// Replies lists every defined reply code, in order.
var Replies = []Reply{Succeeded, GeneralFailure, NotAllowed, NetworkUnreachable, HostUnreachable,
	ConnectionRefused, TTLExpired, CommandNotSupported, AddressTypeNotSupported}

func (r Reply) String() string {
	switch r {
	case Succeeded:
		return "succeeded"
	case GeneralFailure:
		return "general-failure"
	case NotAllowed:
		return "not-allowed-by-ruleset"
	case NetworkUnreachable:
		return "network-unreachable"
	case HostUnreachable:
		return "host-unreachable"
	case ConnectionRefused:
		return "connection-refused"
	case TTLExpired:
		return "ttl-expired"
	case CommandNotSupported:
		return "command-not-supported"
	case AddressTypeNotSupported:
		return "address-type-not-supported"
	}
	return "reply-0x" + strconv.FormatUint(uint64(r), 16)
}

// Addr is a SOCKS address: an IP address or a domain name, and a port.
// Exactly one of IP (valid) and Name (non-empty) is set.
type Addr struct {
	IP   netip.Addr
	Name string
	Port uint16
}

// Type returns the ATYP the address is encoded with.
func (a Addr) Type() AddrType {
	switch {
	case a.Name != "":
		return AtypDomain
	case a.IP.Is4() || a.IP.Is4In6():
		return AtypIPv4
	}
	return AtypIPv6
}

// String returns host:port ([v6]:port for IPv6).
func (a Addr) String() string {
	host := a.Name
	if host == "" {
		host = a.IP.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(a.Port)))
}

// AddrFromNet converts a *net.TCPAddr or *net.UDPAddr; anything else gives
// the unspecified IPv4 address, port 0 (as RFC 1928 allows for BND).
func AddrFromNet(a net.Addr) Addr {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.TCPAddr:
		ap = v.AddrPort()
	case *net.UDPAddr:
		ap = v.AddrPort()
	default:
		return Addr{IP: netip.IPv4Unspecified()}
	}
	return Addr{IP: ap.Addr().Unmap(), Port: ap.Port()}
}

// ParseAddr parses "host:port" into an Addr; host may be an IP literal or a
// name of 1-255 bytes.
func ParseAddr(s string) (Addr, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Addr{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return Addr{}, fmt.Errorf("port %q: not a number 0-65535", port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return Addr{IP: ip.Unmap(), Port: uint16(p)}, nil
	}
	if len(host) == 0 || len(host) > 255 {
		return Addr{}, fmt.Errorf("host %q: a name must have 1-255 bytes", host)
	}
	return Addr{Name: host, Port: uint16(p)}, nil
}

// AppendAddr appends ATYP, the address and the port.
func AppendAddr(b []byte, a Addr) []byte {
	switch a.Type() {
	case AtypDomain:
		b = append(b, byte(AtypDomain), byte(len(a.Name)))
		b = append(b, a.Name...)
	case AtypIPv4:
		v := a.IP.Unmap().As4()
		b = append(b, byte(AtypIPv4))
		b = append(b, v[:]...)
	default:
		ip := a.IP
		if !ip.IsValid() {
			ip = netip.IPv6Unspecified()
		}
		v := ip.As16()
		b = append(b, byte(AtypIPv6))
		b = append(b, v[:]...)
	}
	return binary.BigEndian.AppendUint16(b, a.Port)
}

// Errors of the parsers. They are returned wrapped; test with errors.Is.
var (
	ErrVersion   = errors.New("not SOCKS version 5")
	ErrAtyp      = errors.New("address type not supported")
	ErrMalformed = errors.New("malformed message")
)

// ReadAddr reads ATYP, address and port.
func ReadAddr(r io.Reader) (Addr, error) {
	var t [1]byte
	if _, err := io.ReadFull(r, t[:]); err != nil {
		return Addr{}, err
	}
	var a Addr
	switch AddrType(t[0]) {
	case AtypIPv4:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Addr{}, err
		}
		a.IP = netip.AddrFrom4(b)
	case AtypIPv6:
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Addr{}, err
		}
		a.IP = netip.AddrFrom16(b).Unmap()
	case AtypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return Addr{}, err
		}
		if n[0] == 0 {
			return Addr{}, fmt.Errorf("%w: empty domain name", ErrMalformed)
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return Addr{}, err
		}
		a.Name = string(b)
	default:
		return Addr{}, fmt.Errorf("%w: %v", ErrAtyp, AddrType(t[0]))
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return Addr{}, err
	}
	a.Port = binary.BigEndian.Uint16(p[:])
	return a, nil
}

// ParseGreeting reads the client's version/method-selection message and
// returns the offered methods.
func ParseGreeting(r io.Reader) ([]Method, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if h[0] != Version {
		return nil, fmt.Errorf("%w: greeting version %d", ErrVersion, h[0])
	}
	if h[1] == 0 {
		return nil, fmt.Errorf("%w: greeting offers no methods", ErrMalformed)
	}
	b := make([]byte, h[1])
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	ms := make([]Method, len(b))
	for i, m := range b {
		ms[i] = Method(m)
	}
	return ms, nil
}

// AppendGreeting encodes a greeting offering methods.
func AppendGreeting(b []byte, methods ...Method) []byte {
	b = append(b, Version, byte(len(methods)))
	for _, m := range methods {
		b = append(b, byte(m))
	}
	return b
}

// ParseUserPass reads an RFC 1929 username/password request.
func ParseUserPass(r io.Reader) (user, pass string, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", "", err
	}
	if h[0] != AuthVersion {
		return "", "", fmt.Errorf("%w: auth version %d, want 1", ErrVersion, h[0])
	}
	u := make([]byte, h[1])
	if _, err := io.ReadFull(r, u); err != nil {
		return "", "", err
	}
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", "", err
	}
	p := make([]byte, n[0])
	if _, err := io.ReadFull(r, p); err != nil {
		return "", "", err
	}
	return string(u), string(p), nil
}

// AppendUserPass encodes an RFC 1929 request; user and pass must have at
// most 255 bytes each.
func AppendUserPass(b []byte, user, pass string) ([]byte, error) {
	if len(user) > 255 || len(pass) > 255 {
		return b, fmt.Errorf("username and password must have at most 255 bytes each")
	}
	b = append(b, AuthVersion, byte(len(user)))
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...), nil
}

// Request is a SOCKS request (also used, with Reply in Cmd's place, for replies).
type Request struct {
	Cmd  Command
	Addr Addr
}

// ParseRequest reads a request. An unknown command still parses (the
// relay answers it with CommandNotSupported); an unknown address type
// returns an error wrapping ErrAtyp, after which the stream is unusable.
func ParseRequest(r io.Reader) (Request, error) {
	var h [3]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Request{}, err
	}
	if h[0] != Version {
		return Request{}, fmt.Errorf("%w: request version %d", ErrVersion, h[0])
	}
	a, err := ReadAddr(r)
	if err != nil {
		return Request{}, err
	}
	return Request{Cmd: Command(h[1]), Addr: a}, nil
}

// AppendRequest encodes a request.
func AppendRequest(b []byte, req Request) []byte {
	b = append(b, Version, byte(req.Cmd), 0)
	return AppendAddr(b, req.Addr)
}

// AppendReply encodes a reply with the bound address.
func AppendReply(b []byte, rep Reply, bound Addr) []byte {
	b = append(b, Version, byte(rep), 0)
	return AppendAddr(b, bound)
}

// ParseReply reads a reply and returns its code and bound address.
func ParseReply(r io.Reader) (Reply, Addr, error) {
	var h [3]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, Addr{}, err
	}
	if h[0] != Version {
		return 0, Addr{}, fmt.Errorf("%w: reply version %d", ErrVersion, h[0])
	}
	a, err := ReadAddr(r)
	return Reply(h[1]), a, err
}

// UDPHeader is the header of a datagram relayed by UDP ASSOCIATE.
type UDPHeader struct {
	Frag byte
	Addr Addr
}

type sliceReader struct{ b []byte }

func (s *sliceReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

// ParseUDP splits a relayed datagram into its header and payload.
func ParseUDP(b []byte) (UDPHeader, []byte, error) {
	if len(b) < 4 {
		return UDPHeader{}, nil, fmt.Errorf("%w: UDP datagram of %d bytes", ErrMalformed, len(b))
	}
	if b[0] != 0 || b[1] != 0 {
		return UDPHeader{}, nil, fmt.Errorf("%w: UDP reserved bytes not zero", ErrMalformed)
	}
	sr := &sliceReader{b: b[3:]}
	a, err := ReadAddr(sr)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: truncated UDP header", ErrMalformed)
		}
		return UDPHeader{}, nil, err
	}
	return UDPHeader{Frag: b[2], Addr: a}, sr.b, nil
}

// AppendUDP encodes a datagram header followed by payload.
func AppendUDP(b []byte, h UDPHeader, payload []byte) []byte {
	b = append(b, 0, 0, h.Frag)
	b = AppendAddr(b, h.Addr)
	return append(b, payload...)
}
