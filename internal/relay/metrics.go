package relay

import "github.com/prometheus/client_golang/prometheus"

// Metric names, shared with tests and docs/relay.md.
const (
	MetricConnections     = "gigapath_relay_connections_total"
	MetricActive          = "gigapath_relay_connections_active"
	MetricBytes           = "gigapath_relay_bytes_total"
	MetricReplies         = "gigapath_relay_replies_total"
	MetricRejected        = "gigapath_relay_rejected_total"
	MetricHandshake       = "gigapath_relay_handshake_seconds"
	MetricHandshakeErrors = "gigapath_relay_handshake_errors_total"
	MetricSubflows        = "gigapath_relay_subflows"
	MetricUDPDatagrams    = "gigapath_relay_udp_datagrams_total"
	MetricRenewals        = "gigapath_relay_listener_renewals_total"
)

type metrics struct {
	conns           *prometheus.CounterVec
	active          *prometheus.GaugeVec
	bytes           *prometheus.CounterVec
	replies         *prometheus.CounterVec
	rejected        *prometheus.CounterVec
	handshake       prometheus.Histogram
	handshakeErrors prometheus.Counter
	subflows        *prometheus.HistogramVec
	udp             *prometheus.CounterVec
	renewals        *prometheus.CounterVec
	all             []prometheus.Collector
}

func newMetrics() *metrics {
	m := &metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricConnections,
			Help: "Accepted client connections by transport (mptcp, or tcp for plain TCP clients and MPTCP fallback)."}, []string{"transport"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricActive,
			Help: "Client connections open now, by transport."}, []string{"transport"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricBytes,
			Help: "Bytes forwarded: up = client to destination, down = destination to client."}, []string{"direction"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricReplies,
			Help: "SOCKS replies sent, by reply code."}, []string{"code"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRejected,
			Help: "Connections closed before a request was served, by reason."}, []string{"reason"}),
		handshake: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricHandshake,
			Help: "Accept to success reply (greeting, auth, request, resolve, dial).", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		handshakeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricHandshakeErrors,
			Help: "Connections whose greeting, authentication or request failed."}),
		subflows: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricSubflows,
			Help:    "Subflows of an MPTCP connection sampled when its first direction ends, before the relay closes anything (MPTCP_INFO mptcpi_subflows + the initial one), by side.",
			Buckets: []float64{1, 2, 3, 4, 5, 6, 7, 8}}, []string{"side"}),
		udp: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricUDPDatagrams,
			Help: "UDP ASSOCIATE datagrams relayed (up/down) or dropped."}, []string{"direction"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRenewals,
			Help: "MPTCP listeners re-created because the namespace's packet scheduler changed, by the scheduler new connections get."}, []string{"scheduler"}),
	}
	m.all = []prometheus.Collector{m.conns, m.active, m.bytes, m.replies, m.rejected, m.handshake, m.handshakeErrors, m.subflows, m.udp, m.renewals}
	return m
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.all {
		c.Describe(ch)
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.all {
		c.Collect(ch)
	}
}
