// Package metrics holds the daemon's Prometheus metrics. The metric names
// are exported constants so that tests and dashboards use the same strings
// as the code that sets them.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names.
const (
	Connections      = "gigapath_connections"                // gauge: live MPTCP connections the controller tracks
	Subflows         = "gigapath_subflows"                   // gauge{interface,role}: subflows per interface
	Events           = "gigapath_pm_events_total"            // counter{type}: path-manager events received
	Commands         = "gigapath_pm_commands_total"          // counter{command}: path-manager commands sent
	CommandErrors    = "gigapath_pm_command_errors_total"    // counter{command}: commands the kernel refused
	ReactionLatency  = "gigapath_reaction_latency_seconds"   // histogram: ESTABLISHED → extra subflow established
	SteeringSwitches = "gigapath_steering_switches_total"    // counter: backup flag changes made for steering
	Resyncs          = "gigapath_resyncs_total"              // counter{reason}: full reconciliations
	NetEvents        = "gigapath_interface_events_total"     // counter{type}: rtnetlink events received
	ReconcileSeconds = "gigapath_reconcile_duration_seconds" // histogram: duration of a full reconciliation
	InterfaceUp      = "gigapath_interface_up"               // gauge{interface,role}: 1 while a policy interface is up with an address
	InterfaceHealthy = "gigapath_interface_healthy"          // gauge{interface,role}: 1 healthy, 0 unhealthy (sampled under handover and priority steering)
	SubflowFailures  = "gigapath_subflow_failures_total"     // counter{interface}: subflows the daemon created that did not get established
	HealthSample     = "gigapath_health_sample_seconds"      // histogram{source}: time to read one health sample (off the event loop)
	JoinListeners    = "gigapath_join_listeners"             // gauge: MPTCP listeners the daemon keeps behind announced address:ports
	JoinPortRefused  = "gigapath_join_port_refused_total"    // counter: new connections (not joins) to such a port, closed with a reset
	LoopWait         = "gigapath_loop_wait_seconds"          // histogram{input}: how long an input waited for the event loop
	LoopBusy         = "gigapath_loop_busy_seconds"          // histogram{input}: how long the event loop spent on one input (nothing else is served meanwhile)
	LoopCPU          = "gigapath_loop_cpu_seconds"           // histogram{input}: the CPU time of the event loop's thread on one periodic input (LoopCPUInputs)
	LoopPreempted    = "gigapath_loop_preemptions_total"     // counter{input}: times the kernel preempted the event loop's thread during a periodic input
	CreateSeconds    = "gigapath_subflow_create_seconds"     // histogram{stage}: a SUBFLOW_CREATE queued for the pool (queue), the request itself (request), and a new connection's request sent by the event reader (early)
)

// LoopInputs are the input label values of LoopWait and LoopBusy: what the
// event loop serves.
var LoopInputs = []string{"pm_events", "create_failure", "interface", "health", "tick", "resync", "reload", "status"}

// LoopCPUInputs are the inputs whose CPU time LoopCPU measures: the
// periodic ones and a reload's, whose work grows with the connections.
// Against LoopBusy's wall clock, the rest of an input's time is time the
// loop's thread was off the CPU: preempted (LoopPreempted) or blocked.
var LoopCPUInputs = []string{"health", "tick", "resync", "reload"}

// PMCommands are the command label values of Commands and CommandErrors:
// the path-manager commands the daemon sends.
var PMCommands = []string{"subflow_create", "subflow_destroy", "subflow_set_backup", "announce", "remove", "add_addr", "del_addr", "set_limits"}

// Metrics is the set the controller updates. The zero value is not usable:
// build it with New.
type Metrics struct {
	Registry *prometheus.Registry

	Connections      prometheus.Gauge
	Subflows         *prometheus.GaugeVec
	Events           *prometheus.CounterVec
	Commands         *prometheus.CounterVec
	CommandErrors    *prometheus.CounterVec
	ReactionLatency  prometheus.Histogram
	SteeringSwitches prometheus.Counter
	Resyncs          *prometheus.CounterVec
	NetEvents        *prometheus.CounterVec
	ReconcileSeconds prometheus.Histogram
	InterfaceUp      *prometheus.GaugeVec
	InterfaceHealthy *prometheus.GaugeVec
	SubflowFailures  *prometheus.CounterVec
	// HealthSampleSeconds is labelled by source: telemetry (the sockops
	// map) or sock_diag.
	HealthSampleSeconds *prometheus.HistogramVec
	JoinListeners       prometheus.Gauge
	JoinPortRefused     prometheus.Counter
	// LoopWait and LoopBusy are labelled by input (LoopInputs);
	// CreateSeconds by stage (queue, request, early).
	LoopWait      *prometheus.HistogramVec
	LoopBusy      *prometheus.HistogramVec
	LoopCPU       *prometheus.HistogramVec
	LoopPreempted *prometheus.CounterVec
	CreateSeconds *prometheus.HistogramVec
}

// latencyBuckets: 10 µs to 0.33 s, doubling.
var latencyBuckets = prometheus.ExponentialBuckets(0.00001, 2, 16)

