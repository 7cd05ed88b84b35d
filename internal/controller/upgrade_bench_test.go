//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkUpgradeVsRestart: with n live MPTCP connections, each with its
// lte subflow, the time from the signal until the daemon serves again
// (READY=1 on $NOTIFY_SOCKET, sent after the first reconciliation) for an
// upgrade in place (SIGUSR2, the same binary) and for a restart (SIGTERM,
// exit, a new start), alternated in one run; and what each did to the
// connections, as an independent mptcp_pm event listener and `ip monitor
// rule` see it: lte subflows closed, source rules deleted.
func BenchmarkUpgradeVsRestart(b *testing.B) {
	for _, n := range []int{0, 1000, 5000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) { upgradeVsRestart(b, n) })
	}
}

func upgradeVsRestart(b *testing.B, n int) {
	bin := buildBinary(b)
	bed, stopEcho := echoBed(b)
	defer stopEcho()

	dir := b.TempDir()
	sock := filepath.Join(dir, "status.sock")
	cfg := filepath.Join(dir, "policy.yaml")
	pol := strings.Replace(fmt.Sprintf(basePolicy, "aggregate", sock), "level: debug", "level: warn", 1)
	if err := os.WriteFile(cfg, []byte(pol), 0o600); err != nil {
		b.Fatal(err)
	}
	nsock := filepath.Join(dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ready := func() {
		b.Helper()
		buf := make([]byte, 256)
		for {
			ln.SetReadDeadline(time.Now().Add(60 * time.Second))
			m, err := ln.Read(buf)
			if err != nil {
				b.Fatalf("no READY=1: %v", err)
			}
			if string(buf[:m]) == "READY=1" {
				return
			}
		}
	}
	start := func() *daemon {
		cmd := bed.Client.Command(context.Background(), bin, "run", "--config", cfg, "--metrics-listen", "-")
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+nsock)
		d := startDaemonCmd(b, cmd, sock, testWriter{b})
		ready()
		return d
	}
	d := start()

	// Independent observers: lte subflows established and closed, and
	// deleted rules.
	el, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	defer el.Close()
	var mu sync.Mutex
	est, closed := 0, 0
	defer testbed.Collect(b, el.Receive, func(evs []pathmgr.Event, err error) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			if e.Local.Addr() != bed.LTEAddr {
				continue
			}
			switch e.Type {
			case pathmgr.EventSubEstablished:
				est++
			case pathmgr.EventSubClosed:
				closed++
			}
		}
		return true
	})()
	rmon := &testbed.LockedBuffer{}
	mctx, mcancel := context.WithCancel(context.Background())
	mon := bed.Client.Command(mctx, "ip", "monitor", "rule")
	mon.Stdout = rmon
	if err := mon.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { mcancel(); mon.Wait() }()

	conns := openEchoConns(b, bed, n)
	defer closeAll(conns)
	if b.Failed() {
		return
	}
	deadline := time.Now().Add(120 * time.Second)
	for {
		mu.Lock()
		e := est
		mu.Unlock()
		if e >= n || time.Now().After(deadline) {
			if e < n {
				b.Fatalf("only %d of %d lte subflows", e, n)
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)

	var upgrade, restart time.Duration
	var closedUp, closedRe, delUp, delRe int
	measure := func(do func(), dur *time.Duration, sfClosed, rulesDeleted *int) {
		mu.Lock()
		c0 := closed
		mu.Unlock()
		r0 := strings.Count(rmon.String(), "Deleted")
		t0 := time.Now()
		do()
		*dur += time.Since(t0)
		time.Sleep(time.Second) // anything that follows from it
		mu.Lock()
		*sfClosed += closed - c0
		mu.Unlock()
		*rulesDeleted += strings.Count(rmon.String(), "Deleted") - r0
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		measure(func() {
			d.cmd.Process.Signal(syscall.SIGUSR2)
			ready()
		}, &upgrade, &closedUp, &delUp)
		measure(func() {
			d.cmd.Process.Signal(syscall.SIGTERM)
			<-d.done
			d = start()
		}, &restart, &closedRe, &delRe)
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(upgrade), "upgrade-ms")
	b.ReportMetric(ms(restart), "restart-ms")
	b.ReportMetric(restart.Seconds()/upgrade.Seconds(), "restart/upgrade")
	b.ReportMetric(float64(closedUp)/float64(b.N), "upgrade-lte-sf-closed")
	b.ReportMetric(float64(closedRe)/float64(b.N), "restart-lte-sf-closed")
	b.ReportMetric(float64(delUp)/float64(b.N), "upgrade-rules-deleted")
	b.ReportMetric(float64(delRe)/float64(b.N), "restart-rules-deleted")
}
