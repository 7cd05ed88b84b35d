//go:build linux

package pathpolicy

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const sourcePy = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
buf = b"y" * 65536
while True:
    c, _ = s.accept()
    try:
        while True:
            c.sendall(buf)
    except OSError:
        pass
    c.close()
`

const receiverPy = `
import socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
c.connect((sys.argv[1], int(sys.argv[2])))
print("connected", flush=True)
while c.recv(1 << 16):
    pass
`

var ssDataSegsIn = regexp.MustCompile(`\bdata_segs_in:(\d+)`)

// A subflow that only receives (a download: it sends ACKs, no data) never
// gets an RTT callback, yet the telemetry must follow its receive side,
// which is what the daemon's path health reads on a phone: data_segs_in
// read from the map right before `ss -tin` is at most what ss shows, and
// read 100 ms after (the entry is refreshed at least every 50 ms while the
// socket sends ACKs) at least that; rcv_rtt is set.
func TestIntegrationReceiveTelemetry(t *testing.T) {
	tp := newTopo(t)
	tp.srv.MustRun("tc", "qdisc", "add", "dev", "lte0s", "root", "tbf", "rate", "20mbit", "burst", "16kb", "latency", "30ms")
	p, err := Load(Options{Cgroup: tp.cgroup, NetNS: tp.cli.Path(), NoSendShare: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	tp.startServerScript(t, sourcePy)
	tp.startClientScript(t, receiverPy, tp.cgroup)
	time.Sleep(2 * time.Second) // the lte subflow joins, data flows on both

	byLocal := func() map[string]SubflowStats {
		stats, err := p.Telemetry()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]SubflowStats{}
		for _, s := range stats {
			m[s.Local.String()] = s
		}
		return m
	}
	checked := map[string]bool{}
	for round := 0; round < 5 && len(checked) < 2; round++ {
		before := byLocal()
		out := tp.cli.MustRun("ss", "-tinH", "state", "established", "dport", "= :"+srvPort)
		time.Sleep(100 * time.Millisecond)
		after := byLocal()
		var local string
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) >= 4 && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
				local = stripDev(f[2])
				continue
			}
			m := ssDataSegsIn.FindStringSubmatch(l)
			if m == nil || local == "" {
				continue
			}
			ss, _ := strconv.ParseUint(m[1], 10, 32)
			b, a := before[local], after[local]
			if a.Cookie == 0 {
				t.Fatalf("no telemetry for the receiving subflow %s (have %v)", local, after)
			}
			// The program refreshes an entry at most every 50 ms, on a
			// segment the subflow sends (ACKs included): when the
			// receiver has not read for a while (a loaded CI host) its
			// window is full, nothing arrives and nothing is sent, and
			// the entry stays behind what ss saw until data flows again.
			// Wait for that, a bounded time, and say how long it took.
			waited := 100 * time.Millisecond
			for uint64(a.DataSegsIn) < ss && waited < 3*time.Second {
				time.Sleep(50 * time.Millisecond)
				waited += 50 * time.Millisecond
				a = byLocal()[local]
			}
			if a.BytesAcked > 1000 {
				t.Fatalf("subflow %s acknowledged %d bytes: it was meant to only receive", local, a.BytesAcked)
			}
			t.Logf("%s: data_segs_in map %d, ss %d, map %v later %d; rcv_rtt %v, rcv_ooopack %d", local, b.DataSegsIn, ss, waited, a.DataSegsIn, a.RcvRTT, a.RcvOOOPack)
			if uint64(b.DataSegsIn) > ss || uint64(a.DataSegsIn) < ss {
				t.Errorf("subflow %s: data_segs_in %d (map) .. %d (ss) .. %d (map %v later): the map does not follow the receive side", local, b.DataSegsIn, ss, a.DataSegsIn, waited)
			}
			if a.RcvRTT <= 0 {
				t.Errorf("subflow %s: no rcv_rtt in the telemetry after 2 s of download", local)
			}
			checked[local[:strings.LastIndex(local, ":")]] = true
			local = ""
		}
	}
	if !checked[wifiAddr] || !checked[lteAddr] {
		t.Fatalf("receiving subflows checked: %v, want the wifi and the lte one", checked)
	}
}

const idleClientPy = `
import socket, sys, time
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
c.connect((sys.argv[1], int(sys.argv[2])))
c.sendall(b"x")
print("connected", flush=True)
time.sleep(3600)
`

// On the passive side (a server) the kernel calls the program back for an
// established subflow before it stores the state (tcp_init_transfer, then
// tcp_set_state): the entries of an accepted connection's subflows, the
// initial one and the join, say ESTABLISHED all the same, with no traffic
// after the first byte. (The daemon counts established entries to know
// whether the map covers every subflow.)
func TestIntegrationPassiveSubflowsEstablished(t *testing.T) {
	tp := newTopo(t)
	p, err := Load(Options{Cgroup: tp.cgroup, NetNS: tp.srv.Path(), NoSendShare: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	tp.startServerScriptIn(t, serverPy, tp.cgroup)
	tp.startClientScript(t, idleClientPy, "")
	var stats []SubflowStats
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if stats, err = p.Telemetry(); err != nil {
			t.Fatal(err)
		}
		if len(stats) == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(stats) != 2 {
		t.Fatalf("server telemetry %+v; want the accepted connection's two subflows", stats)
	}
	for _, s := range stats {
		if s.State != 1 {
			t.Errorf("server subflow %v -> %v: state %d in the map, want 1 (ESTABLISHED)", s.Local, s.Remote, s.State)
		}
	}
}
