//go:build linux

package relay_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
	"github.com/gigapath/gigapath/internal/relay/socks5"
	"github.com/gigapath/gigapath/internal/testbed"
)

// BenchmarkRelayCost: bulk downloads over the same path (client namespace →
// router namespace → server namespace, two veths), directly and through
// every relay running in the router namespace: gigapath (SOCKS5), HAProxy
// (TCP forwarder, `option splice-auto`), dante and microsocks (SOCKS5).
//
// One op is one round: every target fetches once, in an order rotated each
// round, so load that drifts on this shared host hits all of them alike.
// Per target it reports MB/s and the relay's CPU seconds per GB (all
// threads of the relay and its children, from schedstat), and against a
// reference target (gigapath for the peers, direct for gigapath) the
// median of the per-round throughput ratios and the ratio of CPU per byte.
//
// Knobs for A/B runs (the ratios against the previous state come from the
// same rounds):
//
//	RELAY_COST_TARGETS=REGEXP   only targets whose name matches
//	RELAY_COST_SIZE=MiB         bytes per fetch (default 256; microsocks
//	                            fetches 1/8 of it)
//	RELAY_COST_AB='NAME=[K=V ...] [/path/to/gigapath] [relay flags...];...'
//	                            more gigapath relays on the same bed, each
//	                            compared with gigapath (the tree under test):
//	                            another build, an environment, more flags
//	RELAY_COST_BED_B='ROLE:command;...'
//	                            a second bed set up like the first, then
//	                            changed by these shell commands (ROLE =
//	                            client, router or server: the namespace
//	                            they run in); every target runs on both,
//	                            and T@B is compared with T
func BenchmarkRelayCost(b *testing.B) {
	testbed.NeedRoot(b)
	for _, rate := range []string{"", "1170mbit"} {
		name := "unshaped"
		if rate != "" {
			name = rate
		}
		b.Run(name, func(b *testing.B) { runCost(b, rate) })
	}
}

// costBed is one client → router → server chain. Every bed uses the same
// addresses in namespaces of its own.
type costBed struct {
	tag        string // "" for the first bed, "@B" for the changed one
	cl, rt, sv *testbed.NetNS
}

const (
	costOrigin      = "10.90.2.2:5001" // TCP, size bytes
	costOriginSmall = "10.90.2.2:5002" // TCP, size/8 bytes (slow targets)
	costOriginMP    = "10.90.2.2:5003" // MPTCP listener, size bytes, cubic
	costRouter      = "10.90.1.2"
)

func newCostBed(b *testing.B, tag, rate string, size int64, setup []string) *costBed {
	bd := &costBed{tag: tag, cl: newNS(b, "bc"), rt: newNS(b, "br"), sv: newNS(b, "bs")}
	for _, step := range []error{
		testbed.Veth(bd.cl, "c0", bd.rt, "r0"), testbed.Veth(bd.rt, "r1", bd.sv, "s0"),
		bd.cl.AddAddr("c0", "10.90.1.1/24"), bd.rt.AddAddr("r0", costRouter+"/24"),
		bd.rt.AddAddr("r1", "10.90.2.1/24"), bd.sv.AddAddr("s0", "10.90.2.2/24"),
		bd.rt.Sysctl("net.ipv4.ip_forward", "1"),
	} {
		if step != nil {
			b.Fatal(step)
		}
	}
	bd.cl.MustRun("ip", "route", "add", "default", "via", costRouter)
	bd.sv.MustRun("ip", "route", "add", "default", "via", "10.90.2.1")
	if rate != "" {
		// KT's GIGA Path link size on the router's egress towards the
		// client, which every path crosses.
		bd.rt.MustRun("tc", "qdisc", "replace", "dev", "r0", "root", "tbf", "rate", rate,
			"burst", "1462500", "latency", "50ms")
	}
	for _, s := range setup {
		role, cmd, ok := strings.Cut(strings.TrimSpace(s), ":")
		ns := map[string]*testbed.NetNS{"client": bd.cl, "router": bd.rt, "server": bd.sv}[role]
		if !ok || ns == nil || strings.TrimSpace(cmd) == "" {
			b.Fatalf("RELAY_COST_BED_B: %q: want ROLE:command with ROLE client, router or server", s)
		}
		if _, err := ns.Run("sh", "-c", cmd); err != nil {
			b.Fatalf("RELAY_COST_BED_B: %v", err)
		}
	}
	bulkServer(b, bd.sv, costOrigin, size)
	bulkServer(b, bd.sv, costOriginSmall, size/8)
	// The MPTCP rows send with cubic, as docs/relay.md recommends for the
	// MPTCP hop: these namespaces inherit the host's bbr, with which one
	// MPTCP connection over these veths stalls for an MPTCP-level
	// retransmission timeout (~200 ms) again and again (30-90 MB/s).
	mptcpServer(b, bd.sv, costOriginMP, size, "cubic")
	return bd
}

