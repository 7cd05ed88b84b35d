//go:build linux

package testbed

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Python peers for the fleet's tests: implementations independent of Go's
// dialer and of the code under test, run as processes in a namespace (so
// a node's can be killed with the node, KillNode).

// pyClients opens COUNT connections (protocol 6 = TCP, 262 = MPTCP) to
// DST:PORT, from SRC when given, and on each writes CHUNK bytes of a
// pattern of its own and reads the echo back, checking every byte, every
// INTERVAL seconds. It prints {"ready": ...} after the first round. Mode
// "once" then closes them and exits; "hold" and "stream" go on until
// "stop" or the end of its standard input, answering "report" with the
// state of every connection. A connection that fails (reset, closed,
// timed out after 5 s, a wrong byte) is recorded with the error and the
// time and left alone; the others go on. A failed connect exits non-zero.
const pyClients = `
import json, select, socket, sys, time
dst, port, count, proto, src, mode, chunk, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7]), float(sys.argv[8])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
big = bytes(range(251)) * (chunk // 251 + 2)
def pattern(i, off, n):
    s = (off + i * 37) % 251
    return big[s:s + n]
conns = []
for i in range(count):
    s = socket.socket(fam, socket.SOCK_STREAM, proto)
    s.settimeout(5)
    if src:
        s.bind((src, 0))
    try:
        s.connect((dst, port))
    except OSError as e:
        sys.exit("connection %d to %s:%d: %s" % (i, dst, port, e))
    conns.append({"i": i, "s": s, "lport": s.getsockname()[1], "sent": 0, "recv": 0, "err": "", "err_at": 0.0})
def fail(c, why):
    c["err"], c["err_at"] = why, time.time()
    try:
        c["s"].close()
    except OSError:
        pass
def round():
    for c in conns:
        if c["err"]:
            continue
        s, i = c["s"], c["i"]
        try:
            s.sendall(pattern(i, c["sent"], chunk))
            c["sent"] += chunk
            while c["recv"] < c["sent"]:
                d = s.recv(c["sent"] - c["recv"])
                if not d:
                    fail(c, "closed by the server after %d bytes" % c["recv"])
                    break
                if d != pattern(i, c["recv"], len(d)):
                    fail(c, "wrong bytes at offset %d" % c["recv"])
                    break
                c["recv"] += len(d)
        except OSError as e:
            fail(c, e.__class__.__name__ + ": " + str(e))
def report(final):
    out = [{k: c[k] for k in ("i", "lport", "sent", "recv", "err", "err_at")} for c in conns]
    print(json.dumps({"final": final, "t": time.time(), "conns": out}), flush=True)
round()
print(json.dumps({"ready": True}), flush=True)
while mode != "once":
    r, _, _ = select.select([sys.stdin], [], [], interval)
    if r:
        line = sys.stdin.readline().strip()
        if line == "report":
            report(False)
            continue
        break
    round()
for c in conns:
    if not c["err"]:
        c["s"].close()
report(True)
`

// PyClientsSpec says what StartPyClients runs.
type PyClientsSpec struct {
	Dst   netip.Addr
	Port  int
	Count int
	// MPTCP: protocol 262, else TCP.
	MPTCP bool
	// Src binds the connections to a local address ("" = the kernel's
	// choice).
	Src string
	// Mode: "once" (one round, then close and exit), "hold" (a round
	// every Interval: an MPTCP connection must carry data to get its
	// subflows), "stream" (the same, meant with a larger Chunk).
	Mode string
	// Chunk is the bytes each connection writes (and gets echoed) per
	// round, default 512; Interval the time between rounds, default
	// 200 ms.
	Chunk    int
	Interval time.Duration
}

// ConnReport is one connection of a PyClients report.
type ConnReport struct {
	Index     int    `json:"i"`
	LocalPort uint16 `json:"lport"`
	Sent      int64  `json:"sent"`
	Received  int64  `json:"recv"` // echoed back and checked, byte for byte
	Err       string `json:"err"`
	// ErrAt is when the client saw the error.
	ErrAt time.Time `json:"-"`
	// ErrAtUnix is ErrAt as the script reports it (Unix seconds).
	ErrAtUnix float64 `json:"err_at"`
}

// ClientsReport is the state of every connection of a PyClients.
type ClientsReport struct {
	Final bool         `json:"final"`
	Conns []ConnReport `json:"conns"`
}

// Failed lists the connections that failed.
func (r ClientsReport) Failed() []ConnReport {
	var out []ConnReport
	for _, c := range r.Conns {
		if c.Err != "" {
			out = append(out, c)
		}
	}
	return out
}

