package kcheck

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/ebpf/cgroup"
	"github.com/gigapath/gigapath/ebpf/mptcpify"
	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/ebpf/sched"
	"github.com/gigapath/gigapath/pathmgr"
	"github.com/gigapath/gigapath/pathmgr/netns"
)

func run(cfg Config) ([]Item, error) {
	items := map[string]Item{}
	add := func(it Item) { items[it.Name] = it }

	add(kernelItem())

	// Items that depend on the namespace's settings.
	err := netns.Do(cfg.NetNS, func() error {
		add(mptcpItem())
		add(pathManagersItem())
		add(schedulersItem())
		for _, it := range familyItems() {
			add(it)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	add(diagItem(cfg))

	// Items that change state to find out (endpoints added, connections
	// opened) run in a scratch namespace that disappears afterwards.
	for _, it := range scratchItems() {
		add(it)
	}

	level, lerr := lockdown()
	add(lockdownItem(level, lerr))
	for _, p := range progTypes {
		add(progItem(p, level))
	}
	add(mptcpSchedItem())
	add(cgroupItem())
	add(mptcpifyItem())
	for _, it := range pathPolicyItems() {
		add(it)
	}

	out := make([]Item, 0, len(Names))
	for _, n := range Names {
		it, ok := items[n]
		if !ok {
			it = Item{Name: n, Value: "not probed", Consequence: "internal error: no probe ran for this item"}
		}
		out = append(out, it)
	}
	return out, nil
}

func kernelItem() Item {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return Item{Name: "kernel", Value: "unknown: uname: " + err.Error(), Consequence: "the report below is still probed feature by feature"}
	}
	return Item{
		Name:        "kernel",
		OK:          true,
		Value:       unix.ByteSliceToString(u.Release[:]),
		Consequence: "every item below is probed on this kernel, not inferred from its version",
	}
}

// inScratchNetNS runs fn on a thread moved to a new, empty network
// namespace with loopback up; the namespace goes away with the thread.
func inScratchNetNS(fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with us
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("create a scratch network namespace: %w", err)
			return
		}
		if err := loopbackUp(); err != nil {
			errc <- fmt.Errorf("scratch network namespace: %w", err)
			return
		}
		fn()
		errc <- nil
	}()
	return <-errc
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("read flags of lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// sysctl reads /proc/sys/net/mptcp/NAME in the calling thread's namespace;
// ok is false when the sysctl does not exist.
func sysctl(name string) (string, bool, error) {
	b, err := os.ReadFile("/proc/sys/net/mptcp/" + name)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return strings.TrimSpace(string(b)), true, nil
}

func mptcpItem() Item {
	it := Item{Name: "mptcp"}
	fd, serr := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
	if serr == nil {
		unix.Close(fd)
	}
	enabled, have, err := sysctl("enabled")
	switch {
	case serr == nil:
		it.OK = true
		it.Value = "enabled"
		if have {
			it.Value += " (net.mptcp.enabled=" + enabled + ")"
		}
		it.Consequence = "applications here can open MPTCP sockets (socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP) works)"
	case have && enabled == "0":
		it.Value = "disabled (net.mptcp.enabled=0)"
		it.Consequence = "MPTCP sockets are refused in this namespace; enable with: sysctl -w net.mptcp.enabled=1"
	case errors.Is(serr, unix.EPROTONOSUPPORT) || errors.Is(serr, unix.EINVAL) || !have:
		it.Value = "not available: socket(..., IPPROTO_MPTCP): " + serr.Error()
		it.Consequence = "this kernel has no MPTCP (CONFIG_MPTCP): gigapath can do nothing here"
	default:
		it.Value = "socket(..., IPPROTO_MPTCP) failed: " + serr.Error()
		it.Consequence = "MPTCP sockets cannot be opened here"
	}
	if err != nil {
		it.Value += fmt.Sprintf("; net.mptcp.enabled unreadable: %v", err)
	}
	return it
}

func pathManagersItem() Item {
	it := Item{Name: "path_managers"}
	avail, have, err := sysctl("available_path_managers") // 6.15+
	active, _, _ := sysctl("path_manager")
	if err != nil {
		it.Value = "unreadable: " + err.Error()
		it.Consequence = "cannot tell whether the userspace path manager is available"
		return it
	}
	if !have {
		// Before 6.15: pm_type (5.19+) selects 0 = kernel, 1 = userspace.
		pmType, havePM, _ := sysctl("pm_type")
		switch {
		case havePM:
			avail = "kernel userspace"
			active = map[string]string{"0": "kernel", "1": "userspace"}[pmType]
			if active == "" {
				active = "pm_type=" + pmType
			}
		default:
			if _, haveEnabled, _ := sysctl("enabled"); !haveEnabled {
				it.Value = "none (no net.mptcp sysctls)"
				it.Consequence = "no MPTCP here: no path manager"
				return it
			}
			avail = "kernel"
			active = "kernel"
		}
	}
	it.Value = avail
	if active != "" {
		it.Value += " (active: " + active + ")"
	}
	if strings.Contains(" "+avail+" ", " userspace ") {
		it.OK = true
		it.Consequence = "userspace PM available: gigapath announce/remove/subflow and per-connection control by the daemon work (select with net.mptcp.path_manager=userspace, older kernels net.mptcp.pm_type=1)"
	} else {
		it.Consequence = "only the in-kernel PM: gigapath can set endpoints and limits but not steer single connections"
	}
	return it
}

func schedulersItem() Item {
	it := Item{Name: "schedulers"}
	avail, have, err := sysctl("available_schedulers")
	active, _, _ := sysctl("scheduler")
	switch {
	case err != nil:
		it.Value = "unreadable: " + err.Error()
		it.Consequence = "cannot tell which packet schedulers exist"
	case !have:
		it.Value = "default (fixed: no net.mptcp.scheduler sysctl)"
		it.Consequence = "only the built-in scheduler runs; `gigapath sched use` can pick nothing else (Linux 6.3+ has the sysctl)"
	default:
		it.OK = true
		it.Value = avail + " (active: " + active + ")"
		it.Consequence = "`gigapath sched use NAME` picks among these per network namespace"
	}
	return it
}

// familyItems reads mptcp_pm's registration from the generic netlink
// controller: its version and the commands it offers.
func familyItems() []Item {
	fam := Item{Name: "mptcp_pm_family"}
	cmds := Item{Name: "pm_commands"}
	c, err := genetlink.Dial(nil)
	if err != nil {
		fam.Value = "cannot open generic netlink: " + err.Error()
		fam.Consequence = "gigapath's path-manager commands cannot work here"
		cmds.Value, cmds.Consequence = "not probed", fam.Consequence
		return []Item{fam, cmds}
	}
	defer c.Close()
	info, err := getFamily(c, pathmgr.GenlFamily)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
			fam.Value = "absent"
			fam.Consequence = "no MPTCP path-manager netlink API: gigapath endpoint/limits/monitor/announce/subflow cannot work (kernel without CONFIG_MPTCP)"
		} else {
			fam.Value = "lookup failed: " + err.Error()
			fam.Consequence = "gigapath's path-manager commands may not work"
		}
		cmds.Value, cmds.Consequence = "none", fam.Consequence
		return []Item{fam, cmds}
	}
	fam.OK = true
	fam.Value = fmt.Sprintf("%s version %d, id %d", pathmgr.GenlFamily, info.version, info.id)
	fam.Consequence = "gigapath endpoint, limits and monitor can talk to the path manager"

	var have, missing, extra []string
	known := map[uint32]bool{}
	for _, cmd := range pathmgr.Commands() {
		known[uint32(cmd)] = true
		if info.ops[uint32(cmd)] {
			have = append(have, pathmgr.CommandName(cmd))
		} else {
			missing = append(missing, pathmgr.CommandName(cmd))
		}
	}
	for op := range info.ops {
		if !known[op] {
			extra = append(extra, fmt.Sprintf("cmd-%d", op))
		}
	}
	cmds.Value = strings.Join(have, " ")
	if len(extra) > 0 {
		cmds.Value += " (unknown to gigapath: " + strings.Join(extra, " ") + ")"
	}
	if len(missing) == 0 {
		cmds.OK = true
		cmds.Consequence = "every path-manager command gigapath uses is offered"
	} else {
		cmds.Consequence = "missing " + strings.Join(missing, " ") + ": the gigapath commands using them fail on this kernel (userspace-PM commands need Linux 5.19+)"
	}
	return []Item{fam, cmds}
}

