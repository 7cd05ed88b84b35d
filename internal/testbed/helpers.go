//go:build linux

package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Test helpers shared by the integration tests and benchmarks of several
// packages. Each takes the test (or benchmark) as tb, fails it with
// tb.Fatal when a set-up step fails, and undoes what it made in
// tb.Cleanup, so nothing outlives the test even when it fails.

// NetNST creates a namespace for tb (see NewNetNS) and deletes it in
// tb.Cleanup, reporting a failed deletion with tb.Error. It skips tb when
// not root.
func NetNST(tb TB, role string) *NetNS {
	tb.Helper()
	NeedRoot(tb)
	ns, err := NewNetNS(role)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := ns.Close(); err != nil {
			tb.Error(err)
		}
	})
	return ns
}

// RunT is Run for set-up steps and oracles: a failed command fails tb.
// It returns the command's standard output.
func (n *NetNS) RunT(tb TB, args ...string) string {
	tb.Helper()
	out, err := n.Run(args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// VethLink is one veth link between two namespaces: interface A with address
// AAddr in the first, B with BAddr in the second (CIDR form, e.g.
// "10.8.1.1/24" or "fd00:81::1/64").
type VethLink struct {
	A, B         string
	AAddr, BAddr string
}

// ConnectT joins a and b with one veth pair per link and adds the links'
// addresses. The links go with the namespaces.
func ConnectT(tb TB, a, b *NetNS, links ...VethLink) {
	tb.Helper()
	for _, l := range links {
		if err := Veth(a, l.A, b, l.B); err != nil {
			tb.Fatal(err)
		}
		if err := a.AddAddr(l.A, l.AAddr); err != nil {
			tb.Fatal(err)
		}
		if err := b.AddAddr(l.B, l.BAddr); err != nil {
			tb.Fatal(err)
		}
	}
}

// ServeT listens on network and addr inside ns (an MPTCP listener when
// mptcp is set, plain TCP otherwise) and runs handle in its own goroutine
// for every connection it accepts, until the test ends: tb.Cleanup closes
// the listener and waits for the accept loop to stop. Connections still
// open then are handle's to close. Sink and Echo are the usual handlers.
func ServeT(tb TB, ns *NetNS, network, addr string, mptcp bool, handle func(net.Conn)) net.Listener {
	tb.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(mptcp)
		var err error
		ln, err = lc.Listen(context.Background(), network, addr)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	tb.Cleanup(func() { ln.Close(); <-done })
	return ln
}

// Sink reads c until EOF or an error, throws the data away and closes c.
func Sink(c net.Conn) { io.Copy(io.Discard, c); c.Close() }

// Echo writes back all c sends until EOF or an error, then closes c.
func Echo(c net.Conn) { io.Copy(c, c); c.Close() }

// DialMPTCPT opens an MPTCP connection from inside ns to remote
// ("host:port"), from the local address local when it is not empty, with a
// 5 s timeout. tb.Cleanup closes the connection.
func DialMPTCPT(tb TB, ns *NetNS, network, local, remote string) net.Conn {
	tb.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		ip := net.ParseIP(local)
		if ip == nil {
			tb.Fatalf("DialMPTCPT: local address %q is not an IP address", local)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	d.SetMultipathTCP(true)
	var c net.Conn
	if err := ns.Do(func() error {
		var err error
		c, err = d.Dial(network, remote)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// KeepSending writes 8 KiB to c every 2 ms until a write fails (a write
// that times out after 1 s does not count) or the test ends; tb.Cleanup
// stops the writer and waits for it. An MPTCP connection must carry data
// to become fully established: an idle one never gets its subflows.
func KeepSending(tb TB, c net.Conn) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 8<<10)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(buf); err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					return
				}
			}
		}
	}()
	tb.Cleanup(func() { close(stop); <-stopped })
}

// Collect calls receive in a loop in its own goroutine and hands each
// result to handle, until handle returns false, stop is called or the test
// ends (tb.Cleanup). Stopping cancels the context receive is given and
// waits for the goroutine; the error receive returns because of that
// cancellation is not handed on. It is the loop around a
// pathmgr.EventListener: Collect(tb, l.Receive, ...). Register the close of
// what receive reads from before calling Collect, so that the cleanup which
// stops the loop runs first.
func Collect[E any](tb TB, receive func(context.Context) ([]E, error), handle func(batch []E, err error) bool) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			batch, err := receive(ctx)
			if err != nil && ctx.Err() != nil {
				return
			}
			if !handle(batch, err) {
				return
			}
		}
	}()
	stop = func() { cancel(); <-stopped }
	tb.Cleanup(stop)
	return stop
}

// Eventually polls cond every 50 ms until it holds, and fails tb with what
// and the last state cond reported when it does not hold within 10 s.
func Eventually(tb TB, what string, cond func() (ok bool, state string)) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not seen within 10s; last state:\n%s", what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RootStateT returns what a bed must leave as it found it in the root
// namespace: its links (`ip -br link`, without the temporary veth ends
// that beds being built right now hold for a moment) and its nftables
// ruleset. Compare it before and after to check that nothing leaked.
func RootStateT(tb TB) string {
	tb.Helper()
	links, err := exec.Command("ip", "-br", "link", "show").CombinedOutput()
	if err != nil {
		tb.Fatalf("ip link: %v: %s", err, links)
	}
	rules, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		tb.Fatalf("nft list ruleset: %v: %s", err, rules)
	}
	var keep []string
	for _, l := range strings.Split(string(links), "\n") {
		if f := strings.Fields(l); len(f) > 0 && isVethTemp(strings.SplitN(f[0], "@", 2)[0]) {
			continue
		}
		keep = append(keep, l)
	}
	return "links:\n" + strings.Join(keep, "\n") + "nftables:\n" + string(rules)
}

