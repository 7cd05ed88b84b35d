//go:build linux

package pathmgr

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestIntegrationEventsLost overflows a listener's receive buffer with a
// burst of real events (MPTCP listeners opened and closed in a fresh
// namespace) and checks that Receive reports ErrEventsLost, then keeps
// delivering newer events.
func TestIntegrationEventsLost(t *testing.T) { eachListener(t, testEventsLost) }

func testEventsLost(t *testing.T, listen listenFunc) {
	ns, l := listenWith(t, "lost", listen)
	// The smallest buffer the kernel allows (a few KiB): a few dozen events fill it.
	setReadBuffer(t, l, 1)
	listenClose := func(port int) error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		ln, err := lc.Listen(context.Background(), "tcp4", net.JoinHostPort("127.0.0.1", itoa(port)))
		if err != nil {
			return err
		}
		return ln.Close()
	}
	if err := ns.Do(func() error {
		for i := range 200 {
			if err := listenClose(20000 + i); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var lost bool
	for !lost {
		_, err := l.Receive(ctx)
		switch {
		case err == nil:
		case errors.Is(err, ErrEventsLost):
			if !errors.Is(err, unix.ENOBUFS) {
				t.Errorf("lost-events error %v does not unwrap to ENOBUFS", err)
			}
			lost = true
		default:
			t.Fatalf("Receive: %v; want ErrEventsLost after a burst of 400 events into a tiny buffer", err)
		}
	}

	// Still usable: newer events arrive. The kernel drops everything while
	// the socket is congested (until its queue is read empty), so keep
	// making marker events until one gets through.
	setReadBuffer(t, l, 1<<20)
	markerCtx, stopMarkers := context.WithCancel(ctx)
	markersDone := make(chan struct{})
	defer func() { stopMarkers(); <-markersDone }()
	go func() {
		defer close(markersDone)
		for i := 0; markerCtx.Err() == nil; i++ {
			ns.Do(func() error { return listenClose(30000 + i%100) })
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for {
		evs, err := l.Receive(ctx)
		if err != nil && !errors.Is(err, ErrEventsLost) {
			t.Fatalf("Receive after the loss: %v", err)
		}
		for _, e := range evs {
			if e.Type == EventListenerClosed && e.Local.Port() >= 30000 {
				return
			}
		}
	}
}

// setReadBuffer sets SO_RCVBUF of l's socket (the kernel doubles it,
// within its bounds).
func setReadBuffer(t *testing.T, l *EventListener, bytes int) {
	t.Helper()
	var serr error
	if err := l.control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, bytes) }); err != nil || serr != nil {
		t.Fatalf("SO_RCVBUF %d: %v", bytes, errors.Join(err, serr))
	}
}

func itoa(n int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

// TestIntegrationListenEventsNeedsCapNetAdmin re-runs this test binary as
// an unprivileged user (setpriv): joining mptcp_pm_events must then fail
// with an error matching os.ErrPermission.
func TestIntegrationListenEventsNeedsCapNetAdmin(t *testing.T) {
	if os.Getenv("GIGAPATH_UNPRIV_CHILD") == "1" {
		_, err := ListenEvents(nil)
		if !errors.Is(err, os.ErrPermission) || !errors.Is(err, unix.EPERM) {
			t.Fatalf("ListenEvents without CAP_NET_ADMIN = %v; want os.ErrPermission (EPERM)", err)
		}
		t.Logf("refused as expected: %v", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (to drop to an unprivileged user with setpriv)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to drop privileges")
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
		os.Args[0], "-test.run=^TestIntegrationListenEventsNeedsCapNetAdmin$", "-test.v")
	cmd.Env = append(os.Environ(), "GIGAPATH_UNPRIV_CHILD=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil || !strings.Contains(string(out), "refused as expected") {
		t.Fatalf("unprivileged run: %v\n%s", err, out)
	}
}
