//go:build linux

package demo

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/proxy"

	"github.com/gigapath/gigapath/internal/testbed"
)

// localRelayAddr is where the client's local relay listens (in the client
// namespace).
const localRelayAddr = "127.0.0.1:1080"

// relayProc is a `gigapath relay` running in a namespace.
type relayProc struct {
	name string
	cmd  *exec.Cmd
	out  *testbed.LockedBuffer
	done chan struct{}
	err  error
}

// startRelay runs `bin relay args...` in n and waits until it accepts on
// addr.
func startRelay(ctx context.Context, n *testbed.NetNS, bin, addr string, args ...string) (*relayProc, error) {
	// cubic: on the MPTCP hop bbr leaves 3-11 % of the two links unused.
	return startProc(ctx, n, bin, append([]string{"relay", "--listen", addr, "--drain-timeout", "1s", "--congestion", "cubic"}, args...), func() error {
		var c net.Conn
		err := n.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", addr, time.Second)
			return err
		})
		if err == nil {
			c.Close()
		}
		return err
	})
}

// readyTimeout bounds how long startProc waits for a process to be ready
// (tests under emulation raise it).
var readyTimeout = 5 * time.Second

// startProc runs bin args... in n and waits (readyTimeout at most) until
// ready returns nil.
func startProc(ctx context.Context, n *testbed.NetNS, bin string, args []string, ready func() error) (*relayProc, error) {
	return startProcEnv(ctx, n, bin, args, nil, ready)
}

// startProcEnv is startProc with env (KEY=VALUE) added to the process's
// environment.
func startProcEnv(ctx context.Context, n *testbed.NetNS, bin string, args, env []string, ready func() error) (*relayProc, error) {
	p := &relayProc{name: n.Name, out: &testbed.LockedBuffer{}, done: make(chan struct{})}
	p.cmd = n.Command(context.Background(), bin, args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// ip netns exec execs the relay; if the demo dies, so does it. The
	// death signal follows the forking *thread*, so Start and Wait run on
	// one locked thread that lives as long as the relay.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(readyTimeout); ; {
		err := ready()
		if err == nil {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("[%s] gigapath %s exited: %v: %s", n.Name, strings.Join(args, " "), p.err, p.out)
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("[%s] gigapath %s not ready after %v: %v: %s", n.Name, strings.Join(args, " "), readyTimeout, err, p.out)
		}
	}
}

// stop sends SIGTERM, then SIGKILL after 2 s, and waits.
func (p *relayProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// startRelays starts a relay on listen in each of servers (MPTCP listener,
// clients of the two access subnets only) and the client's local entry
// chained to the service address (the proxy's, or the fleet balancer's).
func startRelays(ctx context.Context, bed *testbed.Bed, bin string, servers []*testbed.NetNS, listen string) (stop func(), err error) {
	var procs []*relayProc
	stop = func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}
	for _, n := range servers {
		srv, err := startRelay(ctx, n, bin, listen,
			"--allow-client", "10.201.1.0/24", "--allow-client", "10.201.2.0/24")
		if err != nil {
			stop()
			return nil, err
		}
		procs = append(procs, srv)
	}
	service := net.JoinHostPort(bed.ProxyAddr.String(), strconv.Itoa(proxyPort))
	entry, err := startRelay(ctx, bed.Client, bin, localRelayAddr, "--upstream", "socks5://"+service)
	if err != nil {
		stop()
		return nil, err
	}
	procs = append(procs, entry)
	return stop, nil
}

// nsDialer dials from a namespace (for x/net/proxy's SOCKS5 client).
type nsDialer struct{ n *testbed.NetNS }

func (d nsDialer) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := d.n.Do(func() (err error) {
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	})
	return c, err
}

// socksDial returns a DialContext for http.Transport that connects through
// the client's local SOCKS5 relay.
func socksDial(bed *testbed.Bed) (func(ctx context.Context, network, addr string) (net.Conn, error), error) {
	d, err := proxy.SOCKS5("tcp", localRelayAddr, nil, nsDialer{bed.Client})
	if err != nil {
		return nil, err
	}
	cd, ok := d.(proxy.ContextDialer)
	if !ok {
		return nil, fmt.Errorf("x/net/proxy SOCKS5 dialer has no DialContext")
	}
	return cd.DialContext, nil
}
