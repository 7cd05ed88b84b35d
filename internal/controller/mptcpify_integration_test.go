//go:build linux

package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/ebpf/mptcpify"
	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// `mptcpify:` naming a cgroup: where the kernel refuses the tracing
// program (this host: lockdown) the daemon logs one warning carrying
// ebpf/mptcpify's error word for word and keeps running; where it loads,
// the daemon says it attached it.
func TestIntegrationMptcpifyWarnsAndRuns(t *testing.T) {
	b := testbed.UpT(t, testbed.Spec{})
	cg := testCgroup(t)
	// What the library says on this kernel, independently of the daemon.
	var libErr string
	if m, err := mptcpify.Load(); err != nil {
		libErr = err.Error()
	} else {
		m.Close()
	}

	sock := filepath.Join(t.TempDir(), "status.sock")
	p, err := policy.Parse([]byte(fmt.Sprintf(basePolicy, "aggregate", sock) + "mptcpify: [" + cg + "]\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logs testbed.LockedBuffer
	ctl, err := controller.New(controller.Config{Policy: p, NetNS: b.Client.Name, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	select {
	case <-ctl.Ready():
	case err := <-done:
		t.Fatalf("controller exited: %v\n%s", err, logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("controller: %v", err)
	}

	var warns []map[string]any
	attached := false
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		msg, _ := rec["msg"].(string)
		if strings.HasPrefix(msg, "mptcpify") && rec["level"] == "WARN" {
			warns = append(warns, rec)
		}
		attached = attached || msg == "mptcpify attached"
	}
	if libErr == "" {
		if !attached || len(warns) != 0 {
			t.Fatalf("mptcpify loads here but the daemon did not attach it cleanly (warnings %v):\n%s", warns, logs.String())
		}
		return
	}
	if len(warns) != 1 || attached {
		t.Fatalf("want exactly one mptcpify warning and no attach, got %d (attached %v):\n%s", len(warns), attached, logs.String())
	}
	if got := warns[0]["err"]; got != libErr {
		t.Errorf("warning err = %q, want ebpf/mptcpify's error verbatim %q", got, libErr)
	}
	t.Logf("warning: %v", warns[0])
}
