//go:build linux

// Package demo is `gigapath demo` (`make demo`): it builds the testbed,
// serves a random file from the origin, downloads it from the client over
// MPTCP through the proxy while Wi-Fi goes down and comes back, and reports
// the aggregate rate, the handover gap and the checksum.
package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// StateFile records the demo's bed while it runs, so that `gigapath
// testbed down` finds it after a crash.
const StateFile = "/run/gigapath/demo.json"

// WorkDir is where a demo that records its bed in stateFile keeps its
// daemons' files (policy, status socket) while it runs, each demo in a
// directory of its own there: beside the record, so that `gigapath
// testbed down` removes them with the bed of a demo that was killed.
func WorkDir(stateFile string) string { return stateFile + ".d" }

// workDir makes a demo's directory in WorkDir(stateFile); done removes it,
// and WorkDir too once no demo has one there.
func workDir(stateFile string) (dir string, done func(), err error) {
	parent := WorkDir(stateFile)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", nil, err
	}
	// Short: the status socket's path must fit a sockaddr_un.
	if dir, err = os.MkdirTemp(parent, ""); err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir); os.Remove(parent) }, nil
}

// Ports used inside the bed's namespaces.
const (
	originPort = 8080
	proxyPort  = 1080
)

// Options tune the demo; the zero value of a field means its default.
type Options struct {
	WiFiRate string        // default "100mbit"
	LTERate  string        // default "50mbit"
	Size     int64         // bytes to download, default 60 MB
	FlapAt   float64       // share of the download at which wifi goes down, default 0.5
	FlapFor  time.Duration // how long wifi stays down, default 2 s
	Timeout  time.Duration // whole run, default 60 s
	// Progress receives the live progress lines (nil = none).
	Progress io.Writer
	// Live rewrites one progress line with \r instead of printing lines.
	Live bool
	// StateFile records the bed while the demo runs (default StateFile).
	StateFile string
	// Binary is a gigapath executable; with it the download goes through
	// two `gigapath relay` processes (the client's local SOCKS5 entry and
	// the proxy's relay). Without it, or when they do not start, a
	// built-in TCP forwarder on the proxy stands in, and Summary.Mode says
	// so.
	Binary string
}

