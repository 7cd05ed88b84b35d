package metrics

import (
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
)

// fakePolicy stands in for a loaded *pathpolicy.PathPolicy: the maps'
// contents are the program's business (ebpf/pathpolicy's integration
// tests); here only their translation into metrics is checked.
type fakePolicy struct {
	stats     []pathpolicy.SubflowStats
	statsErr  error
	shares    []pathpolicy.PathShare
	sharesErr error
}

func (f fakePolicy) AppendTelemetry(dst []pathpolicy.SubflowStats) ([]pathpolicy.SubflowStats, error) {
	return append(dst[:0], f.stats...), f.statsErr
}
func (f fakePolicy) SendShares() ([]pathpolicy.PathShare, error) { return f.shares, f.sharesErr }

var _ PathPolicySource = (*pathpolicy.PathPolicy)(nil)

// gather registers c on a fresh registry and returns each sample as
// "name{label=value,...}" -> value; a histogram as its _bucket (with an
// le label last), _sum and _count samples, as the text format has them.
func gather(t testing.TB, c prometheus.Collector) (map[string]float64, error) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			name := func(suffix string, more ...string) string {
				return mf.GetName() + suffix + "{" + strings.Join(append(slices.Clone(ls), more...), ",") + "}"
			}
			h := m.GetHistogram()
			switch {
			case h != nil:
				for _, b := range h.GetBucket() {
					out[name("_bucket", "le="+strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))] = float64(b.GetCumulativeCount())
				}
				out[name("_bucket", "le=+Inf")] = float64(h.GetSampleCount())
				out[name("_sum")] = h.GetSampleSum()
				out[name("_count")] = float64(h.GetSampleCount())
			case m.GetGauge() != nil:
				out[name("")] = m.GetGauge().GetValue()
			default:
				out[name("")] = m.GetCounter().GetValue()
			}
		}
	}
	return out, err
}

// family is the metric name of a sample key of gather.
func family(key string) string {
	name, _, _ := strings.Cut(key, "{")
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		name = strings.TrimSuffix(name, suf)
	}
	return name
}

// check compares the samples of got whose family is among families with
// want, which must list them all.
func check(t *testing.T, got, want map[string]float64, families ...string) {
	t.Helper()
	n := 0
	for k, g := range got {
		if !slices.Contains(families, family(k)) {
			continue
		}
		n++
		if v, ok := want[k]; !ok || math.Abs(g-v) > 1e-9 {
			t.Errorf("%s = %v, want %v (listed: %v)", k, g, v, ok)
		}
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}
	if n != len(want) {
		t.Errorf("%d samples of %v, want %d", n, families, len(want))
	}
}

func TestPathPolicyCollector(t *testing.T) {
	wifi, lte := netip.MustParseAddr("10.8.1.1"), netip.MustParseAddr("10.8.2.1")
	peer := netip.MustParseAddrPort("10.8.1.2:9000")
	src := fakePolicy{
		stats: []pathpolicy.SubflowStats{
			{Local: netip.AddrPortFrom(wifi, 40000), Remote: peer, SRTT: 25 * time.Millisecond, Retransmits: 3, DeliveryRate: 12_500_000, BytesAcked: 1 << 20},
			{Local: netip.AddrPortFrom(lte, 40001), Remote: peer, SRTT: 60 * time.Millisecond},
		},
		shares: []pathpolicy.PathShare{
			{Local: wifi, Chosen: 30, Bytes: 3000},
			{Local: lte, Chosen: 10, Bytes: 1000},
		},
	}
	view := NewTelemetryView()
	view.SetPaths(map[netip.Addr]PathLabels{wifi: {"wifi0", "wifi"}, lte: {"lte0", "lte"}})
	got, err := gather(t, NewPathPolicyCollector(src, view))
	if err != nil {
		t.Fatal(err)
	}
	w, r := "local=10.8.1.1:40000,remote=10.8.1.2:9000", "local=10.8.2.1:40001,remote=10.8.1.2:9000"
	want := map[string]float64{
		SubflowSRTT + "{" + w + "}":         0.025,
		SubflowRetransmits + "{" + w + "}":  3,
		SubflowDeliveryRate + "{" + w + "}": 12_500_000,
		SubflowBytesAcked + "{" + w + "}":   1 << 20,
		SubflowSRTT + "{" + r + "}":         0.060,
		SubflowRetransmits + "{" + r + "}":  0,
		SubflowDeliveryRate + "{" + r + "}": 0,
		SubflowBytesAcked + "{" + r + "}":   0,
		PathSends + "{local=10.8.1.1}":      30,
		PathSentBytes + "{local=10.8.1.1}":  3000,
		PathSendShare + "{local=10.8.1.1}":  0.75,
		PathSends + "{local=10.8.2.1}":      10,
		PathSentBytes + "{local=10.8.2.1}":  1000,
		PathSendShare + "{local=10.8.2.1}":  0.25,
		TelemetrySubflows + "{}":            2,
	}
	var others []string
	for k := range want {
		others = append(others, family(k))
	}
	check(t, got, want, others...)
	// The histogram per interface: one subflow each, in the buckets from
	// 25.6 ms (wifi0) and 102.4 ms (lte0) up.
	for _, c := range []struct {
		labels string
		srtt   float64
	}{{"interface=wifi0,role=wifi", 0.025}, {"interface=lte0,role=lte", 0.060}} {
		if got[TelemetrySRTT+"_count{"+c.labels+"}"] != 1 || got[TelemetrySRTT+"_sum{"+c.labels+"}"] != c.srtt {
			t.Errorf("%s{%s}: count %v sum %v, want 1 and %v", TelemetrySRTT, c.labels,
				got[TelemetrySRTT+"_count{"+c.labels+"}"], got[TelemetrySRTT+"_sum{"+c.labels+"}"], c.srtt)
		}
	}
	if n := len(got) - len(want); n != 2*(srttBucketCount+3) {
		t.Errorf("%d samples besides the listed ones, want two histograms' %d", n, 2*(srttBucketCount+3))
	}
}

