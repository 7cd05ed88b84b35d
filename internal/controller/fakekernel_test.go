package controller

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/routing"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// fakeKernel is the kernel as the decision core sees it (PM, kernelPM,
// inventory, router, the scheduler sysctl), recording what it is asked.
type fakeKernel struct {
	cmds      []string // userspace PM commands
	limits    []string
	endpoints []pathmgr.Endpoint
	epCmds    []string
	conns     []pathmgr.Connection
	// connAddrs are the local addresses of each userspace-PM
	// connection (ConnectionAddrs), connAddrsErr its error.
	connAddrs    map[uint32][]pathmgr.Endpoint
	connAddrsErr error
	ensured      map[int]routing.Path
	cleanups     int
	routers      []policy.Routing
	scheds       []string
	sysctls      map[string]string // file -> value; a file not in it reads as "1"
	// listening are the join listeners open, listenErr what opening one
	// fails with.
	listening map[netip.AddrPort]*fakeListener
	listenErr map[netip.AddrPort]error
	addErr    map[netip.Addr]error // what AddEndpoint fails with
	createErr error                // what CreateSubflow fails with (after recording it)
}

// fakeListener is a listener that accepts nothing until it is closed.
type fakeListener struct {
	ap   netip.AddrPort
	done chan struct{}
	once sync.Once
	k    *fakeKernel
}

func (l *fakeListener) Accept() (net.Conn, error) { <-l.done; return nil, net.ErrClosed }
func (l *fakeListener) Close() error {
	l.once.Do(func() { close(l.done); delete(l.k.listening, l.ap) })
	return nil
}
func (l *fakeListener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.ap) }

func (k *fakeKernel) listen(_ string, ap netip.AddrPort, _ string) (net.Listener, error) {
	if err := k.listenErr[ap]; err != nil {
		return nil, err
	}
	l := &fakeListener{ap: ap, done: make(chan struct{}), k: k}
	k.listening[ap] = l
	return l, nil
}

// listens lists the open join listeners, sorted.
func (k *fakeKernel) listens() []string {
	var out []string
	for ap := range k.listening {
		out = append(out, ap.String())
	}
	slices.Sort(out)
	return out
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{ensured: map[int]routing.Path{}, sysctls: map[string]string{},
		listening: map[netip.AddrPort]*fakeListener{}, listenErr: map[netip.AddrPort]error{}}
}

func (k *fakeKernel) CreateSubflow(_ uint32, l pathmgr.Endpoint, dst netip.AddrPort) error {
	k.cmds = append(k.cmds, fmt.Sprintf("create %d>%s id %d backup %v", l.IfIndex, dst, l.ID, l.Flags&pathmgr.FlagBackup != 0))
	return k.createErr
}
func (k *fakeKernel) DestroySubflow(_ uint32, sf pathmgr.Subflow) error {
	k.cmds = append(k.cmds, fmt.Sprintf("destroy %s>%s", sf.Local, sf.Remote))
	return nil
}
func (k *fakeKernel) SetSubflowBackup(_ uint32, sf pathmgr.Subflow, b bool) error {
	k.cmds = append(k.cmds, fmt.Sprintf("backup %s %v", sf.Local, b))
	return nil
}
func (k *fakeKernel) Announce(_ uint32, e pathmgr.Endpoint) error {
	k.cmds = append(k.cmds, fmt.Sprintf("announce %s", netip.AddrPortFrom(e.Addr, e.Port)))
	return nil
}
func (k *fakeKernel) Remove(_ uint32, id uint8) error {
	k.cmds = append(k.cmds, fmt.Sprintf("remove %d", id))
	return nil
}

func (k *fakeKernel) SetLimits(u pathmgr.LimitsUpdate) error {
	k.limits = append(k.limits, fmt.Sprintf("subflows %d add_addr_accepted %d", *u.Subflows, *u.AddAddrAccepted))
	return nil
}
func (k *fakeKernel) Endpoints() ([]pathmgr.Endpoint, error) { return slices.Clone(k.endpoints), nil }
func (k *fakeKernel) AddEndpoint(e pathmgr.Endpoint) error {
	if err := k.addErr[e.Addr]; err != nil {
		return err
	}
	for _, o := range k.endpoints {
		if o.ID == e.ID || o.Addr == e.Addr {
			return fmt.Errorf("endpoint %d %s exists", o.ID, o.Addr)
		}
	}
	k.endpoints = append(k.endpoints, e)
	if e.Port != 0 {
		k.epCmds = append(k.epCmds, fmt.Sprintf("add %d %s port %d dev %d flags %s", e.ID, e.Addr, e.Port, e.IfIndex, e.Flags))
	} else {
		k.epCmds = append(k.epCmds, fmt.Sprintf("add %d %s dev %d", e.ID, e.Addr, e.IfIndex))
	}
	return nil
}
func (k *fakeKernel) DeleteEndpoint(id uint8, addr netip.Addr) error {
	k.endpoints = slices.DeleteFunc(k.endpoints, func(e pathmgr.Endpoint) bool { return e.ID == id })
	k.epCmds = append(k.epCmds, fmt.Sprintf("del %d %s", id, addr))
	return nil
}
func (k *fakeKernel) ConnectionAddrs(token uint32) ([]pathmgr.Endpoint, error) {
	return k.connAddrs[token], k.connAddrsErr
}