// New registers the daemon's metrics (and the Go and process collectors) on
// a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry:    prometheus.NewRegistry(),
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: Connections, Help: "Live MPTCP connections tracked by the controller."}),
		Subflows: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: Subflows, Help: "Subflows of tracked connections per interface and role."},
			[]string{"interface", "role"}),
		Events:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: Events, Help: "Path-manager events received, by type."}, []string{"type"}),
		Commands:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: Commands, Help: "Path-manager commands sent, by command."}, []string{"command"}),
		CommandErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: CommandErrors, Help: "Path-manager commands refused by the kernel, by command."}, []string{"command"}),
		ReactionLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: ReactionLatency,
			Help:    "Time from a connection's ESTABLISHED event to the established event of the extra subflow the controller created.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		SteeringSwitches: prometheus.NewCounter(prometheus.CounterOpts{Name: SteeringSwitches, Help: "Subflow backup flag changes (MP_PRIO) made by steering."}),
		Resyncs:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: Resyncs, Help: "Full reconciliations from the kernel's inventory, by reason."}, []string{"reason"}),
		NetEvents:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: NetEvents, Help: "Interface, address and route events, by type."}, []string{"type"}),
		ReconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: ReconcileSeconds, Help: "Duration of full reconciliations.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		InterfaceUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: InterfaceUp,
			Help: "1 while a policy interface is up and has an address (subflows can use it), else 0."}, []string{"interface", "role"}),
		InterfaceHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: InterfaceHealthy,
			Help: "1 while a policy interface is healthy, 0 while unhealthy (handover and priority steering sample health; otherwise always 1)."},
			[]string{"interface", "role"}),
		SubflowFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: SubflowFailures,
			Help: "Subflows the daemon created that did not get established (refused, or closed before established), by interface."}, []string{"interface"}),
		HealthSampleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: HealthSample,
			Help:    "Time to read one health sample of every subflow, by source (telemetry: the sockops map; sock_diag: a socket dump).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"source"}),
		JoinListeners: prometheus.NewGauge(prometheus.GaugeOpts{Name: JoinListeners,
			Help: "MPTCP listeners the daemon keeps on announced address:ports (announce[].port) for the peers' joins."}),
		JoinPortRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: JoinPortRefused,
			Help: "New connections (not joins) to a port the daemon listens on for joins only, closed with a reset."}),
		LoopWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: LoopWait,
			Help: "Time an input (a batch of path-manager events, a tick, a health sample, ...) waited before the event loop took it.", Buckets: latencyBuckets}, []string{"input"}),
		LoopBusy: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: LoopBusy,
			Help: "Time the event loop spent on one input; no other input is served meanwhile.", Buckets: latencyBuckets}, []string{"input"}),
		LoopCPU: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: LoopCPU,
			Help: "CPU time of the event loop's thread on one periodic input (health, tick, resync, reload); the rest of gigapath_loop_busy_seconds is time the thread was off the CPU: preempted (gigapath_loop_preemptions_total) or blocked.", Buckets: latencyBuckets}, []string{"input"}),
		LoopPreempted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: LoopPreempted,
			Help: "Times the kernel preempted the event loop's thread (involuntary context switches) during a periodic input (health, tick, resync, reload): each is time the loop waited for a CPU."}, []string{"input"}),
		CreateSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: CreateSeconds,
			Help: "SUBFLOW_CREATE requests: time queued for the pool (stage queue), the request, in which the kernel connects the subflow (stage request), and a new connection's request sent by the event reader before the loop took the connection in (stage early).", Buckets: latencyBuckets}, []string{"stage"}),
	}
	// Every command's series exist from the start, at 0, so a rate of
	// refusals is 0 rather than missing until the first one.
	for _, cmd := range PMCommands {
		m.Commands.WithLabelValues(cmd)
		m.CommandErrors.WithLabelValues(cmd)
	}
	for _, in := range LoopInputs {
		m.LoopWait.WithLabelValues(in)
		m.LoopBusy.WithLabelValues(in)
	}
	for _, in := range LoopCPUInputs {
		m.LoopCPU.WithLabelValues(in)
		m.LoopPreempted.WithLabelValues(in)
	}
	m.Registry.MustRegister(m.Connections, m.Subflows, m.Events, m.Commands, m.CommandErrors,
		m.ReactionLatency, m.SteeringSwitches, m.Resyncs, m.NetEvents, m.ReconcileSeconds,
		m.InterfaceUp, m.InterfaceHealthy, m.SubflowFailures, m.HealthSampleSeconds, m.JoinListeners, m.JoinPortRefused, m.LoopWait, m.LoopBusy, m.LoopCPU, m.LoopPreempted, m.CreateSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// Server serves /metrics. Make it with Listen, run it with Serve.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen opens addr for /metrics, so that a bad address fails at once: the
// error names the address.
func (m *Metrics) Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	return &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Addr is the address listened on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until ctx ends, then shuts the server down (requests in
// flight get a second) and returns nil; otherwise the error that stopped it.
func (s *Server) Serve(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(s.ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.srv.Shutdown(sctx)
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
