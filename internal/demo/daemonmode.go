//go:build linux

package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gigapath/gigapath/internal/status"
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
func startDaemon(ctx context.Context, bed *testbed.Bed, bin, stateFile string) (stop func(), err error) {
	dir, done, err := workDir(stateFile)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			done()
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
	return func() { p.stop(); done() }, nil
}

// fleetNodePolicy is every node's policy for `gigapath run`: one file,
// the node's own address from the environment (${NODE_ADDR}, as the
// Kubernetes manifest takes status.hostIP), announced to every
// connection, joins to the balanced initial address refused (the C flag).
const fleetNodePolicy = `side: server
path_manager: userspace
initial_address_joins: refuse
routing: off
interfaces:
  - name: ` + testbed.NodeUplinkIf + `
    role: ethernet
announce:
  - address: ${NODE_ADDR}
metrics:
  listen: ""
status_socket: ${STATUS_SOCKET}
`

// fleetClientPolicy is the client's: the userspace PM opening its lte
// subflow to the address the node announces (the bed routes by source).
const fleetClientPolicy = `side: client
path_manager: userspace
steering: aggregate
peer_addresses: use
interfaces:
  - name: ` + testbed.WiFiIf + `
    role: wifi
  - name: ` + testbed.LTEIf + `
    role: lte
routing: off
metrics:
  listen: ""
status_socket: %s
`

// startFleetDaemons runs `gigapath run` on every node (fleetNodePolicy)
// and on the client, each ready once its status socket answers (after
// its first reconciliation; a node has set the C flag by then).
func startFleetDaemons(ctx context.Context, bed *testbed.Bed, bin, stateFile string) (stop func(), err error) {
	dir, done, err := workDir(stateFile)
	if err != nil {
		return nil, err
	}
	var procs []*relayProc
	stop = func() {
		for _, p := range procs {
			p.stop()
		}
		done()
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	nodeCfg := filepath.Join(dir, "node.yaml")
	cliSock := filepath.Join(dir, "client.sock")
	cliCfg := filepath.Join(dir, "client.yaml")
	if err := os.WriteFile(nodeCfg, []byte(fleetNodePolicy), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cliCfg, []byte(fmt.Sprintf(fleetClientPolicy, cliSock)), 0o600); err != nil {
		return nil, err
	}
	answers := func(sock string) func() error {
		return func() error {
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := status.Query(qctx, sock)
			return err
		}
	}
	args := func(cfg string) []string {
		return []string{"run", "--config", cfg, "--metrics-listen", "-", "--state-dir", ""}
	}
	for _, n := range bed.Nodes {
		sock := filepath.Join(dir, fmt.Sprintf("node%d.sock", n.Index))
		p, err := startProcEnv(ctx, n.NetNS, bin, args(nodeCfg), []string{"NODE_ADDR=" + n.Addr.String(), "STATUS_SOCKET=" + sock}, answers(sock))
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	p, err := startProc(ctx, bed.Client, bin, args(cliCfg), answers(cliSock))
	if err != nil {
		return nil, err
	}
	procs = append(procs, p)
	return stop, nil
}
