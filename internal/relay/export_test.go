package relay_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// value returns the value of the series of metric name that has a label
// with value label (counter or gauge), 0 if there is none.
func value(t testing.TB, s *relay.Server, name, label string) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 256)
	s.Collector().Collect(ch)
	close(ch)
	for m := range ch {
		if !strings.Contains(m.Desc().String(), `"`+name+`"`) {
			continue
		}
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		for _, l := range d.Label {
			if l.GetValue() == label {
				if d.Counter != nil {
					return d.Counter.GetValue()
				}
				return d.Gauge.GetValue()
			}
		}
	}
	return 0
}

// valueAtLeast waits (up to 5 s) for a series to reach min: a relay counts
// a datagram after sending it, so the client can hold the reply before the
// counter moves.
func valueAtLeast(t testing.TB, s *relay.Server, name, label string, min float64) float64 {
	t.Helper()
	var v float64
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if v = value(t, s, name, label); v >= min || time.Now().After(end) {
			return v
		}
	}
}
