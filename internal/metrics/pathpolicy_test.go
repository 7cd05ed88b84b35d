package metrics

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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

func (f fakePolicy) Telemetry() ([]pathpolicy.SubflowStats, error) { return f.stats, f.statsErr }
func (f fakePolicy) SendShares() ([]pathpolicy.PathShare, error)   { return f.shares, f.sharesErr }

var _ PathPolicySource = (*pathpolicy.PathPolicy)(nil)

// gather registers c on a fresh registry and returns each sample as
// "name{label=value,...}" -> value.
func gather(t *testing.T, c prometheus.Collector) (map[string]float64, error) {
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
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = value(m)
		}
	}
	return out, err
}

func value(m *dto.Metric) float64 {
	if g := m.GetGauge(); g != nil {
		return g.GetValue()
	}
	return m.GetCounter().GetValue()
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
	got, err := gather(t, NewPathPolicyCollector(src))
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
	for k, v := range want {
		if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d samples, want %d: %v", len(got), len(want), got)
	}
}

// Without send-share counters (loaded with NoSendShare) the path metrics
// are left out; a map that cannot be read fails the scrape, naming why.
func TestPathPolicyCollectorPartial(t *testing.T) {
	got, err := gather(t, NewPathPolicyCollector(fakePolicy{sharesErr: pathpolicy.ErrNoSendShare}))
	if err != nil || len(got) != 1 || got[TelemetrySubflows+"{}"] != 0 {
		t.Errorf("no telemetry, no send share: %v, %v; want 0 subflows, nothing else and no error", got, err)
	}
	_, err = gather(t, NewPathPolicyCollector(fakePolicy{statsErr: errors.New("read telemetry: boom"), sharesErr: pathpolicy.ErrNoSendShare}))
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("telemetry error: scrape error %v, want it to carry the map's error", err)
	}
	_, err = gather(t, NewPathPolicyCollector(fakePolicy{sharesErr: errors.New("read send-share counters: bust")}))
	if err == nil || !strings.Contains(err.Error(), "bust") {
		t.Errorf("send-share error: scrape error %v, want it to carry the map's error", err)
	}
}

// Beyond SubflowSeriesLimit subflows, the per-subflow series are left
// out (a scrape would sort and format four series per subflow); the
// count and the per-path series stay.
func TestPathPolicyCollectorManySubflows(t *testing.T) {
	peer := netip.MustParseAddrPort("10.8.1.2:9000")
	lte := netip.MustParseAddr("10.8.2.1")
	for _, n := range []int{SubflowSeriesLimit, SubflowSeriesLimit + 1} {
		var src fakePolicy
		for i := range n {
			src.stats = append(src.stats, pathpolicy.SubflowStats{Local: netip.AddrPortFrom(lte, uint16(10000+i)), Remote: peer, SRTT: time.Millisecond})
		}
		src.shares = []pathpolicy.PathShare{{Local: lte, Chosen: 1, Bytes: 100}}
		got, err := gather(t, NewPathPolicyCollector(src))
		if err != nil {
			t.Fatal(err)
		}
		srtt := 0
		for k := range got {
			if strings.HasPrefix(k, SubflowSRTT+"{") {
				srtt++
			}
		}
		want := n
		if n > SubflowSeriesLimit {
			want = 0
		}
		if srtt != want || got[TelemetrySubflows+"{}"] != float64(n) || got[PathSendShare+"{local=10.8.2.1}"] != 1 {
			t.Errorf("%d subflows: %d srtt series (want %d), %s %v, send share %v",
				n, srtt, want, TelemetrySubflows, got[TelemetrySubflows+"{}"], got[PathSendShare+"{local=10.8.2.1}"])
		}
	}
}