// The srtt histogram counts every subflow of the map in the bucket of its
// srtt (an upper bound is inclusive, as Prometheus's le), per interface
// of its local address: the addresses of one interface (and the
// IPv4-mapped form of one) add up, an address of no interface the view
// knows is "other".
func TestTelemetrySRTTHistogram(t *testing.T) {
	wifi4, wifi6, lte := netip.MustParseAddr("10.8.1.1"), netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("10.8.2.1")
	peer := netip.MustParseAddrPort("10.8.9.9:443")
	sub := func(local string, srtt time.Duration) pathpolicy.SubflowStats {
		return pathpolicy.SubflowStats{Local: netip.MustParseAddrPort(local), Remote: peer, SRTT: srtt}
	}
	src := fakePolicy{stats: []pathpolicy.SubflowStats{
		sub("10.8.1.1:1", 100*time.Microsecond),         // on the first bound: le=0.0001
		sub("[2001:db8:1::1]:2", 150*time.Microsecond),  // le=0.0002
		sub("[::ffff:10.8.1.1]:3", 25*time.Millisecond), // le=0.0256
		sub("10.8.2.1:4", 5*time.Second),                // above every bound: +Inf only
		sub("10.8.2.1:5", 0),                            // no RTT sample yet: le=0.0001
		sub("192.0.2.7:6", 3*time.Millisecond),          // le=0.0032
	}, sharesErr: pathpolicy.ErrNoSendShare}
	view := NewTelemetryView()
	view.SetPaths(map[netip.Addr]PathLabels{wifi4: {"wifi0", "wifi"}, wifi6: {"wifi0", "wifi"}, lte: {"lte0", "lte"}})
	view.SetSubflowSeries(0)
	got, err := gather(t, NewPathPolicyCollector(src, view))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{}
	hist := func(labels string, sum float64, at map[float64]float64) {
		n := 0.0
		for _, ub := range srttBuckets {
			n += at[ub]
			want[TelemetrySRTT+"_bucket{"+labels+",le="+strconv.FormatFloat(ub, 'g', -1, 64)+"}"] = n
		}
		n += at[math.Inf(1)]
		want[TelemetrySRTT+"_bucket{"+labels+",le=+Inf}"] = n
		want[TelemetrySRTT+"_count{"+labels+"}"] = n
		want[TelemetrySRTT+"_sum{"+labels+"}"] = sum
	}
	hist("interface=wifi0,role=wifi", 0.0001+0.00015+0.025, map[float64]float64{0.0001: 1, 0.0002: 1, 0.0256: 1})
	hist("interface=lte0,role=lte", 5, map[float64]float64{0.0001: 1, math.Inf(1): 1})
	hist("interface=other,role=none", 0.003, map[float64]float64{0.0032: 1})
	check(t, got, want, TelemetrySRTT)
	if got[TelemetrySubflows+"{}"] != 6 || got[SubflowSRTT+"{local=10.8.1.1:1,remote=10.8.9.9:443}"] != 0 || len(got) != len(want)+1 {
		t.Errorf("subflow_series 0: %d samples, want the histograms' %d and %s only", len(got), len(want), TelemetrySubflows)
	}
}

