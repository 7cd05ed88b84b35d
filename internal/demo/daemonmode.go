//go:build linux

package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gigapath/gigapath/internal/testbed"
)

// daemonPolicy is the client's policy for `gigapath run`: userspace PM,
// both links aggregated, managed source routing.
const daemonPolicy = `side: client
path_manager: userspace
steering: aggregate
interfaces:
  - name: ` + testbed.WiFiIf + `
    role: wifi
  - name: ` + testbed.LTEIf + `
    role: lte
routing:
  mode: managed
metrics:
  listen: ""
status_socket: %s
`

// mainDefaults gives the client main-table default routes via wifi
// (metric 100) and lte (metric 200), as DHCP would on a phone; the daemon
// adds the per-interface source routing itself.
func mainDefaults(bed *testbed.Bed, l testbed.Link) error {
	gw, ifname, metric := bed.ProxyWiFiAddr.String(), testbed.WiFiIf, "100"
	if l == testbed.LTE {
		gw, ifname, metric = bed.ProxyLTEAddr.String(), testbed.LTEIf, "200"
	}
	_, err := bed.Client.Run("ip", "route", "replace", "default", "via", gw, "dev", ifname, "metric", metric)
	return err
}

// startDaemon runs `gigapath run` in the client namespace and waits until
// it has installed its source rule for the lte address.
func startDaemon(ctx context.Context, bed *testbed.Bed, bin string) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "gigapath-demo-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	cfg := filepath.Join(dir, "policy.yaml")
	sock := filepath.Join(dir, "status.sock")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(daemonPolicy, sock)), 0o600); err != nil {
		return nil, err
	}
	for _, l := range testbed.Links {
		if err := mainDefaults(bed, l); err != nil {
			return nil, err
		}
	}
	p, err := startProc(ctx, bed.Client, bin, []string{"run", "--config", cfg, "--metrics-listen", "-", "--state-dir", ""}, func() error {
		out, err := bed.Client.Run("ip", "rule", "show")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "from "+bed.LTEAddr.String()+" lookup") {
			return fmt.Errorf("no source rule for %s yet", bed.LTEAddr)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return func() { p.stop(); os.RemoveAll(dir) }, nil
}