// costTarget is one way to fetch from the origin.
type costTarget struct {
	name, ref string // ref: the target the ratios compare with
	bed       *costBed
	dial      string // what the client connects to
	socks     bool   // SOCKS5 CONNECT to dst after connecting
	dst       string // the origin address (SOCKS5 destination)
	mptcp     bool   // the client speaks MPTCP
	size      int64
	port      string   // the relay's listening port ("" for direct)
	args, env []string // the relay's command line and extra environment
	pid       int

	secs, cpu []float64       // per round: seconds, relay CPU seconds
	ends      []float64       // per round: CPU seconds of this process (client and origin)
	ttfb      []time.Duration // per round: connect + handshake + first byte
}

func costTargets(b *testing.B, bd *costBed, size int64) []*costTarget {
	bin := gigapathBin(b)
	dir := b.TempDir()
	dconf := filepath.Join(dir, "danted.conf")
	hconf := filepath.Join(dir, "haproxy.cfg")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	write(dconf, `logoutput: stderr
internal: `+costRouter+` port = 1083
external: 10.90.2.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 10.90.1.0/24 to: 0.0.0.0/0 }
socks pass { from: 10.90.1.0/24 to: 0.0.0.0/0 }
`)
	// HAProxy is a TCP forwarder, not a SOCKS server: its frontend forwards
	// every connection to the origin, where gigapath reads the origin from
	// a SOCKS5 request first (the ttfb column shows what that costs).
	write(hconf, `global
    maxconn 256
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend relay
    bind `+costRouter+`:1084
    default_backend origin
backend origin
    server origin `+costOrigin+`
`)
	relayArgs := func(port string) []string {
		return []string{bin, "relay", "--listen", costRouter + ":" + port, "--allow-client", "10.90.1.0/24"}
	}
	socksTo := func(port string) string { return costRouter + ":" + port }
	ts := []*costTarget{
		{name: "direct", ref: "direct", dial: costOrigin},
		{name: "gigapath", ref: "direct", dial: socksTo("1081"), socks: true, dst: costOrigin, port: "1081", args: relayArgs("1081")},
		{name: "haproxy", ref: "gigapath", dial: socksTo("1084"), port: "1084", args: []string{"haproxy", "-db", "-f", hconf}},
		{name: "dante", ref: "gigapath", dial: socksTo("1083"), socks: true, dst: costOrigin, port: "1083",
			args: []string{"danted", "-f", dconf, "-p", filepath.Join(dir, "pid"), "-N", "1"}},
		{name: "microsocks", ref: "gigapath", dial: socksTo("1082"), socks: true, dst: costOriginSmall, size: size / 8, port: "1082",
			args: []string{"microsocks", "-i", costRouter, "-p", "1082"}},
		// The relay as deployed: the client's hop is MPTCP (the relay's
		// listener is MPTCP in every row; a TCP client falls back), with
		// --congestion cubic like the origin of direct-mptcp.
		{name: "direct-mptcp", ref: "direct", dial: costOriginMP, mptcp: true},
		{name: "gigapath-mptcp", ref: "direct-mptcp", dial: socksTo("1085"), socks: true, dst: costOrigin, mptcp: true, port: "1085",
			args: append(relayArgs("1085"), "--congestion", "cubic")},
	}
	for i, spec := range splitList(os.Getenv("RELAY_COST_AB")) {
		name, def, ok := strings.Cut(spec, "=")
		if !ok || name == "" {
			b.Fatalf("RELAY_COST_AB: %q: want NAME=[K=V ...] [/path/to/gigapath] [flags...]", spec)
		}
		port := strconv.Itoa(1090 + i)
		t := &costTarget{name: name, ref: "gigapath", dial: socksTo(port), socks: true, dst: costOrigin, port: port, args: relayArgs(port)}
		f := strings.Fields(def)
		for len(f) > 0 && strings.Contains(f[0], "=") && !strings.HasPrefix(f[0], "-") {
			t.env, f = append(t.env, f[0]), f[1:]
		}
		if len(f) > 0 && strings.HasPrefix(f[0], "/") {
			t.args[0], f = f[0], f[1:]
		}
		t.args = append(t.args, f...)
		ts = append(ts, t)
	}
	for _, t := range ts {
		t.bed = bd
		if t.size == 0 {
			t.size = size
		}
	}
	return ts
}