func (o *Options) defaults() {
	if o.WiFiRate == "" {
		o.WiFiRate = "100mbit"
	}
	if o.LTERate == "" {
		o.LTERate = "50mbit"
	}
	if o.Size == 0 {
		o.Size = 60e6
	}
	if o.FlapAt == 0 {
		o.FlapAt = 0.5
	}
	if o.FlapFor == 0 {
		o.FlapFor = 2 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.StateFile == "" {
		o.StateFile = StateFile
	}
}

// Summary is the demo's result (printed on stdout, or as JSON with -j).
type Summary struct {
	Mode          string  `json:"mode"`
	PathManager   string  `json:"path_manager"`
	WiFiRate      string  `json:"wifi_rate"`
	LTERate       string  `json:"lte_rate"`
	LinkSumMbps   float64 `json:"link_sum_mbps"`
	Bytes         int64   `json:"bytes"`
	Seconds       float64 `json:"seconds"`
	AggregateMbps float64 `json:"aggregate_mbps"`
	// Before the handover: the rate from the first byte to wifi going
	// down, the steady two-path case.
	BeforeFlapMbps float64 `json:"before_flap_mbps"`
	Efficiency     float64 `json:"efficiency_before_flap"`
	WiFiBytes      uint64  `json:"wifi_bytes"`
	LTEBytes       uint64  `json:"lte_bytes"`
	// WiFiBytesAfterUp is what wifi carried after it came back: a new
	// wifi subflow joined the running connection.
	WiFiBytesAfterUp uint64  `json:"wifi_bytes_after_up"`
	MaxSubflows      int     `json:"max_subflows"`
	WiFiDownAt       float64 `json:"wifi_down_at_s"`
	WiFiUpAt         float64 `json:"wifi_up_at_s"`
	// HandoverGapMs is the longest time with no byte delivered to the
	// application after the first byte.
	HandoverGapMs float64 `json:"handover_gap_ms"`
	// MPTCP is true when the client's connection really is MPTCP (not a
	// fallback to TCP).
	MPTCP  bool   `json:"mptcp"`
	SHA256 string `json:"sha256"`
	// Namespaces the demo used (all removed when Run returns).
	Namespaces []string `json:"namespaces"`
	Verified   bool     `json:"verified"`
}

// Run runs the demo. Everything it creates is removed before it returns,
// also when ctx is cancelled (Ctrl-C).
func Run(ctx context.Context, o Options) (s *Summary, err error) {
	o.defaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	wifiBps, err := testbed.ParseRate(o.WiFiRate)
	if err != nil {
		return nil, fmt.Errorf("wifi rate: %w", err)
	}
	lteBps, err := testbed.ParseRate(o.LTERate)
	if err != nil {
		return nil, fmt.Errorf("lte rate: %w", err)
	}
	if o.Size <= 0 || o.FlapAt <= 0 || o.FlapAt >= 1 {
		return nil, fmt.Errorf("size %d must be > 0 and flap point %v inside (0, 1)", o.Size, o.FlapAt)
	}

	// Progress is written from several goroutines.
	o.Progress = &lockedWriter{w: o.Progress}
	logf := func(format string, args ...any) {
		if o.Live {
			// Clear the live progress line first.
			format = "\r\033[K" + format
		}
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
	logf("testbed: wifi %s + lte %s ...", o.WiFiRate, o.LTERate)
	bed, closeBed, err := upRecorded(ctx, testbed.Spec{WiFiRate: o.WiFiRate, LTERate: o.LTERate}, o.StateFile, logf)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := closeBed(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	// The proxy runs the in-kernel PM (it only accepts subflows).
	if _, err := bed.Proxy.Run("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4"); err != nil {
		return nil, err
	}
	// The client: the daemon (`gigapath run`, userspace PM, managed source
	// routing) when a binary is given and it starts; else the in-kernel PM
	// with both client addresses as subflow endpoints, the testbed's source
	// routing, and the demo moving wifi's endpoint on link down/up (what
	// the daemon automates).
	daemon := false
	pm := ""
	if o.Binary != "" {
		stopDaemon, err := startDaemon(ctx, bed, o.Binary, o.StateFile)
		switch {
		case err == nil:
			defer stopDaemon()
			daemon = true
			pm = "daemon: gigapath run (userspace PM, aggregate steering, managed source routing)"
		case ctx.Err() != nil:
			return nil, ctx.Err()
		default:
			pm = fmt.Sprintf("kernel PM (the daemon did not start: %v)", err)
			for _, m := range []string{"100", "200"} {
				bed.Client.Run("ip", "route", "del", "default", "metric", m)
			}
		}
	} else {
		pm = "kernel PM (no gigapath binary given for the daemon)"
	}
	wifiEndpoint := func(add bool) error {
		if add {
			_, err := bed.Client.Run("ip", "mptcp", "endpoint", "add", bed.WiFiAddr.String(), "dev", testbed.WiFiIf, "subflow")
			return err
		}
		id, err := endpointID(bed.Client, bed.WiFiAddr.String())
		if err != nil {
			return err
		}
		_, err = bed.Client.Run("ip", "mptcp", "endpoint", "delete", "id", strconv.Itoa(id))
		return err
	}
	if !daemon {
		if err := bed.SetupClientRouting(); err != nil {
			return nil, err
		}
		if _, err := bed.Client.Run("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4"); err != nil {
			return nil, err
		}
		if _, err := bed.Client.Run("ip", "mptcp", "endpoint", "add", bed.LTEAddr.String(), "dev", testbed.LTEIf, "subflow"); err != nil {
			return nil, err
		}
		if err := wifiEndpoint(true); err != nil {
			return nil, err
		}
	}
	logf("path manager: %s", pm)

	// Origin: an HTTP server with Size random bytes.
	data := randomData(o.Size)
	sum := sha256.Sum256(data)
	origin, err := serveOrigin(bed, data)
	if err != nil {
		return nil, err
	}
	defer origin.Close()

	// The chain: client app -> local relay (cli) -> MPTCP over wifi+lte ->
	// relay (prx) -> origin; or the forwarder when no relay can run.
	dial, mode, stopChain, err := startChain(ctx, bed, o.Binary, []*testbed.NetNS{bed.Proxy},
		net.JoinHostPort(bed.ProxyAddr.String(), strconv.Itoa(proxyPort)),
		"client app | SOCKS5 | gigapath relay (client, local entry) | MPTCP over wifi+lte | gigapath relay (proxy) | TCP | origin",
		"client app | MPTCP over wifi+lte | TCP forwarder on the proxy | origin")
	if err != nil {
		return nil, err
	}
	defer stopChain()
	logf("mode: %s", mode)

	tr := &http.Transport{DisableCompression: true, DialContext: dial}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+originTarget(bed)+"/data", nil)
	if err != nil {
		return nil, err
	}
	c0, err := bed.Counters()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download: origin answered %s", resp.Status)
	}

	var (
		got         atomic.Int64
		mu          sync.Mutex
		flapDown    time.Duration
		flapUp      time.Duration
		firstByte   time.Time
		lastByte    time.Time
		maxGap      time.Duration
		bytesAtDown int64
		mptcpSeen   bool
		cUp         map[testbed.Link]testbed.LinkCounters
	)
	flapErr := make(chan error, 1)
	var flapOnce sync.Once
	flap := func() {
		go func() {
			mu.Lock()
			flapDown = time.Since(start)
			bytesAtDown = got.Load()
			mu.Unlock()
			logf("%6.1fs  wifi DOWN", flapDown.Seconds())
			if err := bed.LinkDown(testbed.WiFi); err != nil {
				flapErr <- err
				return
			}
			if !daemon {
				if err := wifiEndpoint(false); err != nil {
					flapErr <- err
					return
				}
			}
			select {
			case <-ctx.Done():
				flapErr <- ctx.Err()
				return
			case <-time.After(o.FlapFor):
			}
			if err := bed.LinkUp(testbed.WiFi); err != nil {
				flapErr <- err
				return
			}
			// The kernel dropped wifi's default route with the link; the
			// daemon restores subflows, the demo (as DHCP would) the route.
			if daemon {
				err = mainDefaults(bed, testbed.WiFi)
			} else {
				err = wifiEndpoint(true)
			}
			if err != nil {
				flapErr <- err
				return
			}
			cu, _ := bed.Counters()
			mu.Lock()
			flapUp = time.Since(start)
			cUp = cu
			mu.Unlock()
			logf("%6.1fs  wifi UP", flapUp.Seconds())
			flapErr <- nil
		}()
	}

	// Progress: per-path rates from the client interfaces' counters.
	maxSub := 0
	done := make(chan struct{})
	var progWG sync.WaitGroup
	progWG.Add(1)
	go func() {
		defer progWG.Done()
		rates := &linkRates{bed: bed, prev: c0, at: time.Now()}
		tickUntil(done, func() {
			w, l, ok := rates.sample()
			if !ok {
				return
			}
			n := subflows(bed)
			mu.Lock()
			if n > maxSub {
				maxSub = n
			}
			mu.Unlock()
			line := fmt.Sprintf("%6.1fs  wifi %6.1f Mbit/s  lte %6.1f Mbit/s  subflows %d  %5.1f/%.1f MB",
				time.Since(start).Seconds(), w, l, n, float64(got.Load())/1e6, float64(o.Size)/1e6)
			if o.Live {
				fmt.Fprintf(o.Progress, "\r%s", line)
			} else {
				fmt.Fprintln(o.Progress, line)
			}
		})
	}()
	stopProgress := func() {
		select {
		case <-done:
		default:
			close(done)
			progWG.Wait()
			if o.Live {
				fmt.Fprintln(o.Progress)
			}
		}
	}
	defer stopProgress()

	h := sha256.New()
	buf := make([]byte, 256<<10)
	var readErr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			now := time.Now()
			mu.Lock()
			if firstByte.IsZero() {
				firstByte = now
				// The client's connection to the proxy must be MPTCP (the
				// kernel lists it in ss -M), not a fallback to TCP.
				mptcpSeen = mptcpConns(bed) > 0
			} else if g := now.Sub(lastByte); g > maxGap {
				maxGap = g
			}
			lastByte = now
			mu.Unlock()
			h.Write(buf[:n])
			if got.Add(int64(n)) >= int64(float64(o.Size)*o.FlapAt) {
				flapOnce.Do(flap)
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = err
			}
			break
		}
	}
	elapsed := time.Since(start)
	stopProgress()
	if readErr != nil {
		return nil, fmt.Errorf("download after %d of %d bytes: %w", got.Load(), o.Size, readErr)
	}
	// Wait for wifi to come back (it may still be down if the download
	// finished first) so the summary reports the whole handover.
	select {
	case err := <-flapErr:
		if err != nil {
			return nil, fmt.Errorf("wifi flap: %w", err)
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c1, err := bed.Counters()
	if err != nil {
		return nil, err
	}
	digest := h.Sum(nil)
	mu.Lock()
	defer mu.Unlock()
	s = &Summary{
		Mode:             mode,
		PathManager:      pm,
		WiFiRate:         o.WiFiRate,
		LTERate:          o.LTERate,
		LinkSumMbps:      float64(wifiBps+lteBps) / 1e6,
		Bytes:            got.Load(),
		Seconds:          elapsed.Seconds(),
		AggregateMbps:    float64(got.Load()) * 8 / elapsed.Seconds() / 1e6,
		WiFiBytes:        c1[testbed.WiFi].RxBytes - c0[testbed.WiFi].RxBytes,
		LTEBytes:         c1[testbed.LTE].RxBytes - c0[testbed.LTE].RxBytes,
		MaxSubflows:      maxSub,
		WiFiBytesAfterUp: c1[testbed.WiFi].RxBytes - cUp[testbed.WiFi].RxBytes,
		WiFiDownAt:       flapDown.Seconds(),
		WiFiUpAt:         flapUp.Seconds(),
		HandoverGapMs:    float64(maxGap.Microseconds()) / 1000,
		SHA256:           hex.EncodeToString(digest),
		MPTCP:            mptcpSeen,
		Verified:         got.Load() == o.Size && bytes.Equal(digest, sum[:]),
	}
	for _, n := range bed.Namespaces() {
		s.Namespaces = append(s.Namespaces, n.Name)
	}
	if d := flapDown - firstByte.Sub(start); d > 0 {
		s.BeforeFlapMbps = float64(bytesAtDown) * 8 / d.Seconds() / 1e6
		s.Efficiency = s.BeforeFlapMbps / s.LinkSumMbps
	}
	if !s.Verified {
		return s, fmt.Errorf("download NOT verified: got %d of %d bytes, sha256 %s, want %s", s.Bytes, o.Size, s.SHA256, hex.EncodeToString(sum[:]))
	}
	return s, nil
}

// String is the human summary.
func (s *Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode:           %s\n", s.Mode)
	fmt.Fprintf(&b, "path manager:   %s\n", s.PathManager)
	fmt.Fprintf(&b, "links:          wifi %s + lte %s = %.0f Mbit/s\n", s.WiFiRate, s.LTERate, s.LinkSumMbps)
	fmt.Fprintf(&b, "downloaded:     %.1f MB in %.2f s = %.1f Mbit/s overall (wifi down %.1fs..%.1fs)\n",
		float64(s.Bytes)/1e6, s.Seconds, s.AggregateMbps, s.WiFiDownAt, s.WiFiUpAt)
	fmt.Fprintf(&b, "before handover: %.1f Mbit/s = %.0f %% of the sum of link rates\n", s.BeforeFlapMbps, 100*s.Efficiency)
	fmt.Fprintf(&b, "per path:       wifi %.1f MB (%.1f MB after it came back), lte %.1f MB (client interface counters), up to %d subflows\n",
		float64(s.WiFiBytes)/1e6, float64(s.WiFiBytesAfterUp)/1e6, float64(s.LTEBytes)/1e6, s.MaxSubflows)
	fmt.Fprintf(&b, "mptcp:          %v\n", s.MPTCP)
	fmt.Fprintf(&b, "handover gap:   %.0f ms (longest time with no byte delivered)\n", s.HandoverGapMs)
	ok := "OK"
	if !s.Verified {
		ok = "MISMATCH"
	}
	fmt.Fprintf(&b, "sha256:         %s %s\n", s.SHA256, ok)
	return b.String()
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// randomData returns n pseudo-random bytes (ChaCha8, random seed).
func randomData(n int64) []byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
	r := rand.NewChaCha8(seed)
	b := make([]byte, n)
	r.Read(b)
	return b
}

// linkRates turns the client's link counters into receive rates.
type linkRates struct {
	bed  *testbed.Bed
	prev map[testbed.Link]testbed.LinkCounters
	at   time.Time
}

// sample returns each link's receive rate in Mbit/s since the previous
// sample (ok false when the counters cannot be read).
func (r *linkRates) sample() (wifi, lte float64, ok bool) {
	cur, err := r.bed.Counters()
	if err != nil {
		return 0, 0, false
	}
	now := time.Now()
	dt := now.Sub(r.at).Seconds()
	wifi = float64(cur[testbed.WiFi].RxBytes-r.prev[testbed.WiFi].RxBytes) * 8 / dt / 1e6
	lte = float64(cur[testbed.LTE].RxBytes-r.prev[testbed.LTE].RxBytes) * 8 / dt / 1e6
	r.prev, r.at = cur, now
	return wifi, lte, true
}

// tickUntil calls fn every 500 ms until done is closed.
func tickUntil(done <-chan struct{}, fn func()) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		fn()
	}
}

