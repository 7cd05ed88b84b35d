package metrics

import (
	"errors"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/reuse"
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
	TelemetrySRTT       = "gigapath_telemetry_srtt_seconds"                 // histogram{interface,role}: the map's subflows by srtt, now
)

// DefaultSubflowSeries is how many subflows get series of their own
// unless the policy says otherwise (metrics.subflow_series): with more (a
// proxy's tens of thousands of connections), the per-subflow series are
// left out all at once and the per-interface aggregate (TelemetrySRTT),
// TelemetrySubflows and the per-path series remain. 100,000 subflows as
// four series each made a scrape cost more than a second of CPU (sorting
// and formatting 400,000 series; docs/benchmarks.md); the daemon's health
// sampling reads the map itself and is not affected.
const DefaultSubflowSeries = 1024

// srttBuckets are the upper bounds of TelemetrySRTT's buckets (+Inf
// besides): 100 µs to 3.3 s, doubling, from a veth's RTT to a satellite
// link's.
const srttBucketCount = 16

var srttBuckets = prometheus.ExponentialBuckets((100 * time.Microsecond).Seconds(), 2, srttBucketCount)

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
		"Subflows in the sockops program's telemetry map; per-subflow series are exported only while there are at most metrics.subflow_series (policy) of them.",
		nil, nil)
	descTelSRTT = prometheus.NewDesc(TelemetrySRTT,
		"Subflows in the sockops program's telemetry map by smoothed round-trip time, per interface of their local address, at the scrape (a snapshot, not a running count: read the buckets without rate()).",
		[]string{"interface", "role"}, nil)
	descShare = prometheus.NewDesc(PathSendShare,
		"Share of the bytes MPTCP subflows sent, per local address, since load (share of sends per path).",
		[]string{"local"}, nil)
)

// PathPolicySource is what PathPolicyCollector reads on each scrape; a
// loaded *pathpolicy.PathPolicy is one.
type PathPolicySource interface {
	// AppendTelemetry reads the subflows' statistics into dst[:0].
	AppendTelemetry(dst []pathpolicy.SubflowStats) ([]pathpolicy.SubflowStats, error)
	SendShares() ([]pathpolicy.PathShare, error)
}

// PathLabels name the interface a local address is on, as the
// TelemetrySRTT series label it: the interface's name and its policy role
// ("none" for an interface the policy does not list).
type PathLabels struct{ Interface, Role string }

// otherPath labels subflows from an address the daemon does not know (as
// the daemon's gigapath_subflows gauge does).
var otherPath = PathLabels{"other", "none"}

// TelemetryView is what a running daemon tells its path-policy collectors:
// how many subflows may get series of their own, and which interface each
// local address is on. The event loop sets it, scrapes read it: it is safe
// for concurrent use. The zero value is not usable: make it with
// NewTelemetryView.
type TelemetryView struct {
	subflowSeries atomic.Int64
	paths         atomic.Pointer[map[netip.Addr]PathLabels]
}

// NewTelemetryView returns a view with DefaultSubflowSeries and no
// addresses (every subflow is "other").
func NewTelemetryView() *TelemetryView {
	v := &TelemetryView{}
	v.subflowSeries.Store(DefaultSubflowSeries)
	v.paths.Store(&map[netip.Addr]PathLabels{})
	return v
}

// SetSubflowSeries sets how many subflows the telemetry map may hold for
// the per-subflow series to be exported (0: never).
func (v *TelemetryView) SetSubflowSeries(n int) { v.subflowSeries.Store(int64(n)) }

// SubflowSeries is what SetSubflowSeries set last.
func (v *TelemetryView) SubflowSeries() int { return int(v.subflowSeries.Load()) }

// SetPaths replaces the local addresses' interfaces; the caller must not
// change m afterwards.
func (v *TelemetryView) SetPaths(m map[netip.Addr]PathLabels) { v.paths.Store(&m) }

// PathOf is the interface of local address a.
func (v *TelemetryView) PathOf(a netip.Addr) PathLabels {
	if l, ok := (*v.paths.Load())[a.Unmap()]; ok {
		return l
	}
	return otherPath
}