func splitList(s string) (out []string) {
	for _, e := range strings.Split(s, ";") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func runCost(b *testing.B, rate string) {
	size := int64(256)
	if v := os.Getenv("RELAY_COST_SIZE"); v != "" {
		var err error
		if size, err = strconv.ParseInt(v, 10, 64); err != nil || size < 8 {
			b.Fatalf("RELAY_COST_SIZE=%q: want MiB >= 8", v)
		}
	}
	size <<= 20
	filter := regexp.MustCompile(os.Getenv("RELAY_COST_TARGETS"))
	beds := []*costBed{newCostBed(b, "", rate, size, nil)}
	if v := os.Getenv("RELAY_COST_BED_B"); v != "" {
		beds = append(beds, newCostBed(b, "@B", rate, size, splitList(v)))
	}
	var targets []*costTarget
	for _, bd := range beds {
		for _, t := range costTargets(b, bd, size) {
			if !filter.MatchString(t.name) {
				continue
			}
			if bd.tag != "" {
				t.ref = t.name
				t.name += bd.tag
			}
			targets = append(targets, t)
		}
	}
	started := map[string]int{} // bed tag + port → pid
	for _, t := range targets {
		key := t.bed.tag + t.port
		if t.port == "" {
			continue
		}
		if pid, ok := started[key]; ok {
			t.pid = pid
			continue
		}
		if _, err := exec.LookPath(t.args[0]); err != nil {
			b.Fatalf("%s: %s not installed (.ci/install-deps installs it)", t.name, t.args[0])
		}
		p := start(b, t.bed.rt, append([]string{"env"}, append(t.env, t.args...)...)...)
		waitListen(b, t.bed.rt, t.port)
		t.pid = p.cmd.Process.Pid
		started[key] = t.pid
	}
	for _, t := range targets { // warm up
		costFetch(b, t)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range targets {
			t := targets[(i+j)%len(targets)]
			c0, e0 := procTreeCPU(t.pid), procCPU(os.Getpid())
			t0 := time.Now()
			ttfb := costFetch(b, t)
			t.secs = append(t.secs, time.Since(t0).Seconds())
			t.cpu = append(t.cpu, procTreeCPU(t.pid)-c0)
			t.ends = append(t.ends, procCPU(os.Getpid())-e0)
			t.ttfb = append(t.ttfb, ttfb)
		}
	}
	b.StopTimer()
	reportCost(b, targets)
}

// costFetch fetches t.size bytes from the origin the way t says and
// returns the time from dialing to the first byte.
func costFetch(b *testing.B, t *costTarget) time.Duration {
	t0 := time.Now()
	var c net.Conn
	err := t.bed.cl.Do(func() (err error) {
		var d net.Dialer
		d.SetMultipathTCP(t.mptcp)
		c, err = d.Dial("tcp", t.dial)
		return err
	})
	if err != nil {
		b.Fatalf("%s: %v", t.name, err)
	}
	defer c.Close()
	if t.socks {
		a, _ := socks5.ParseAddr(t.dst)
		if _, err := relay.ClientHandshake(c, "", "", a); err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
	}
	buf := make([]byte, 1<<20)
	var n int64
	var ttfb time.Duration
	for {
		m, err := c.Read(buf)
		if n == 0 && m > 0 {
			ttfb = time.Since(t0)
		}
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
	}
	if n != t.size {
		b.Fatalf("%s: got %d bytes, want %d", t.name, n, t.size)
	}
	return ttfb
}

// reportCost reports every target's throughput and CPU per byte and its
// ratios against its reference, and logs them as a table with ranges.
func reportCost(b *testing.B, targets []*costTarget) {
	byName := map[string]*costTarget{}
	for _, t := range targets {
		byName[t.name] = t
	}
	var tab strings.Builder
	w := tabwriter.NewWriter(&tab, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "target\tMB/s (median)\trange\tCPU s/GB\tends CPU s/GB\tttfb ms\tvs\tthroughput ratio (median)\trange\tCPU/byte ratio\t")
	for _, t := range targets {
		mbs := make([]float64, len(t.secs))
		for i, s := range t.secs {
			mbs[i] = float64(t.size) / s / 1e6
		}
		tot := float64(t.size) * float64(len(t.secs))
		total := tot / sum(t.secs) / 1e6
		b.ReportMetric(total, t.name+"-MB/s")
		cpuGB := sum(t.cpu) / (tot / 1e9)
		cpuCol := "-"
		if t.pid != 0 {
			b.ReportMetric(cpuGB, t.name+"-cpu-s/GB")
			cpuCol = fmt.Sprintf("%.3f", cpuGB)
		}
		ms := make([]float64, len(t.ttfb))
		for i, d := range t.ttfb {
			ms[i] = d.Seconds() * 1e3
		}
		ends := sum(t.ends) / (tot / 1e9)
		b.ReportMetric(ends, t.name+"-ends-cpu-s/GB")
		fmt.Fprintf(w, "%s\t%.0f\t%.0f-%.0f\t%s\t%.3f\t%.2f\t", t.name, median(mbs), slices.Min(mbs), slices.Max(mbs), cpuCol, ends, median(ms))
		r := byName[t.ref]
		if r == nil || r == t {
			fmt.Fprintln(w, "\t\t\t\t")
			continue
		}
		// Paired by round: this target's throughput over the reference's.
		ratios := make([]float64, len(t.secs))
		for i := range t.secs {
			ratios[i] = (float64(t.size) / t.secs[i]) / (float64(r.size) / r.secs[i])
		}
		b.ReportMetric(median(ratios), t.name+"/"+r.name+"-thru")
		cpuRatio := "-"
		if t.pid != 0 && r.pid != 0 {
			rc := sum(r.cpu) / (float64(r.size) * float64(len(r.secs)) / 1e9)
			b.ReportMetric(cpuGB/rc, t.name+"/"+r.name+"-cpu")
			cpuRatio = fmt.Sprintf("%.2f", cpuGB/rc)
		}
		fmt.Fprintf(w, "%s\t%.3f\t%.2f-%.2f\t%s\t\n", r.name, median(ratios), slices.Min(ratios), slices.Max(ratios), cpuRatio)
	}
	w.Flush()
	b.Logf("%d rounds:\n%s", len(targets[0].secs), tab.String())
}

func sum(v []float64) (s float64) {
	for _, x := range v {
		s += x
	}
	return s
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// procTreeCPU returns the CPU seconds used so far by pid and all its
// descendants (procCPU of each), plus what the children they reaped used
// (dante's ends).
func procTreeCPU(pid int) float64 {
	if pid == 0 {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStat(p); f != nil {
			pp, _ := strconv.Atoi(f[1])
			children[pp] = append(children[pp], p)
		}
	}
	var total float64
	for todo := []int{pid}; len(todo) > 0; {
		p := todo[len(todo)-1]
		todo = append(todo[:len(todo)-1], children[p]...)
		total += procCPU(p)
		if f := procStat(p); f != nil {
			cu, _ := strconv.ParseInt(f[13], 10, 64)
			ck, _ := strconv.ParseInt(f[14], 10, 64)
			total += float64(cu+ck) / clkTck
		}
	}
	return total
}

// procCPU returns the CPU seconds process pid used so far, as the larger
// of two readings, each at most 10 ms short: the sum of its threads'
// schedstat run times (ns, but threads that exited are gone: microsocks
// ends one per connection, Go ends the threads namespaces were entered
// on) and utime+stime from /proc/PID/stat (exited threads included, 10 ms
// ticks).
func procCPU(pid int) float64 {
	var ns int64
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, tk := range tasks {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, tk.Name()))
		if err != nil {
			continue
		}
		v, _ := strconv.ParseInt(strings.Fields(string(st))[0], 10, 64)
		ns += v
	}
	var ticks int64
	if f := procStat(pid); f != nil {
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		ticks = u + k
	}
	return max(float64(ns)/1e9, float64(ticks)/clkTck)
}

// procStat returns the fields of /proc/PID/stat after the command name
// (f[1] is the parent, f[11] utime), or nil.
func procStat(pid int) []string {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(st)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
}

const clkTck = 100 // USER_HZ on Linux
