//go:build linux

package controller_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// daemonGoroutines lists the goroutines running code of the daemon's
// packages (the controller, its status and metrics servers, the interface
// watcher, the path-manager clients, the HTTP server of /metrics).
func daemonGoroutines() []string {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	var out []string
	for _, g := range strings.Split(b.String(), "\n\n") {
		for _, pkg := range []string{"gigapath/internal/controller.", "gigapath/internal/status.", "gigapath/internal/metrics.",
			"gigapath/internal/netmon.", "gigapath/pathmgr.", "net/http.(*Server).Serve", "net/http.(*conn).serve"} {
			if strings.Contains(g, pkg) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// Run joins every goroutine it started: after it returns, none of the
// daemon's is left (status socket and /metrics served and queried while
// it ran, priority steering so that the health sampler runs too).
func TestIntegrationRunJoinsGoroutines(t *testing.T) {
	b := testbed.UpT(t, testbed.Spec{})
	if left := daemonGoroutines(); len(left) != 0 {
		t.Fatalf("daemon goroutines before the test:\n%s", strings.Join(left, "\n\n"))
	}
	sock := filepath.Join(t.TempDir(), "status.sock")
	p, err := policy.Parse([]byte(strings.Replace(fmt.Sprintf(basePolicy, "priority", sock), `listen: ""`, `listen: "127.0.0.1:0"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	ctl, stop := runController(t, controller.Config{Policy: p, NetNS: b.Client.Name})
	query(t, sock)
	// A kept-alive HTTP connection: its server goroutine must end too.
	resp, err := http.Get("http://" + ctl.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	time.Sleep(1500 * time.Millisecond) // a health sample or two
	stop()
	if left := daemonGoroutines(); len(left) != 0 {
		t.Fatalf("goroutines left after Run returned:\n%s", strings.Join(left, "\n\n"))
	}
}