// srttBucket, on the integer duration, picks the bucket Prometheus's le
// does on the float bounds: the first bound at or above the srtt in
// seconds, on both sides of every bound.
func TestSRTTBucket(t *testing.T) {
	want := func(d time.Duration) int {
		for i, ub := range srttBuckets {
			if d.Seconds() <= ub {
				return i
			}
		}
		return srttBucketCount
	}
	ds := []time.Duration{-1, 0, 1, time.Hour}
	for _, ub := range srttBuckets {
		d := time.Duration(math.Round(ub * 1e9))
		ds = append(ds, d-1, d, d+1)
	}
	for _, d := range ds {
		if got, w := srttBucket(d), want(d); got != w {
			t.Errorf("srttBucket(%v) = %d, want %d", d, got, w)
		}
	}
}

// Without send-share counters (loaded with NoSendShare) the path metrics
// are left out; a map that cannot be read fails the scrape, naming why.
func TestPathPolicyCollectorPartial(t *testing.T) {
	got, err := gather(t, NewPathPolicyCollector(fakePolicy{sharesErr: pathpolicy.ErrNoSendShare}, nil))
	if err != nil || len(got) != 1 || got[TelemetrySubflows+"{}"] != 0 {
		t.Errorf("no telemetry, no send share: %v, %v; want 0 subflows, nothing else and no error", got, err)
	}
	_, err = gather(t, NewPathPolicyCollector(fakePolicy{statsErr: errors.New("read telemetry: boom"), sharesErr: pathpolicy.ErrNoSendShare}, nil))
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("telemetry error: scrape error %v, want it to carry the map's error", err)
	}
	_, err = gather(t, NewPathPolicyCollector(fakePolicy{sharesErr: errors.New("read send-share counters: bust")}, nil))
	if err == nil || !strings.Contains(err.Error(), "bust") {
		t.Errorf("send-share error: scrape error %v, want it to carry the map's error", err)
	}
}

// manySubflows is a source with n subflows on lte (10.8.2.1) to a peer
// (10.8.1.2, ports from 9000), srtt 1-100 ms.
func manySubflows(n int) fakePolicy {
	peer := netip.MustParseAddr("10.8.1.2")
	lte := netip.MustParseAddr("10.8.2.1")
	var src fakePolicy
	for i := range n {
		src.stats = append(src.stats, pathpolicy.SubflowStats{Local: netip.AddrPortFrom(lte, uint16(10000+i%50000)), Remote: netip.AddrPortFrom(peer, uint16(9000+i/50000)),
			SRTT: time.Duration(1+i%100) * time.Millisecond, Retransmits: uint32(i % 7), DeliveryRate: uint64(i) * 1000, BytesAcked: uint64(i) << 10})
	}
	src.shares = []pathpolicy.PathShare{{Local: lte, Chosen: 1, Bytes: 100}}
	return src
}

// Beyond the view's SubflowSeries subflows (DefaultSubflowSeries unless
// set; 0: none), the per-subflow series are left out all at once (a
// scrape would sort and format four series per subflow); the count, the
// srtt histogram and the per-path series stay. A change of the view
// applies at the next scrape.
func TestPathPolicyCollectorManySubflows(t *testing.T) {
	view := NewTelemetryView()
	view.SetPaths(map[netip.Addr]PathLabels{netip.MustParseAddr("10.8.2.1"): {"lte0", "lte"}})
	for _, c := range []struct{ limit, n int }{
		{DefaultSubflowSeries, DefaultSubflowSeries}, {DefaultSubflowSeries, DefaultSubflowSeries + 1},
		{10, 10}, {10, 11}, {0, 1}, {0, 0},
	} {
		if c.limit != DefaultSubflowSeries {
			view.SetSubflowSeries(c.limit)
		}
		got, err := gather(t, NewPathPolicyCollector(manySubflows(c.n), view))
		if err != nil {
			t.Fatal(err)
		}
		srtt := 0
		for k := range got {
			if strings.HasPrefix(k, SubflowSRTT+"{") {
				srtt++
			}
		}
		want := c.n
		if c.n > c.limit {
			want = 0
		}
		if srtt != want || got[TelemetrySubflows+"{}"] != float64(c.n) || got[PathSendShare+"{local=10.8.2.1}"] != 1 ||
			(got[TelemetrySRTT+"_count{interface=lte0,role=lte}"] != float64(c.n) && c.n > 0) {
			t.Errorf("subflow_series %d, %d subflows: %d srtt series (want %d), %s %v, histogram count %v, send share %v",
				c.limit, c.n, srtt, want, TelemetrySubflows, got[TelemetrySubflows+"{}"],
				got[TelemetrySRTT+"_count{interface=lte0,role=lte}"], got[PathSendShare+"{local=10.8.2.1}"])
		}
	}
}

