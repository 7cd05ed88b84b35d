//go:build linux

package pathpolicy

import (
	"testing"

	"github.com/cilium/ebpf"
)

// The telemetry map evicts the least recently used entry when full
// instead of refusing new subflows.
func TestSubflowsMapIsLRU(t *testing.T) {
	spec, err := loadPathpolicy()
	if err != nil {
		t.Fatal(err)
	}
	m := spec.Maps["subflows"]
	if m == nil || m.Type != ebpf.LRUHash {
		t.Fatalf("subflows map spec = %+v, want an LRU hash", m)
	}
}