// PyClients is a running pyClients process.
type PyClients struct {
	tb     TB
	spec   PyClientsSpec
	in     io.WriteCloser
	lines  chan string
	wait   func() error
	stderr *strings.Builder
	mu     sync.Mutex
	final  *ClientsReport
}

// StartPyClients runs the Python client in ns and waits (up to 60 s) until
// every connection did its first round. Stop (also at tb's cleanup) ends
// it; for mode "once" it has ended when StartPyClients returns. A failed
// connect, a failure in the first round or a client that dies fails tb;
// later failures of single connections are in the reports.
func StartPyClients(tb TB, ns *NetNS, spec PyClientsSpec) *PyClients {
	tb.Helper()
	if spec.Chunk == 0 {
		spec.Chunk = 512
	}
	if spec.Interval == 0 {
		spec.Interval = 200 * time.Millisecond
	}
	if spec.Mode == "" {
		spec.Mode = "hold"
	}
	proto := "6"
	if spec.MPTCP {
		proto = "262"
	}
	cmd := ns.Command(context.Background(), "python3", "-c", pyClients, spec.Dst.String(), strconv.Itoa(spec.Port), strconv.Itoa(spec.Count),
		proto, spec.Src, spec.Mode, strconv.Itoa(spec.Chunk), strconv.FormatFloat(spec.Interval.Seconds(), 'f', 3, 64))
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	p := &PyClients{tb: tb, spec: spec, in: in, lines: make(chan string, 16), stderr: &strings.Builder{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	var once sync.Once
	var werr error
	p.wait = func() error { once.Do(func() { werr = cmd.Wait() }); return werr }
	tb.Cleanup(func() { p.Stop() })
	select {
	case l, ok := <-p.lines:
		if !ok || !strings.Contains(l, `"ready"`) {
			p.in.Close()
			err := p.wait()
			tb.Fatalf("python clients to %s:%d never got ready (%q): %v: %s", spec.Dst, spec.Port, l, err, p.stderr)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		p.wait()
		tb.Fatalf("python clients to %s:%d: not ready after 60 s: %s", spec.Dst, spec.Port, p.stderr)
	}
	if spec.Mode == "once" {
		r := p.Stop()
		if f := r.Failed(); len(f) > 0 {
			tb.Fatalf("python clients to %s:%d: %d connections failed, first: %+v", spec.Dst, spec.Port, len(f), f[0])
		}
	}
	return p
}

func (p *PyClients) readReport() (ClientsReport, error) {
	l, ok := <-p.lines
	if !ok {
		return ClientsReport{}, fmt.Errorf("the python client ended: %v: %s", p.wait(), p.stderr)
	}
	var r ClientsReport
	if err := json.Unmarshal([]byte(l), &r); err != nil {
		return r, fmt.Errorf("python client report %q: %w", l, err)
	}
	for i := range r.Conns {
		if c := &r.Conns[i]; c.ErrAtUnix > 0 {
			c.ErrAt = time.Unix(0, int64(c.ErrAtUnix*1e9))
		}
	}
	return r, nil
}

// Report asks for the state of every connection. A round in progress
// finishes first.
func (p *PyClients) Report() (ClientsReport, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.final != nil {
		return *p.final, nil
	}
	if _, err := io.WriteString(p.in, "report\n"); err != nil {
		return ClientsReport{}, err
	}
	return p.readReport()
}

// Stop closes the connections and returns the final report; a client that
// ended with an error fails tb. It may be called more than once.
func (p *PyClients) Stop() ClientsReport {
	p.tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.final != nil {
		return *p.final
	}
	p.in.Close()
	r, rerr := p.readReport()
	if err := p.wait(); err != nil || rerr != nil {
		p.tb.Errorf("python clients to %s:%d: %v %v: %s", p.spec.Dst, p.spec.Port, err, rerr, p.stderr)
	}
	p.final = &r
	return r
}

// pyEcho echoes every MPTCP (or TCP) connection to PORT on any address,
// IPv4 and IPv6, one thread per connection; it prints "listening".
const pyEcho = `
import socket, sys, threading
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, 262)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(1024)
print("listening", flush=True)
def echo(c):
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
`

// StartEchoServer runs a Python MPTCP echo server on port in ns (every
// address, both families) until tb's cleanup, or until the namespace's
// processes are killed (KillNode).
func StartEchoServer(tb TB, ns *NetNS, port int) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, "python3", "-c", pyEcho, strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cancel(); cmd.Wait() })
	if l, _ := bufio.NewReader(out).ReadString('\n'); l != "listening\n" {
		tb.Fatalf("[%s] python echo server on port %d: %q: %s", ns.Name, port, l, stderr.String())
	}
}