type familyInfo struct {
	id      uint16
	version uint32
	ops     map[uint32]bool
}

// getFamily sends CTRL_CMD_GETFAMILY itself: genetlink.Family does not
// expose the family's operations (CTRL_ATTR_OPS).
func getFamily(c *genetlink.Conn, name string) (familyInfo, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.CTRL_ATTR_FAMILY_NAME, name)
	b, err := ae.Encode()
	if err != nil {
		return familyInfo{}, err
	}
	msgs, err := c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: unix.CTRL_CMD_GETFAMILY, Version: 1},
		Data:   b,
	}, unix.GENL_ID_CTRL, netlink.Request)
	if err != nil {
		return familyInfo{}, err
	}
	if len(msgs) != 1 {
		return familyInfo{}, fmt.Errorf("controller answered %d messages for family %s, want 1", len(msgs), name)
	}
	return parseFamily(msgs[0].Data)
}

// parseFamily decodes a CTRL_CMD_NEWFAMILY message.
func parseFamily(data []byte) (familyInfo, error) {
	info := familyInfo{ops: map[uint32]bool{}}
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return info, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.CTRL_ATTR_FAMILY_ID:
			info.id = ad.Uint16()
		case unix.CTRL_ATTR_VERSION:
			info.version = ad.Uint32()
		case unix.CTRL_ATTR_OPS:
			ad.Nested(func(ops *netlink.AttributeDecoder) error {
				for ops.Next() {
					ops.Nested(func(op *netlink.AttributeDecoder) error {
						for op.Next() {
							if op.Type() == unix.CTRL_ATTR_OP_ID {
								info.ops[op.Uint32()] = true
							}
						}
						return nil
					})
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return info, fmt.Errorf("decode family: %w", err)
	}
	return info, nil
}

func diagItem(cfg Config) Item {
	it := Item{Name: "mptcp_diag"}
	var pc *pathmgr.Config
	if cfg.NetNS != "" {
		pc = &pathmgr.Config{NetNS: cfg.NetNS}
	}
	conns, err := pathmgr.Connections(pc, pathmgr.ListOptions{})
	switch {
	case err == nil:
		it.OK = true
		it.Value = fmt.Sprintf("works (%d MPTCP connections now)", len(conns))
		it.Consequence = "`gigapath conn list` and the daemon's connection inventory work (sock_diag for IPPROTO_MPTCP)"
	case errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist):
		it.Value = "absent: " + err.Error()
		it.Consequence = "no MPTCP sock_diag (CONFIG_INET_MPTCP_DIAG / module mptcp_diag): `gigapath conn list` cannot list connections"
	default:
		it.Value = "failed: " + err.Error()
		it.Consequence = "`gigapath conn list` may not work here"
	}
	return it
}

// endpointFlagProbes are added in the scratch namespace, one endpoint each;
// a flag is supported when the kernel stores and reports it back (kernels
// drop flag bits they do not know).
var endpointFlagProbes = []struct {
	name  string
	flags pathmgr.EndpointFlags
	since string
}{
	{"signal", pathmgr.FlagSignal, "5.6"},
	{"subflow", pathmgr.FlagSubflow, "5.6"},
	{"backup", pathmgr.FlagSubflow | pathmgr.FlagBackup, "5.6"},
	{"fullmesh", pathmgr.FlagSubflow | pathmgr.FlagFullmesh, "5.15"},
	{"laminar", pathmgr.FlagLaminar, "6.18"},
}

// scratchItems probes in a namespace of its own: endpoint flags, GET_ADDR
// with a token and MPTCP_FULL_INFO.
func scratchItems() []Item {
	flags := Item{Name: "endpoint_flags"}
	getAddr := Item{Name: "userspace_pm_get_addr"}
	fullInfo := Item{Name: "mptcp_full_info"}
	err := inScratchNetNS(func() {
		flags = endpointFlagsItem()
		getAddr = getAddrItem()
		fullInfo = fullInfoItem()
	})
	if err != nil {
		why := "not probed: " + err.Error()
		if errors.Is(err, unix.EPERM) {
			why = "not probed: needs root (CAP_SYS_ADMIN) to create a scratch network namespace"
		}
		for _, it := range []*Item{&flags, &getAddr, &fullInfo} {
			it.Value = why
			it.Consequence = "unknown; run gigapath check as root"
		}
	}
	return []Item{flags, getAddr, fullInfo}
}

func endpointFlagsItem() Item {
	it := Item{Name: "endpoint_flags"}
	c, err := pathmgr.Dial(nil)
	if err != nil {
		it.Value = "not probed: " + err.Error()
		it.Consequence = "no in-kernel path manager to configure"
		return it
	}
	defer c.Close()
	var have, missing []string
	for i, p := range endpointFlagProbes {
		id := uint8(i + 1)
		addr := netip.AddrFrom4([4]byte{192, 0, 2, id}) // TEST-NET-1, never routed
		if err := c.AddEndpoint(pathmgr.Endpoint{ID: id, Addr: addr, Flags: p.flags}); err != nil {
			missing = append(missing, fmt.Sprintf("%s (refused: %v)", p.name, err))
			continue
		}
		e, err := c.Endpoint(id)
		if err == nil && e.Flags&p.flags == p.flags {
			have = append(have, p.name)
		} else {
			missing = append(missing, fmt.Sprintf("%s (Linux %s+)", p.name, p.since))
		}
	}
	// implicit is set by the kernel only; kernels that know it refuse it
	// from userspace ("can't create IMPLICIT endpoint", Linux 5.18+).
	err = c.AddEndpoint(pathmgr.Endpoint{ID: 100, Addr: netip.AddrFrom4([4]byte{192, 0, 2, 100}), Flags: pathmgr.FlagImplicit})
	if errors.Is(err, unix.EINVAL) {
		have = append(have, "implicit")
	} else {
		missing = append(missing, "implicit (Linux 5.18+)")
	}
	it.Value = strings.Join(have, " ")
	if len(missing) == 0 {
		it.OK = true
		it.Consequence = "every endpoint flag gigapath knows is honoured"
	} else {
		it.Consequence = "not honoured here: " + strings.Join(missing, ", ") + "; endpoints asking for them lose those flags"
	}
	return it
}

func getAddrItem() Item {
	it := Item{Name: "userspace_pm_get_addr"}
	c, err := pathmgr.Dial(nil)
	if err != nil {
		it.Value = "not probed: " + err.Error()
		it.Consequence = "no path-manager netlink API"
		return it
	}
	defer c.Close()
	ok, err := c.SupportsConnectionAddrs()
	switch {
	case err != nil:
		it.Value = "probe failed: " + err.Error()
		it.Consequence = "cannot tell whether a userspace-PM connection's addresses can be read back"
	case ok:
		it.OK = true
		it.Value = "GET_ADDR honours a connection token"
		it.Consequence = "the addresses of a userspace-PM connection can be listed (pathmgr ConnectionAddrs)"
	default:
		it.Value = "GET_ADDR ignores the token (Linux 6.7+ needed)"
		it.Consequence = "a userspace-PM connection's addresses cannot be read back; gigapath keeps its own record"
	}
	return it
}

// mptcpFullInfo is MPTCP_FULL_INFO from include/uapi/linux/mptcp.h (a
// socket option at SOL_MPTCP; x/sys/unix has none).
const mptcpFullInfo = 4

// fullInfoItem opens an MPTCP connection over loopback and asks it for
// MPTCP_FULL_INFO (Linux 6.5+).
func fullInfoItem() Item {
	it := Item{Name: "mptcp_full_info"}
	err := func() error {
		ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
		if err != nil {
			return fmt.Errorf("MPTCP socket: %w", err)
		}
		defer unix.Close(ln)
		if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return fmt.Errorf("bind 127.0.0.1: %w", err)
		}
		if err := unix.Listen(ln, 1); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		sa, err := unix.Getsockname(ln)
		if err != nil {
			return err
		}
		cl, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
		if err != nil {
			return fmt.Errorf("MPTCP socket: %w", err)
		}
		defer unix.Close(cl)
		if err := unix.Connect(cl, sa); err != nil {
			return fmt.Errorf("connect over loopback: %w", err)
		}
		// struct mptcp_full_info: 6 u32 sizes/counts, 2 u64 user pointers,
		// then struct mptcp_info. GetsockoptString passes a zeroed 256-byte
		// buffer: size_arrays_user 0, so the kernel writes no arrays.
		_, err = unix.GetsockoptString(cl, unix.SOL_MPTCP, mptcpFullInfo)
		return err
	}()
	switch {
	case err == nil:
		it.OK = true
		it.Value = "supported"
		it.Consequence = "one getsockopt returns the connection's and every subflow's counters"
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EINVAL):
		it.Value = "not supported: " + err.Error()
		it.Consequence = "per-subflow details only through sock_diag (Linux 6.5+ has MPTCP_FULL_INFO); gigapath conn list is unaffected"
	default:
		it.Value = "probe failed: " + err.Error()
		it.Consequence = "cannot tell whether MPTCP_FULL_INFO works"
	}
	return it
}

