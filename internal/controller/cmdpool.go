package controller

import (
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gigapath/gigapath/pathmgr"
)

// createWorkers is how many workers send the daemon's SUBFLOW_CREATEs
// (see asyncPM).
const createWorkers = 1

// createJob is one SUBFLOW_CREATE the event loop asked for.
type createJob struct {
	token  uint32
	local  pathmgr.Endpoint
	remote netip.AddrPort
	queued time.Time // when the loop asked for it (real clock)
}

// createFailure is a create the kernel refused, reported back to the event
// loop, which owns all state.
type createFailure struct {
	createJob
	err error
}

// asyncPM sends SUBFLOW_CREATE from workers of their own, each with a
// path-manager socket. The kernel does the subflow's connect inline in that
// request (on a veth or a local NIC the whole handshake), which is most of
// the cost of serving a connection; the event loop goes on with the next
// events meanwhile. The other commands are rare and stay synchronous on the
// loop's own socket. When the queue is full CreateSubflow runs
// synchronously, which is the back-pressure.
//
// The daemon runs one worker (createWorkers): the kernel serializes every
// request of the mptcp_pm family on the generic netlink mutex (the family
// does not set parallel_ops), so a second worker only waits on that mutex,
// holding one of the runtime's Ps while it does. The flag alone would not
// make the family safe to run in parallel (docs/benchmarks.md, "the
// kernel's side, tried").
type asyncPM struct {
	PM
	jobs     chan createJob
	failures chan createFailure
	// queueWait and request time each create (metrics.CreateSeconds); nil
	// observers are not called.
	queueWait, request prometheus.Observer
	done               chan struct{}
	wg                 sync.WaitGroup
	once               sync.Once
}

// newAsyncPM starts workers, each on a socket of its own from dial;
// queueWait and request (nil: none) time each create.
func newAsyncPM(sync PM, workers int, dial func() (PM, func() error, error), queueWait, request prometheus.Observer) (*asyncPM, error) {
	a := &asyncPM{PM: sync, jobs: make(chan createJob, 4096), failures: make(chan createFailure, 256), done: make(chan struct{}),
		queueWait: queueWait, request: request}
	for i := 0; i < workers; i++ {
		pm, closeFn, err := dial()
		if err != nil {
			a.Close()
			return nil, err
		}
		a.wg.Add(1)
		go a.work(pm, closeFn)
	}
	return a, nil
}

func (a *asyncPM) work(pm PM, closeFn func() error) {
	defer a.wg.Done()
	defer closeFn()
	for j := range a.jobs {
		select {
		case <-a.done:
			continue // stopping: drop what is still queued
		default:
		}
		start := time.Now()
		if a.queueWait != nil {
			a.queueWait.Observe(start.Sub(j.queued).Seconds())
		}
		err := pm.CreateSubflow(j.token, j.local, j.remote)
		if a.request != nil {
			a.request.Observe(time.Since(start).Seconds())
		}
		if err != nil {
			select {
			case a.failures <- createFailure{j, err}:
			case <-a.done:
			}
		}
	}
}

// CreateSubflow queues the request; a refusal arrives on Failures.
func (a *asyncPM) CreateSubflow(token uint32, local pathmgr.Endpoint, remote netip.AddrPort) error {
	select {
	case a.jobs <- createJob{token, local, remote, time.Now()}:
		return nil
	default:
		return a.PM.CreateSubflow(token, local, remote)
	}
}

// Failures delivers refused creates to the event loop.
func (a *asyncPM) Failures() <-chan createFailure { return a.failures }

// Close stops the workers and waits for them: requests in flight finish,
// queued ones are dropped (the daemon is stopping, and its routing is about
// to go). Later calls do nothing.
func (a *asyncPM) Close() {
	a.once.Do(func() {
		close(a.done)
		close(a.jobs)
		a.wg.Wait()
	})
}
