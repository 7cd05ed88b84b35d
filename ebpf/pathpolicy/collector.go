package pathpolicy

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descSRTT = prometheus.NewDesc("gigapath_subflow_srtt_seconds",
		"Smoothed round-trip time of a TCP subflow, from the sockops program.",
		[]string{"local", "remote"}, nil)
	descRetrans = prometheus.NewDesc("gigapath_subflow_retransmits_total",
		"Segments retransmitted on a TCP subflow.",
		[]string{"local", "remote"}, nil)
	descRate = prometheus.NewDesc("gigapath_subflow_delivery_rate_bytes_per_second",
		"Latest delivery rate sample of a TCP subflow.",
		[]string{"local", "remote"}, nil)
	descAcked = prometheus.NewDesc("gigapath_subflow_bytes_acked_total",
		"Bytes acknowledged by the peer on a TCP subflow.",
		[]string{"local", "remote"}, nil)
	descSent = prometheus.NewDesc("gigapath_path_sends_total",
		"Decisions of the kernel's default MPTCP scheduler that picked a subflow from this local address.",
		[]string{"local"}, nil)
	descBytes = prometheus.NewDesc("gigapath_path_sent_bytes_total",
		"Bytes MPTCP subflows from this local address sent and the peer acknowledged since load.",
		[]string{"local"}, nil)
	descShare = prometheus.NewDesc("gigapath_path_send_share_ratio",
		"Share of the bytes MPTCP subflows sent, per local address, since load (share of sends per path).",
		[]string{"local"}, nil)
)

// Collector exports Telemetry and SendShares as Prometheus metrics.
type Collector struct{ p *PathPolicy }

// Collector returns a prometheus.Collector reading p's maps on each scrape.
func (p *PathPolicy) Collector() *Collector { return &Collector{p: p} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSRTT, descRetrans, descRate, descAcked, descSent, descBytes, descShare} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.p.Telemetry()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descSRTT, err)
	}
	for _, s := range stats {
		l, r := s.Local.String(), s.Remote.String()
		ch <- prometheus.MustNewConstMetric(descSRTT, prometheus.GaugeValue, s.SRTT.Seconds(), l, r)
		ch <- prometheus.MustNewConstMetric(descRetrans, prometheus.CounterValue, float64(s.Retransmits), l, r)
		ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, float64(s.DeliveryRate), l, r)
		ch <- prometheus.MustNewConstMetric(descAcked, prometheus.CounterValue, float64(s.BytesAcked), l, r)
	}
	counts, err := c.p.SendShares()
	if err == ErrNoSendShare {
		return
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descShare, err)
		return
	}
	shares := Shares(counts)
	for _, s := range counts {
		l := s.Local.String()
		ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(s.Chosen), l)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.Bytes), l)
		ch <- prometheus.MustNewConstMetric(descShare, prometheus.GaugeValue, shares[s.Local], l)
	}
}