func (k *fakeKernel) Connections(pathmgr.ListOptions) ([]pathmgr.Connection, error) {
	return slices.Clone(k.conns), nil
}

func (k *fakeKernel) newRouter(r policy.Routing) (router, error) {
	k.routers = append(k.routers, r)
	return fakeRouter{k}, nil
}

func (k *fakeKernel) useScheduler(_, name string) error {
	k.scheds = append(k.scheds, name)
	return nil
}

func (k *fakeKernel) sysctl(_, file, value, onlyIf string) (string, error) {
	prev, ok := k.sysctls[file]
	if !ok {
		prev = "1"
	}
	if onlyIf == "" || prev == onlyIf {
		k.sysctls[file] = value
	}
	return prev, nil
}

func (k *fakeKernel) take() []string { c := k.cmds; k.cmds = nil; slices.Sort(c); return c }

type fakeRouter struct{ k *fakeKernel }

func (r fakeRouter) Ensure(p routing.Path) error { r.k.ensured[p.Index] = p; return nil }
func (r fakeRouter) Prune([]int) error           { return nil }
func (r fakeRouter) Cleanup() error              { r.k.cleanups++; clear(r.k.ensured); return nil }
func (r fakeRouter) Close() error                { return nil }

// The fake namespace: wifi0 (2, 10.1.1.2, default route via 10.1.1.1),
// lte0 (3, 10.1.2.2 and fe80::2) and eth0 (4, 10.1.4.2), all up.
var (
	fakeRemote = netip.MustParseAddrPort("10.0.0.1:443")
	fakePeer   = netip.MustParseAddrPort("10.0.9.1:443")
	fakeWiFi   = netip.MustParseAddrPort("10.1.1.2:40000")
	fakeLTE    = netip.MustParseAddrPort("10.1.2.2:40001")
)

func fakeNetState() netmon.State {
	link := func(i int, n string) netmon.Link { return netmon.Link{Index: i, Name: n, AdminUp: true, OperUp: true} }
	addr := func(i int, p string) netmon.Addr { return netmon.Addr{Index: i, Prefix: netip.MustParsePrefix(p)} }
	return netmon.State{
		Links: map[int]netmon.Link{2: link(2, "wifi0"), 3: link(3, "lte0"), 4: link(4, "eth0")},
		Addrs: map[int][]netmon.Addr{2: {addr(2, "10.1.1.2/24")}, 3: {addr(3, "10.1.2.2/24"), addr(3, "fe80::2/64")},
			4: {addr(4, "10.1.4.2/24")}},
		DefaultRoutes: map[int][]netmon.Route{2: {{Index: 2, Family: 2, Gateway: netip.MustParseAddr("10.1.1.1")}}},
	}
}

// fakeController is a controller over fakeKernel in the fake namespace,
// set up as Run would (without running it), logging to log, with one
// established connection: a client one (wifi initial subflow, lte
// subflow, a peer address announced) or, with side: server, an accepted
// one.
func fakeController(t testing.TB, yaml string, log *testbed.LockedBuffer) (*Controller, *fakeKernel, *conn) {
	t.Helper()
	p, err := policy.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("policy:\n%s\n%v", yaml, err)
	}
	c, err := New(Config{Policy: p, Metrics: metrics.New(), Logger: NewLogger(log, p.Log)})
	if err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel()
	c.pm, c.kpm, c.inv, c.newRouter, c.useScheduler, c.sysctl = k, k, k, k.newRouter, k.useScheduler, k.sysctl
	c.lst.listen = k.listen
	t.Cleanup(c.lst.close)
	if p.Routing.Mode == policy.RoutingManaged {
		c.rt = fakeRouter{k}
	}
	c.netRaw = fakeNetState
	c.netSt = c.view(c.netRaw())
	c.ifs = buildIfaces(p, c.netSt, nil, c.now())
	c.sampler = newSampler(k, c.now, func(string, time.Duration) {})
	c.publishAddrs()
	c.ppFailed = true // no BPF here: the desired per-address policy is what is checked
	c.ensureRouting(true)
	c.applyKernelPM()
	c.syncListeners()

	// One connection, adopted from the inventory as at a start (its
	// subflows' ids are the allocator's then).
	if p.Side == policy.SideServer {
		k.conns = []pathmgr.Connection{
			{Local: netip.MustParseAddrPort("0.0.0.0:443"), State: 10}, // the listener
			{Token: 1, Local: netip.MustParseAddrPort("10.1.1.2:443"), Remote: netip.MustParseAddrPort("10.9.9.9:50000"), State: 1,
				Subflows: []pathmgr.SubflowInfo{{Local: netip.MustParseAddrPort("10.1.1.2:443"), Remote: netip.MustParseAddrPort("10.9.9.9:50000"), IfIndex: 2, State: 1}}},
		}
	} else {
		k.conns = []pathmgr.Connection{{Token: 1, Local: fakeWiFi, Remote: fakeRemote, State: 1, Subflows: []pathmgr.SubflowInfo{
			{Local: fakeWiFi, Remote: fakeRemote, IfIndex: 2, State: 1},
			{Local: fakeLTE, Remote: fakeRemote, IfIndex: 3, LocalID: 1, State: 1},
		}}}
	}
	c.adopt(k.conns, c.now())
	cn := c.conns[1]
	if p.Side != policy.SideServer {
		cn.addPeer(5, fakePeer)
	}
	c.reconcileAll()
	k.take()
	return c, k, cn
}
