package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
)

// Metric names of the per-path socket policy: per subflow from the sockops
// program's telemetry map, per local address from the send-share
// tracepoint (docs/ebpf.md).
const (
	SubflowSRTT         = "gigapath_subflow_srtt_seconds"                   // gauge{local,remote}
	SubflowRetransmits  = "gigapath_subflow_retransmits_total"              // counter{local,remote}
	SubflowDeliveryRate = "gigapath_subflow_delivery_rate_bytes_per_second" // gauge{local,remote}
	SubflowBytesAcked   = "gigapath_subflow_bytes_acked_total"              // counter{local,remote}
	PathSends           = "gigapath_path_sends_total"                       // counter{local}
	PathSentBytes       = "gigapath_path_sent_bytes_total"                  // counter{local}
	PathSendShare       = "gigapath_path_send_share_ratio"                  // gauge{local}
	TelemetrySubflows   = "gigapath_telemetry_subflows"                     // gauge: subflows in the telemetry map
)

// SubflowSeriesLimit is the most subflows exported one series each: with
// more (a proxy's tens of thousands of connections), the per-subflow
// series are left out and only TelemetrySubflows and the per-path series
// remain. 100,000 subflows as four series each made a scrape cost more
// than a second of CPU (sorting and formatting 400,000 series), and no
// dashboard reads them at that count; the daemon's health sampling reads
// the map itself and is not affected.
const SubflowSeriesLimit = 1024

var (
	descSRTT = prometheus.NewDesc(SubflowSRTT,
		"Smoothed round-trip time of a TCP subflow, from the sockops program.",
		[]string{"local", "remote"}, nil)
	descRetrans = prometheus.NewDesc(SubflowRetransmits,
		"Segments retransmitted on a TCP subflow.",
		[]string{"local", "remote"}, nil)
	descRate = prometheus.NewDesc(SubflowDeliveryRate,
		"Latest delivery rate sample of a TCP subflow.",
		[]string{"local", "remote"}, nil)
	descAcked = prometheus.NewDesc(SubflowBytesAcked,
		"Bytes acknowledged by the peer on a TCP subflow.",
		[]string{"local", "remote"}, nil)
	descSent = prometheus.NewDesc(PathSends,
		"Decisions of the kernel's default MPTCP scheduler that picked a subflow from this local address.",
		[]string{"local"}, nil)
	descBytes = prometheus.NewDesc(PathSentBytes,
		"Bytes MPTCP subflows from this local address sent and the peer acknowledged since load.",
		[]string{"local"}, nil)
	descEntries = prometheus.NewDesc(TelemetrySubflows,
		"Subflows in the sockops program's telemetry map; per-subflow series are exported only up to 1024 of them.",
		nil, nil)
	descShare = prometheus.NewDesc(PathSendShare,
		"Share of the bytes MPTCP subflows sent, per local address, since load (share of sends per path).",
		[]string{"local"}, nil)
)

// PathPolicySource is what PathPolicyCollector reads on each scrape; a
// loaded *pathpolicy.PathPolicy is one.
type PathPolicySource interface {
	Telemetry() ([]pathpolicy.SubflowStats, error)
	SendShares() ([]pathpolicy.PathShare, error)
}

// PathPolicyCollector exports a path policy's subflow telemetry and send
// shares as Prometheus metrics, reading its maps on each scrape. The
// collector lives here, not in ebpf/pathpolicy, so that the library does
// not depend on Prometheus (docs/architecture.md, "Rules").
type PathPolicyCollector struct{ src PathPolicySource }

// NewPathPolicyCollector returns a collector for src; register it on the
// daemon's registry while src is loaded.
func NewPathPolicyCollector(src PathPolicySource) *PathPolicyCollector {
	return &PathPolicyCollector{src: src}
}

// Describe implements prometheus.Collector.
func (c *PathPolicyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSRTT, descRetrans, descRate, descAcked, descEntries, descSent, descBytes, descShare} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A map that cannot be read
// becomes an invalid metric (the scrape reports the error); send shares
// loaded without (pathpolicy.ErrNoSendShare) are left out; per-subflow
// series only up to SubflowSeriesLimit subflows.
func (c *PathPolicyCollector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.src.Telemetry()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descSRTT, err)
	} else {
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(len(stats)))
	}
	if len(stats) > SubflowSeriesLimit {
		stats = nil
	}
	for _, s := range stats {
		l, r := s.Local.String(), s.Remote.String()
		ch <- prometheus.MustNewConstMetric(descSRTT, prometheus.GaugeValue, s.SRTT.Seconds(), l, r)
		ch <- prometheus.MustNewConstMetric(descRetrans, prometheus.CounterValue, float64(s.Retransmits), l, r)
		ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, float64(s.DeliveryRate), l, r)
		ch <- prometheus.MustNewConstMetric(descAcked, prometheus.CounterValue, float64(s.BytesAcked), l, r)
	}
	counts, err := c.src.SendShares()
	if errors.Is(err, pathpolicy.ErrNoSendShare) {
		return
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descShare, err)
		return
	}
	shares := pathpolicy.Shares(counts)
	for _, s := range counts {
		l := s.Local.String()
		ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(s.Chosen), l)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.Bytes), l)
		ch <- prometheus.MustNewConstMetric(descShare, prometheus.GaugeValue, shares[s.Local], l)
	}
}
