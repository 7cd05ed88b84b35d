package controller

import (
	"net"
	"os"
	"strconv"
	"time"
)

// notifier speaks systemd's sd_notify datagram protocol on $NOTIFY_SOCKET
// (a path, or an abstract socket name starting with '@'). Without the
// variable every call does nothing.
type notifier struct {
	addr *net.UnixAddr
}

func newNotifier() *notifier {
	s := os.Getenv("NOTIFY_SOCKET")
	if s == "" {
		return &notifier{}
	}
	if s[0] == '@' {
		s = "\x00" + s[1:]
	}
	return &notifier{addr: &net.UnixAddr{Name: s, Net: "unixgram"}}
}

// send writes one state string ("READY=1", "WATCHDOG=1", ...).
func (n *notifier) send(state string) error {
	if n.addr == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// watchdogInterval is half of $WATCHDOG_USEC when the watchdog is meant for
// this process ($WATCHDOG_PID unset or ours), else 0.
func watchdogInterval() time.Duration {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(us) * time.Microsecond / 2
}