// upRecorded builds a bed and records it in stateFile, so that `gigapath
// testbed down` finds it if the demo dies; closeBed removes both.
func upRecorded(ctx context.Context, spec testbed.Spec, stateFile string, logf func(string, ...any)) (bed *testbed.Bed, closeBed func() error, err error) {
	bed, err = testbed.Up(ctx, spec)
	if err != nil {
		return nil, nil, err
	}
	if err := bed.Save(stateFile); err != nil {
		logf("note: cannot record the bed in %s: %v", stateFile, err)
	}
	return bed, func() error {
		err := bed.Close()
		os.Remove(stateFile)
		return err
	}, nil
}

// forwarderDial dials the proxy's service address over MPTCP from the
// client namespace (the chain without relays).
func forwarderDial(bed *testbed.Bed) func(ctx context.Context, _, _ string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		var c net.Conn
		err := bed.Client.Do(func() error {
			d := net.Dialer{Timeout: 5 * time.Second}
			d.SetMultipathTCP(true)
			var err error
			c, err = d.DialContext(ctx, "tcp", net.JoinHostPort(bed.ProxyAddr.String(), strconv.Itoa(proxyPort)))
			return err
		})
		return c, err
	}
}

// startChain starts the proxy side of the download chain in servers, each
// listening on listen: `gigapath relay` processes and the client's local
// entry chained to the service address when bin is given and they start,
// else an in-process forwarder in each. It returns the client's dial, the
// mode line (relayMode or fwdMode, the latter prefixed with why) and what
// stops it all.
func startChain(ctx context.Context, bed *testbed.Bed, bin string, servers []*testbed.NetNS, listen, relayMode, fwdMode string) (dial func(ctx context.Context, network, addr string) (net.Conn, error), mode string, stop func(), err error) {
	why := "no gigapath binary given for the relays"
	if bin != "" {
		stopRelays, err := startRelays(ctx, bed, bin, servers, listen)
		if err == nil {
			if dial, err = socksDial(bed); err == nil {
				return dial, "relay: " + relayMode, stopRelays, nil
			}
			stopRelays()
		}
		if ctx.Err() != nil {
			return nil, "", nil, ctx.Err()
		}
		why = fmt.Sprintf("the relays did not start: %v", err)
	}
	var fwds []*forwarder
	stop = func() {
		for _, f := range fwds {
			f.Close()
		}
	}
	for _, n := range servers {
		f, err := serveForwarder(n, listen, originTarget(bed))
		if err != nil {
			stop()
			return nil, "", nil, err
		}
		fwds = append(fwds, f)
	}
	return forwarderDial(bed), "forwarder (" + why + "): " + fwdMode, stop, nil
}

