package status

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeQuery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	want := Snapshot{Time: time.Unix(1, 0).UTC(), PID: 7, Summary: "x", Connections: []Connection{{Token: 9,
		PeerAddrs: []PeerAddr{{ID: 3, Addr: netip.MustParseAddrPort("10.0.9.1:443")}},
		Subflows:  []Subflow{{Local: netip.MustParseAddrPort("10.0.0.1:1"), Interface: "lte0", Backup: true}}}}}
	if err := Serve(ctx, path, func(context.Context) (Snapshot, error) { return want, nil }); err != nil {
		t.Fatal(err)
	}
	got, err := Query(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if got.PID != 7 || len(got.Connections) != 1 || !got.Connections[0].Subflows[0].Backup ||
		len(got.Connections[0].PeerAddrs) != 1 || got.Connections[0].PeerAddrs[0] != want.Connections[0].PeerAddrs[0] {
		t.Errorf("got %+v", got)
	}
	// A second daemon on the same live socket is refused.
	if err := Serve(ctx, path, nil); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Errorf("second Serve: %v", err)
	}
	// The daemon's error reaches the client.
	p2 := filepath.Join(t.TempDir(), "e.sock")
	Serve(ctx, p2, func(context.Context) (Snapshot, error) { return Snapshot{}, errors.New("busy") })
	if _, err := Query(ctx, p2); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("error reply: %v", err)
	}
	if _, err := Query(ctx, filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "none") {
		t.Errorf("missing socket: %v", err)
	}
}