// PathPolicyCollector exports a path policy's subflow telemetry and send
// shares as Prometheus metrics, reading its maps on each scrape. The
// collector lives here, not in ebpf/pathpolicy, so that the library does
// not depend on Prometheus (docs/architecture.md, "Rules").
type PathPolicyCollector struct {
	src  PathPolicySource
	view *TelemetryView
	// noHistogram leaves TelemetrySRTT out: the scrape benchmark's
	// baseline (the collector before it had the histogram).
	noHistogram bool
	// mu serializes scrapes over buf, the last read of the telemetry map,
	// which the next one reuses.
	mu  sync.Mutex
	buf []pathpolicy.SubflowStats
}

// NewPathPolicyCollector returns a collector for src that follows view
// (nil: a view of its own, as NewTelemetryView); register it on the
// daemon's registry while src is loaded.
func NewPathPolicyCollector(src PathPolicySource, view *TelemetryView) *PathPolicyCollector {
	if view == nil {
		view = NewTelemetryView()
	}
	return &PathPolicyCollector{src: src, view: view}
}

// Describe implements prometheus.Collector.
func (c *PathPolicyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSRTT, descRetrans, descRate, descAcked, descEntries, descTelSRTT, descSent, descBytes, descShare} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A map that cannot be read
// becomes an invalid metric (the scrape reports the error); send shares
// loaded without (pathpolicy.ErrNoSendShare) are left out; the srtt
// histogram per interface always, the per-subflow series only while there
// are at most the view's SubflowSeries subflows.
func (c *PathPolicyCollector) Collect(ch chan<- prometheus.Metric) {
	// One scrape at a time reads into the buffer the last one left.
	c.mu.Lock()
	defer c.mu.Unlock()
	stats, err := c.src.AppendTelemetry(c.buf)
	c.buf = reuse.Keep(stats)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descSRTT, err)
	} else {
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(len(stats)))
		if !c.noHistogram {
			c.collectSRTT(ch, stats)
		}
	}
	if len(stats) > c.view.SubflowSeries() {
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

// srttHist counts one interface's subflows per bucket of srttBuckets (the
// last count is above every bound).
type srttHist struct {
	counts [srttBucketCount + 1]uint64
	sum    time.Duration // 100,000 subflows of 3 s: 3e14 of 9e18 ns
}

// collectSRTT sends one TelemetrySRTT histogram per interface that has
// subflows in stats: O(subflows) to count, O(interfaces) series. The
// subflows are counted per local address (a few, found by a linear
// search, the last one first), which are then looked up once each.
func (c *PathPolicyCollector) collectSRTT(ch chan<- prometheus.Metric, stats []pathpolicy.SubflowStats) {
	type addrHist struct {
		addr netip.Addr
		h    srttHist
	}
	var (
		addrs []addrHist
		last  = -1
	)
	for i := range stats {
		a := stats[i].Local.Addr()
		if last < 0 || addrs[last].addr != a {
			last = -1
			for j := range addrs {
				if addrs[j].addr == a {
					last = j
					break
				}
			}
			if last < 0 {
				addrs = append(addrs, addrHist{addr: a})
				last = len(addrs) - 1
			}
		}
		h := &addrs[last].h
		h.counts[srttBucket(stats[i].SRTT)]++
		h.sum += stats[i].SRTT
	}
	byPath := map[PathLabels]*srttHist{}
	for i := range addrs {
		l := c.view.PathOf(addrs[i].addr)
		t := byPath[l]
		if t == nil {
			byPath[l] = &addrs[i].h
			continue
		}
		for b := range t.counts {
			t.counts[b] += addrs[i].h.counts[b]
		}
		t.sum += addrs[i].h.sum
	}
	for l, h := range byPath {
		buckets := make(map[float64]uint64, len(srttBuckets))
		var n uint64
		for i, ub := range srttBuckets {
			n += h.counts[i]
			buckets[ub] = n
		}
		n += h.counts[srttBucketCount]
		ch <- prometheus.MustNewConstHistogram(descTelSRTT, n, h.sum.Seconds(), buckets, l.Interface, l.Role)
	}
}

// srttBucket is the index in srttBuckets of the first bound at or above d
// (srttBucketCount: above every bound), computed on the integer duration:
// the bounds are 100 µs × 2^i.
func srttBucket(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return min(bits.Len64(uint64(d-1)/uint64(100*time.Microsecond)), srttBucketCount)
}