// originTarget is the origin's HTTP server as host:port.
func originTarget(bed *testbed.Bed) string {
	return net.JoinHostPort(bed.OriginAddr.String(), strconv.Itoa(originPort))
}

// serveOrigin starts the origin's HTTP server in the origin namespace:
// /data is the data, /data?n=N its first N bytes.
func serveOrigin(bed *testbed.Bed, data []byte) (io.Closer, error) {
	var ln net.Listener
	err := bed.Origin.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(bed.OriginAddr.String(), strconv.Itoa(originPort)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("origin listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/data", func(w http.ResponseWriter, r *http.Request) {
		body := data
		if q := r.URL.Query().Get("n"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil || n < 0 || n > len(data) {
				http.Error(w, fmt.Sprintf("n=%q: want 0 to %d", q, len(data)), http.StatusBadRequest)
				return
			}
			body = data[:n]
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

// forwarder accepts MPTCP connections on the proxy and splices each to the
// origin over TCP.
type forwarder struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// serveForwarder accepts MPTCP connections in ns on listen and splices
// each to target over TCP, dialled from ns.
func serveForwarder(ns *testbed.NetNS, listen, target string) (*forwarder, error) {
	f := &forwarder{conns: map[net.Conn]struct{}{}}
	err := ns.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		var err error
		f.ln, err = lc.Listen(context.Background(), "tcp", listen)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("[%s] forwarder listen: %w", ns.Name, err)
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.handle(ns, c, target)
			}()
		}
	}()
	return f, nil
}

func (f *forwarder) track(c net.Conn, add bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

func (f *forwarder) handle(ns *testbed.NetNS, c net.Conn, target string) {
	defer c.Close()
	f.track(c, true)
	defer f.track(c, false)
	var up net.Conn
	// The proxy's sockets must be made in the proxy namespace.
	if err := ns.Do(func() (err error) {
		up, err = net.DialTimeout("tcp", target, 5*time.Second)
		return err
	}); err != nil {
		return
	}
	defer up.Close()
	f.track(up, true)
	defer f.track(up, false)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	wg.Wait()
}

// Close stops accepting, closes every open connection and waits for the
// goroutines.
func (f *forwarder) Close() error {
	err := f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return err
}

// subflows counts the client's established TCP subflows to the proxy.
func subflows(bed *testbed.Bed) int {
	out, err := bed.Client.Run("ss", "-Htn", "state", "established", "dst", bed.ProxyAddr.String())
	if err != nil {
		return 0
	}
	return lines(out)
}

// mptcpConns counts the client's established MPTCP connections.
func mptcpConns(bed *testbed.Bed) int {
	out, err := bed.Client.Run("ss", "-HMn", "state", "established")
	if err != nil {
		return 0
	}
	return lines(out)
}

// lines counts the non-empty lines of s.
func lines(s string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

// endpointID finds the id of the in-kernel PM endpoint with address addr.
func endpointID(n *testbed.NetNS, addr string) (int, error) {
	out, err := n.Run("ip", "mptcp", "endpoint", "show")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[0] == addr {
			for i := range f[:len(f)-1] {
				if f[i] == "id" {
					return strconv.Atoi(f[i+1])
				}
			}
		}
	}
	return 0, fmt.Errorf("no endpoint for %s in %s", addr, n.Name)
}