// LoadAverage is the host's 1-minute load average ("?" when unknown), for
// benchmarks to log beside what they measured.
func LoadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(raw)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// cpuBusy reads the host's CPU time from /proc/stat, in clock ticks,
// over all CPUs: busy (user, nice, system, irq, softirq) and total (those,
// idle, iowait and steal; guest time is already in user and nice), and
// how many CPUs the line covers.
func cpuBusy() (busy, total uint64, cpus int, err error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	lines := strings.Split(string(raw), "\n")
	f := strings.Fields(lines[0])
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", lines[0])
	}
	for i, s := range f[1:9] { // user nice system idle iowait irq softirq steal
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("/proc/stat: %q: %w", lines[0], err)
		}
		total += v
		if i != 3 && i != 4 && i != 7 {
			busy += v
		}
	}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "cpu") {
			cpus++
		}
	}
	return busy, total, max(cpus, 1), nil
}

// WaitQuiet waits until the host's CPUs have been busy less than maxBusy
// (in CPUs: 0.5 is half of one) over each of two consecutive seconds, for
// at most limit, and returns how long it waited and the busy level of the
// last second. Benchmarks call it before a measurement window when what
// they set up leaves the kernel working (a burst of joins still binding
// ports, say), so that the window measures the daemon and not that.
func WaitQuiet(tb TB, maxBusy float64, limit time.Duration) (waited time.Duration, busy float64) {
	tb.Helper()
	t0 := time.Now()
	b0, n0, _, err := cpuBusy()
	if err != nil {
		tb.Fatal(err)
	}
	quiet := 0
	for {
		time.Sleep(time.Second)
		b1, n1, cpus, err := cpuBusy()
		if err != nil {
			tb.Fatal(err)
		}
		if n1 > n0 {
			busy = float64(b1-b0) / float64(n1-n0) * float64(cpus)
		}
		b0, n0 = b1, n1
		if busy < maxBusy {
			quiet++
		} else {
			quiet = 0
		}
		if quiet == 2 || time.Since(t0) >= limit {
			return time.Since(t0), busy
		}
	}
}

// Child is a process of the running test binary in a helper mode of its
// own (an environment variable its TestMain looks for), for load that
// must not share the test's process or its open-file limit. The test
// writes it lines on In and reads its answers with Line or LineWithin
// (or from Out), from one goroutine.
type Child struct {
	In  io.WriteCloser
	Out *bufio.Scanner
	Pid int
	// end closes In and waits for the child's exit (killing it after
	// childGrace); once, from Close or the test's cleanup. waitErr is
	// what the wait returned.
	end     func()
	waitErr error
	pending chan childLine // a read LineWithin stopped waiting for
}

// Close ends the child now rather than at the test's end: its input is
// closed and its exit waited for (one still running childGrace later is
// killed and fails the test). It returns how the child exited (nil: with
// status 0). Read what it says at the end first.
func (c *Child) Close() error {
	c.end()
	return c.waitErr
}

// childGrace is how long a child has to exit once its input is closed
// (one holding 9,000 connections closes them all first), and how long its
// output may stay open after it was killed (a grandchild holding it).
const childGrace = 30 * time.Second

// StartChildT starts the test binary, running no test, with env (NAME=VALUE)
// added to its environment and its standard error to stderr, and waits for
// its first line, which must be ready. End of input ends a child: in
// tb.Cleanup its input is closed, and one still running childGrace later
// is killed and fails tb.
func StartChildT(tb TB, env, ready string, stderr io.Writer) *Child {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, self, "-test.run=^$")
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = stderr
	cmd.WaitDelay = childGrace
	in, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		tb.Fatal(err)
	}
	c := &Child{In: in, Out: bufio.NewScanner(out), Pid: cmd.Process.Pid}
	c.end = sync.OnceFunc(func() {
		in.Close()
		done := make(chan struct{})
		go func() { c.waitErr = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(childGrace):
			tb.Errorf("helper %s (pid %d) still running %v after its input closed: killed", env, cmd.Process.Pid, childGrace)
			cancel()
			<-done
		}
		cancel()
	})
	tb.Cleanup(c.end)
	if l, err := c.Line(); err != nil || l != ready {
		tb.Fatalf("helper %s: first line %q (%v), want %q", env, l, err, ready)
	}
	return c
}

// LineWithin is Line bounded by d: a child that says nothing in d is an
// error that names d and wraps os.ErrDeadlineExceeded. The read it gave
// up waiting for goes on; the next Line or LineWithin takes its line (so
// Out is not to be read directly after it).
func (c *Child) LineWithin(d time.Duration) (string, error) {
	if c.pending == nil {
		ch := make(chan childLine, 1)
		go func() { l, err := c.scan(); ch <- childLine{l, err} }()
		c.pending = ch
	}
	select {
	case r := <-c.pending:
		c.pending = nil
		return r.l, r.err
	case <-time.After(d):
		return "", fmt.Errorf("helper (pid %d) said nothing in %v: %w", c.Pid, d, os.ErrDeadlineExceeded)
	}
}

// Line reads the child's next line; an error when its output ended.
func (c *Child) Line() (string, error) {
	if c.pending != nil {
		r := <-c.pending
		c.pending = nil
		return r.l, r.err
	}
	return c.scan()
}

type childLine struct {
	l   string
	err error
}

func (c *Child) scan() (string, error) {
	if !c.Out.Scan() {
		if err := c.Out.Err(); err != nil {
			return "", err
		}
		return "", io.ErrUnexpectedEOF
	}
	return c.Out.Text(), nil
}
