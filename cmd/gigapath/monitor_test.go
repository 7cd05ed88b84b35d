package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/pathmgr"
)

// fakeEvents hands out scripted batches, then calls end (if set: the
// test's Ctrl-C, once every batch was read) and blocks until ctx is done.
type fakeEvents struct {
	batches []fakeBatch
	end     func()
}

type fakeBatch struct {
	evs []pathmgr.Event
	err error
}

func (f *fakeEvents) Receive(ctx context.Context) ([]pathmgr.Event, error) {
	if len(f.batches) == 0 {
		if f.end != nil {
			f.end()
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	b := f.batches[0]
	f.batches = f.batches[1:]
	return b.evs, b.err
}

func TestRunMonitorJSONLinesAndLost(t *testing.T) {
	lost := fmt.Errorf("pathmgr: receive events: %w: %w", pathmgr.ErrEventsLost, errors.New("no buffer space available"))
	src := &fakeEvents{batches: []fakeBatch{
		{evs: []pathmgr.Event{{Type: pathmgr.EventClosed}, {Type: pathmgr.EventRemoved}}},
		{err: lost},
		{evs: []pathmgr.Event{{Type: pathmgr.EventSubEstablished, Local: netip.MustParseAddrPort("10.0.0.1:1")}}},
	}}
	// Ctrl-C after the last batch, not after a fixed time: a timer could
	// fire mid-script on a loaded machine and drop the lost line.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src.end = cancel
	var out bytes.Buffer
	if err := runMonitor(ctx, src, &out, true); err != nil {
		t.Fatalf("runMonitor = %v, want nil when the context ends (Ctrl-C exits 0)", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	wantTypes := []string{"closed", "removed", "lost", "sub_established"}
	if len(lines) != len(wantTypes) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(wantTypes), out.String())
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d %q is not one JSON object: %v", i, l, err)
		}
		if m["type"] != wantTypes[i] {
			t.Errorf("line %d type = %v, want %s", i, m["type"], wantTypes[i])
		}
	}
}

func TestRunMonitorPlainAndFatalError(t *testing.T) {
	boom := errors.New("socket closed")
	src := &fakeEvents{batches: []fakeBatch{
		{err: fmt.Errorf("x: %w", pathmgr.ErrEventsLost)},
		{err: boom},
	}}
	var out bytes.Buffer
	err := runMonitor(context.Background(), src, &out, false)
	if !errors.Is(err, boom) {
		t.Errorf("runMonitor = %v, want the receive error", err)
	}
	if !strings.Contains(out.String(), "LOST") || !strings.Contains(out.String(), "warning") {
		t.Errorf("plain output %q lacks the lost-events warning", out.String())
	}
}

func TestWriteConns(t *testing.T) {
	var out bytes.Buffer
	writeConns(&out, []pathmgr.Connection{{
		Token: 7, Local: netip.MustParseAddrPort("10.0.1.1:4000"), Remote: netip.MustParseAddrPort("10.0.1.2:80"), State: 1,
		Subflows: []pathmgr.SubflowInfo{{
			Local: netip.MustParseAddrPort("10.0.2.1:4001"), Remote: netip.MustParseAddrPort("10.0.1.2:80"),
			IfName: "lte0", LocalID: 2, Backup: true, RTT: 1500 * time.Microsecond, State: 1,
			RcvRTT: 2250 * time.Microsecond, RcvOOOPack: 3,
		}},
	}})
	want := "token 7 established 10.0.1.1:4000 -> 10.0.1.2:80\n" +
		"    10.0.2.1:4001 -> 10.0.1.2:80 dev lte0 locid 2 remid 0 established rtt 1.500ms retrans 0 acked 0 received 0 rcv_rtt 2.250ms rcv_ooopack 3 backup\n"
	if out.String() != want {
		t.Errorf("writeConns:\n got %q\nwant %q", out.String(), want)
	}
}