// BenchmarkScrape times one scrape of the daemon's /metrics as promhttp
// serves it (the registry of New, Go and process collectors included,
// gathered, sorted and written in the text format) with the path-policy
// collector over a telemetry map of 100,000 subflows on two interfaces (a
// proxy's 50,000 connections; the map's contents come from memory, not
// from the kernel). Three daemons:
//   - before: above metrics.subflow_series, without the srtt histogram
//     (the collector before it had one);
//   - histogram: above metrics.subflow_series (the default 1,024), as the
//     daemon scrapes now;
//   - per-subflow: metrics.subflow_series 131072, every subflow's four
//     series and the histogram.
//
// Each op scrapes the two daemons of a sub-benchmark one after the other
// (which goes first alternates), so that their ratio is of the same
// moments of a busy host; reports each one's ns per scrape, their ratio
// and bytes per scrape.
func BenchmarkScrape(b *testing.B) {
	const n = 100_000
	src := manySubflows(n)
	// Two interfaces, as a client's wifi and lte or a proxy's two uplinks.
	wifi := netip.MustParseAddr("10.8.1.1")
	for i := 0; i < n; i += 2 {
		src.stats[i].Local = netip.AddrPortFrom(wifi, src.stats[i].Local.Port())
	}
	src.shares = append(src.shares, pathpolicy.PathShare{Local: wifi, Chosen: 1, Bytes: 100})
	paths := map[netip.Addr]PathLabels{wifi: {"wifi0", "wifi"}, netip.MustParseAddr("10.8.2.1"): {"lte0", "lte"}}
	type daemon struct {
		name string
		h    http.Handler
		size int
	}
	newDaemon := func(name string, series int, noHistogram bool) daemon {
		v := NewTelemetryView()
		v.SetPaths(paths)
		v.SetSubflowSeries(series)
		pc := NewPathPolicyCollector(src, v)
		pc.noHistogram = noHistogram
		m := New()
		m.Registry.MustRegister(pc)
		d := daemon{name: name, h: m.Handler()}
		w := httptest.NewRecorder()
		d.h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
		if w.Code != 200 {
			b.Fatalf("%s: scrape: %d %s", name, w.Code, w.Body)
		}
		d.size = w.Body.Len()
		return d
	}
	before := newDaemon("before", DefaultSubflowSeries, true)
	hist := newDaemon("histogram", DefaultSubflowSeries, false)
	all := newDaemon("per-subflow", 131072, false)
	for _, pair := range [][2]daemon{{before, hist}, {hist, all}} {
		b.Run(pair[0].name+"-vs-"+pair[1].name, func(b *testing.B) {
			var spent [2]time.Duration
			for i := range b.N {
				for k := range 2 {
					j := (i + k) % 2
					t := time.Now()
					pair[j].h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))
					spent[j] += time.Since(t)
				}
			}
			for j, d := range pair {
				b.ReportMetric(float64(spent[j].Nanoseconds())/float64(b.N), d.name+"-ns/scrape")
				b.ReportMetric(float64(d.size), d.name+"-bytes/scrape")
			}
			b.ReportMetric(float64(spent[1])/float64(spent[0]), "ratio")
		})
	}
}

// dstRecorder is a source that records the capacity of the buffer each
// read was given.
type dstRecorder struct {
	fakePolicy
	caps *[]int
}

func (d dstRecorder) AppendTelemetry(dst []pathpolicy.SubflowStats) ([]pathpolicy.SubflowStats, error) {
	*d.caps = append(*d.caps, cap(dst))
	return d.fakePolicy.AppendTelemetry(dst)
}

// A scrape reads the telemetry map into the buffer the previous scrape
// left: at 100,000 subflows each read was ~17 MB for the collector.
func TestPathPolicyCollectorReusesItsBuffer(t *testing.T) {
	var caps []int
	src := dstRecorder{fakePolicy{stats: manySubflows(500).stats, sharesErr: pathpolicy.ErrNoSendShare}, &caps}
	c := NewPathPolicyCollector(src, nil)
	for range 2 {
		if _, err := gather(t, c); err != nil {
			t.Fatal(err)
		}
	}
	if len(caps) != 2 || caps[0] != 0 || caps[1] < 500 {
		t.Errorf("the reads were given buffers of capacity %v; want none, then the first read's (500 or more)", caps)
	}
}
