package controller

import (
	"testing"

	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/policy"
)

// The policy's bounds of metrics.subflow_series are the telemetry map's
// and the collector's: the largest value is the most subflows the map
// holds, and a collector without a policy uses the policy's default.
func TestSubflowSeriesBounds(t *testing.T) {
	if policy.MaxSubflowSeries != serverTelemetrySubflows || telemetrySubflows > serverTelemetrySubflows {
		t.Errorf("policy.MaxSubflowSeries %d, telemetry map of a server %d and a client %d: the largest subflow_series must be the largest map",
			policy.MaxSubflowSeries, serverTelemetrySubflows, telemetrySubflows)
	}
	if policy.DefaultSubflowSeries != metrics.DefaultSubflowSeries || metrics.NewTelemetryView().SubflowSeries() != policy.DefaultSubflowSeries {
		t.Errorf("default subflow_series: policy %d, metrics %d", policy.DefaultSubflowSeries, metrics.DefaultSubflowSeries)
	}
}
