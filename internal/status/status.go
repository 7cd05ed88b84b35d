// Package status serves the daemon's state as JSON over a unix socket, for
// `gigapath status`. One request per connection: the client connects, the
// server writes one JSON document and closes.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Snapshot is what the daemon reports.
type Snapshot struct {
	Time time.Time `json:"time"`
	PID  int       `json:"pid"`
	// Version is the running binary's (buildinfo.Version); Started is
	// when it started: an upgrade in place keeps the PID, not these.
	Version string          `json:"version,omitempty"`
	Started time.Time       `json:"started,omitempty"`
	NetNS   string          `json:"netns,omitempty"`
	Policy  json.RawMessage `json:"policy"`
	Summary string          `json:"summary"`
	// Creates is who sends a new connection's creates, as the daemon
	// decided at its start (creates.thread): "event reader", or
	// "real-time thread, SCHED_FIFO 10", or the thread "at the daemon's
	// scheduling"; absent where the daemon sends none (server side, the
	// in-kernel PM).
	Creates     string       `json:"creates,omitempty"`
	Interfaces  []Interface  `json:"interfaces"`
	Connections []Connection `json:"connections"`
}

// Interface is one interface the policy applies to.
type Interface struct {
	Index   int          `json:"index"`
	Name    string       `json:"name"`
	Role    string       `json:"role"`
	Up      bool         `json:"up"`
	Backup  bool         `json:"backup"`
	Healthy bool         `json:"healthy"`
	Primary bool         `json:"primary,omitempty"`
	Addrs   []netip.Addr `json:"addrs"`
	RTT     string       `json:"rtt,omitempty"`
	Loss    float64      `json:"loss_percent,omitempty"`
	// Receive side of the health sample: the receiver's RTT estimate, the
	// out-of-order share of the data segments received, and the
	// connections whose peer sent on a backup subflow while it passed over
	// theirs through this interface.
	RcvRTT         string  `json:"rcv_rtt,omitempty"`
	Reorder        float64 `json:"reorder_percent,omitempty"`
	BypassedByPeer int     `json:"bypassed_by_peer,omitempty"`
}

// Connection is one tracked MPTCP connection.
type Connection struct {
	Token      uint32         `json:"token"`
	Local      netip.AddrPort `json:"local"`
	Remote     netip.AddrPort `json:"remote"`
	ServerSide bool           `json:"server_side,omitempty"`
	// NoJoinRemote: the peer set the "C" flag (RFC 8684 §3.1): no subflow
	// is opened to the connection's remote address.
	NoJoinRemote bool `json:"no_join_remote,omitempty"`
	// PeerAddrs are the addresses the peer announced (ADD_ADDR) and has
	// not withdrawn, by the peer's address id.
	PeerAddrs []PeerAddr `json:"peer_addrs,omitempty"`
	Subflows  []Subflow  `json:"subflows"`
}

// PeerAddr is one address the peer of a Connection announced.
type PeerAddr struct {
	ID   uint8          `json:"id"`
	Addr netip.AddrPort `json:"addr"`
}

// Subflow is one subflow of a Connection.
type Subflow struct {
	Local     netip.AddrPort `json:"local"`
	Remote    netip.AddrPort `json:"remote"`
	Interface string         `json:"interface,omitempty"`
	LocalID   uint8          `json:"local_id"`
	Backup    bool           `json:"backup"`
}

// Server answers status requests on a unix socket. Make it with Listen,
// run it with Serve.
type Server struct {
	path string
	ln   net.Listener
}

// Listen opens the unix socket at path (replacing a stale socket file; a
// live daemon there is an error).
func Listen(path string) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// A stale socket from a killed daemon; a live one would answer.
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("status socket %s: another daemon is listening there", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	os.Chmod(path, 0o660)
	return &Server{path: path, ln: ln}, nil
}

// Serve answers every connection with the JSON of get() until ctx ends,
// then closes the socket, removes its file and returns once every
// request it was answering is done. It returns nil then; an error only
// when accepting fails otherwise.
func (s *Server) Serve(ctx context.Context, get func(context.Context) (Snapshot, error)) error {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-stop:
		}
		s.ln.Close()
	}()
	var err error
	for {
		c, aerr := s.ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("status socket %s: %w", s.path, aerr)
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			s, err := get(rctx)
			if err != nil {
				json.NewEncoder(c).Encode(map[string]string{"error": err.Error()})
				return
			}
			json.NewEncoder(c).Encode(s)
		}()
	}
	close(stop)
	wg.Wait()
	os.Remove(s.path)
	return err
}

// Serve is Listen, then Server.Serve on its own goroutine: it returns once
// the socket is listening; the server stops and removes the file when ctx
// ends.
func Serve(ctx context.Context, path string, get func(context.Context) (Snapshot, error)) error {
	s, err := Listen(path)
	if err != nil {
		return err
	}
	go s.Serve(ctx, get)
	return nil
}

// Query asks the daemon listening at path for its snapshot.
func Query(ctx context.Context, path string) (*Snapshot, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("status socket %s: %w (is `gigapath run` running with this status_socket?)", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return nil, fmt.Errorf("status socket %s: daemon: %s", path, e.Error)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("status socket %s: bad reply: %w", path, err)
	}
	if s.Time.IsZero() {
		return nil, errors.New("status socket " + path + ": empty reply")
	}
	return &s, nil
}
