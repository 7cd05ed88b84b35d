//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// The daemon binary speaks systemd's Type=notify protocol as systemd sees
// it: the test plays systemd's side (a datagram socket in $NOTIFY_SOCKET,
// $WATCHDOG_USEC set) and receives READY=1 once the daemon serves,
// WATCHDOG=1 at half the watchdog interval, RELOADING=1 (with
// MONOTONIC_USEC) and READY=1 again around an upgrade in place (SIGUSR2),
// and STOPPING=1 on SIGTERM, after which the daemon exits 0.
func TestIntegrationSystemdNotify(t *testing.T) {
	bin := buildBinary(t)
	b := testbed.UpT(t, testbed.Spec{})
	dir := t.TempDir()
	nsock := filepath.Join(dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(basePolicy, "aggregate", filepath.Join(dir, "status.sock"))), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := b.Client.Command(context.Background(), bin, "run", "--config", cfg, "--metrics-listen", "-")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+nsock, "WATCHDOG_USEC=400000")
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})

	recv := func(within time.Duration) (string, time.Time) {
		t.Helper()
		ln.SetReadDeadline(time.Now().Add(within))
		buf := make([]byte, 256)
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("no notification within %v: %v", within, err)
		}
		return string(buf[:n]), time.Now()
	}
	if msg, _ := recv(10 * time.Second); msg != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", msg)
	}
	var stamps []time.Time
	for len(stamps) < 4 {
		msg, at := recv(5 * time.Second)
		if msg != "WATCHDOG=1" {
			t.Fatalf("notification %q while running, want WATCHDOG=1", msg)
		}
		stamps = append(stamps, at)
	}
	// Half of 400 ms: four pings take about 600 ms after the first; well
	// under the 400 ms systemd would allow between two.
	for i := 1; i < len(stamps); i++ {
		if gap := stamps[i].Sub(stamps[i-1]); gap > 400*time.Millisecond {
			t.Errorf("watchdog gap %v, more than WATCHDOG_USEC (400ms): systemd would kill the daemon", gap)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	next := func() string {
		t.Helper()
		for {
			msg, _ := recv(10 * time.Second)
			if msg != "WATCHDOG=1" {
				return msg
			}
		}
	}
	if msg := next(); !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`).MatchString(msg) {
		t.Fatalf("notification %q after SIGUSR2, want RELOADING=1 and MONOTONIC_USEC", msg)
	}
	if msg := next(); msg != "READY=1" {
		t.Fatalf("notification %q from the new binary, want READY=1", msg)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		msg, _ := recv(10 * time.Second)
		if msg == "WATCHDOG=1" {
			continue
		}
		if msg != "STOPPING=1" {
			t.Fatalf("notification %q after SIGTERM, want STOPPING=1", msg)
		}
		break
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("daemon exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("daemon did not exit within 10 s of SIGTERM")
	}
}
