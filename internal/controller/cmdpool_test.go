package controller

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/pathmgr"
	dto "github.com/prometheus/client_model/go"
)

// poolPM records creates and refuses those for token 13; gate, when set,
// holds every create until it is closed.
type poolPM struct {
	mu      sync.Mutex
	created []uint32
	gate    chan struct{}
	atGate  chan struct{} // told, if not full, as a create comes to the gate
}

func (r *poolPM) CreateSubflow(token uint32, _ pathmgr.Endpoint, _ netip.AddrPort) error {
	if r.gate != nil {
		select {
		case r.atGate <- struct{}{}:
		default:
		}
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.created = append(r.created, token)
	if token == 13 {
		return errors.New("refused")
	}
	return nil
}
func (*poolPM) DestroySubflow(uint32, pathmgr.Subflow) error         { return nil }
func (*poolPM) SetSubflowBackup(uint32, pathmgr.Subflow, bool) error { return nil }
func (*poolPM) Announce(uint32, pathmgr.Endpoint) error              { return nil }
func (*poolPM) Remove(uint32, uint8) error                           { return nil }

func (r *poolPM) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.created) }

func TestAsyncPMReportsRefusals(t *testing.T) {
	loop := &poolPM{}
	workers := []*poolPM{{}, {}}
	n := 0
	var closed atomic.Int32
	a, err := newAsyncPM(loop, 2, func() (PM, func() error, error) {
		w := workers[n]
		n++
		return w, func() error { closed.Add(1); return nil }, nil
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	remote := netip.MustParseAddrPort("10.0.0.1:80")
	for tok := uint32(10); tok < 20; tok++ {
		if err := a.CreateSubflow(tok, pathmgr.Endpoint{IfIndex: 3}, remote); err != nil {
			t.Fatalf("queued create returned %v", err)
		}
	}
	select {
	case f := <-a.Failures():
		if f.token != 13 || f.local.IfIndex != 3 || f.remote != remote || f.err == nil {
			t.Errorf("failure = %+v, want token 13 on ifindex 3 to %v", f, remote)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the refused create was never reported")
	}
	deadline := time.Now().Add(10 * time.Second)
	for workers[0].count()+workers[1].count() < 10 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	a.Close()
	a.Close() // idempotent
	if got := workers[0].count() + workers[1].count(); got != 10 {
		t.Errorf("workers sent %d creates, want 10", got)
	}
	if loop.count() != 0 {
		t.Errorf("the loop's own socket sent %d creates, want 0", loop.count())
	}
	if closed.Load() != 2 {
		t.Errorf("%d worker sockets closed, want 2", closed.Load())
	}
	select {
	case f := <-a.Failures():
		t.Errorf("unexpected second failure %+v", f)
	default:
	}
}

// A full queue makes CreateSubflow synchronous on the loop's socket.
func TestAsyncPMBackPressure(t *testing.T) {
	loop := &poolPM{}
	gate := make(chan struct{})
	a, err := newAsyncPM(loop, 1, func() (PM, func() error, error) {
		return &poolPM{gate: gate}, func() error { return nil }, nil
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { close(gate); a.Close() }()
	remote := netip.MustParseAddrPort("10.0.0.1:80")
	// One create held by the worker plus a full queue.
	for i := 0; i < cap(a.jobs)+1; i++ {
		a.CreateSubflow(1, pathmgr.Endpoint{}, remote)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(a.jobs) < cap(a.jobs) && time.Now().Before(deadline) {
		a.CreateSubflow(1, pathmgr.Endpoint{}, remote)
	}
	before := loop.count()
	if err := a.CreateSubflow(13, pathmgr.Endpoint{}, remote); err == nil {
		t.Error("a create on a full queue did not run synchronously (want the refusal back at once)")
	}
	if loop.count() != before+1 {
		t.Errorf("loop socket creates %d → %d, want one more", before, loop.count())
	}
}

// A refusal reported by the pool clears the pending create and sets the
// back-off for that (interface, destination) slot only; one for a closed connection is only counted.
func TestCreateFailedBacksOff(t *testing.T) {
	m := metrics.New()
	c, err := New(Config{Policy: testPolicy(t, "aggregate"), Metrics: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cn := c.conn(7)
	dst := netip.MustParseAddrPort("10.0.0.1:80")
	other := slot{3, netip.MustParseAddrPort("10.0.0.2:80")}
	cn.pending.set(slot{3, dst}, time.Now())
	cn.pending.set(other, time.Now())
	c.createFailed(createFailure{createJob{token: 7, local: pathmgr.Endpoint{IfIndex: 3}, remote: dst}, errors.New("refused")})
	if _, ok := cn.pending.get(slot{3, dst}); ok {
		t.Error("pending create kept after the refusal")
	}
	if t0, ok := cn.backoff.get(slot{3, dst}); !ok || time.Until(t0) <= 0 {
		t.Errorf("backoff = %v, %v; want a time in the future", t0, ok)
	}
	if _, ok := cn.pending.get(other); !ok {
		t.Error("the refusal also cleared another destination's pending create")
	}
	c.createFailed(createFailure{createJob{token: 99}, errors.New("no such connection")})
	var pb dto.Metric
	if err := m.CommandErrors.WithLabelValues("subflow_create").Write(&pb); err != nil {
		t.Fatal(err)
	}
	if got := pb.GetCounter().GetValue(); got != 2 {
		t.Errorf("command errors = %v, want 2", got)
	}
	if _, ok := c.conns[99]; ok {
		t.Error("a failure for an unknown token created a connection")
	}
}

// Close lets the create in flight finish and drops the queued ones: the
// daemon is stopping and its routing is about to go.
func TestAsyncPMCloseDropsQueued(t *testing.T) {
	gate, atGate := make(chan struct{}), make(chan struct{}, 1)
	w := &poolPM{gate: gate, atGate: atGate}
	a, err := newAsyncPM(&poolPM{}, 1, func() (PM, func() error, error) { return w, func() error { return nil }, nil }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	remote := netip.MustParseAddrPort("10.0.0.1:80")
	for i := 0; i < 5; i++ {
		a.CreateSubflow(uint32(i), pathmgr.Endpoint{}, remote)
	}
	// The worker holds the first create at the gate, the other four
	// queued behind it. (Until the create is at the gate the worker may
	// still look at done: a Close then would drop it too.)
	select {
	case <-atGate:
	case <-time.After(10 * time.Second):
		t.Fatal("no create came to the gate")
	}
	if n := len(a.jobs); n != 4 {
		t.Fatalf("%d creates queued behind the first, want 4", n)
	}
	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	<-a.done // Close has begun
	close(gate)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if got := w.count(); got != 1 {
		t.Errorf("%d creates sent, want 1 (the one in flight; the queued ones dropped)", got)
	}
}