// lockdown returns the kernel lockdown level ("none", "integrity",
// "confidentiality"). securityfs is mounted on a private temporary
// directory when /sys/kernel/security is not mounted, and unmounted after.
func lockdown() (string, error) {
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		s := string(b) // "none [integrity] confidentiality"
		i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
		if i < 0 || j < i {
			return "", fmt.Errorf("%s: unexpected content %q", p, strings.TrimSpace(s))
		}
		return s[i+1 : j], nil
	}
	l, err := read("/sys/kernel/security/lockdown")
	if err == nil {
		return l, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	dir, err := os.MkdirTemp("", "gigapath-securityfs-")
	if err != nil {
		return "", err
	}
	defer os.Remove(dir)
	if err := unix.Mount("securityfs", dir, "securityfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		if errors.Is(err, unix.ENODEV) {
			// No securityfs in this kernel: no LSM at all, so no
			// lockdown (it is an LSM that needs securityfs).
			return "none", nil
		}
		return "", fmt.Errorf("mount securityfs: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	l, err = read(filepath.Join(dir, "lockdown"))
	if errors.Is(err, os.ErrNotExist) {
		return "none", nil // securityfs without the lockdown LSM
	}
	return l, err
}

func lockdownItem(level string, err error) Item {
	it := Item{Name: "lockdown"}
	switch {
	case err != nil:
		it.Value = "unknown: " + err.Error()
		it.Consequence = "cannot tell whether lockdown blocks BPF tracing; see the bpf_* items"
	case level == "none":
		it.OK = true
		it.Value = level
		it.Consequence = "no lockdown: BPF tracing and LSM programs may load"
	default:
		it.Value = level
		it.Consequence = "lockdown " + level + ": BPF tracing and LSM programs are refused, so mptcpify (fmod_ret) cannot run"
	}
	return it
}

type progType struct {
	name     string
	typ      ebpf.ProgramType
	ok, fail string // consequences
}

var progTypes = []progType{
	{"bpf_tracing", ebpf.Tracing,
		"tracing programs load: mptcpify (fmod_ret/update_socket_protocol) can run",
		"mptcpify (fmod_ret/update_socket_protocol) cannot run"},
	{"bpf_lsm", ebpf.LSM,
		"LSM programs load (gigapath ships none)",
		"LSM programs cannot load (gigapath ships none)"},
	{"bpf_sockops", ebpf.SockOps,
		"sockops programs load: per-path congestion control, marks and telemetry work",
		"no per-path policy or subflow telemetry (sockops)"},
	{"bpf_sched_cls", ebpf.SchedCLS,
		"tc programs load (the testbed's loss emulation)",
		"no tc BPF: the testbed cannot emulate loss"},
	{"bpf_cgroup_sock_addr", ebpf.CGroupSockAddr,
		"cgroup connect/bind hooks load (gigapath ships none)",
		"cgroup connect/bind hooks cannot load (gigapath ships none)"},
	{"bpf_struct_ops", ebpf.StructOps,
		"struct_ops programs load (BPF schedulers also need bpf_mptcp_sched)",
		"no struct_ops: BPF MPTCP schedulers cannot be registered"},
	{"bpf_raw_tracepoint", ebpf.RawTracepoint,
		"raw tracepoints load: the send-share counter can run",
		"no raw tracepoints: no send-share metric"},
}

func progItem(p progType, level string) Item {
	it := Item{Name: p.name}
	err := features.HaveProgramType(p.typ)
	switch {
	case err == nil:
		it.OK = true
		it.Value = "loads"
		it.Consequence = p.ok
	case errors.Is(err, ebpf.ErrNotSupported):
		it.Value = "absent (this kernel does not know the program type)"
		it.Consequence = p.fail
	case errors.Is(err, unix.EPERM):
		why := "operation not permitted"
		switch {
		case level != "" && level != "none":
			why += ", lockdown=" + level
		case os.Geteuid() != 0:
			why += ", not root: run gigapath check as root"
		}
		it.Value = "refused (" + why + ")"
		it.Consequence = p.fail
	default:
		it.Value = "refused: " + err.Error()
		it.Consequence = p.fail
	}
	return it
}

func mptcpSchedItem() Item {
	it := Item{Name: "bpf_mptcp_sched"}
	ok, reason := sched.Available()
	if ok {
		it.OK = true
		it.Value = "BTF type " + sched.StructOpsType + " present"
		it.Consequence = "gigapath's BPF schedulers can be registered (`gigapath sched use gp_minrtt`)"
		return it
	}
	it.Value = reason
	it.Consequence = "BPF MPTCP schedulers cannot be registered; the daemon's scheduler: setting falls back to the steering modes"
	return it
}

func cgroupItem() Item {
	it := Item{Name: "cgroup2"}
	p, err := cgroup.Mount()
	if err != nil {
		it.Value = err.Error()
		it.Consequence = "mptcpify and the sockops policy need a cgroup v2 hierarchy to attach to"
		return it
	}
	it.OK = true
	it.Value = p
	it.Consequence = "mptcpify and the sockops policy attach to cgroups under " + p
	return it
}

func mptcpifyItem() Item {
	it := Item{Name: "mptcpify"}
	if err := mptcpify.Supported(); err != nil {
		it.Value = err.Error()
		it.Consequence = "`gigapath mptcpify` cannot make other programs' sockets MPTCP here; use mptcpize (LD_PRELOAD) or MPTCP-aware programs"
		return it
	}
	it.OK = true
	it.Value = "supported"
	it.Consequence = "`gigapath mptcpify run -- CMD` turns CMD's TCP sockets into MPTCP ones"
	return it
}

func pathPolicyItems() []Item {
	policy, share := pathpolicy.Supported()
	pi := Item{Name: "path_policy", OK: policy == nil, Value: "supported",
		Consequence: "per-interface congestion control, marks and subflow telemetry apply"}
	if policy != nil {
		pi.Value = policy.Error()
		pi.Consequence = "the policy's per-path congestion:/mark settings and subflow telemetry are unavailable"
	}
	si := Item{Name: "send_share", OK: share == nil, Value: "supported",
		Consequence: "the share-of-sends-per-path metric is exported"}
	if share != nil {
		si.Value = share.Error()
		si.Consequence = "no share-of-sends-per-path metric"
	}
	return []Item{pi, si}
}
