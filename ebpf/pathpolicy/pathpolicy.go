// Package pathpolicy applies per-path socket settings and records per-subflow
// telemetry with a sockops BPF program attached to a cgroup v2, and counts
// the kernel MPTCP scheduler's choices per path with a raw tracepoint on
// mptcp:mptcp_subflow_get_send.
//
// MPTCP subflows are TCP sockets in their connection's cgroup, so a policy
// keyed by local address reaches each subflow by the interface it leaves
// through: congestion control, SO_MARK and SO_PRIORITY are set when the
// subflow is established. A PathPolicy covers one network namespace (the
// programs compare each socket's namespace cookie): the cgroup's processes
// may live in several, and addresses repeat across them. Everything here loads under lockdown=integrity
// (sockops, raw_tracepoint).
package pathpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/gigapath/gigapath/ebpf/cgroup"
	"github.com/gigapath/gigapath/pathmgr/netns"
)

// Policy is what to apply to the subflows leaving from one local address.
// Zero values leave the socket's setting alone.
type Policy struct {
	// Congestion is a TCP congestion control algorithm the kernel has
	// (net.ipv4.tcp_available_congestion_control), e.g. "cubic", "bbr".
	Congestion string
	// Mark is set as SO_MARK (routing, firewall), when not 0.
	Mark uint32
	// Priority is set as SO_PRIORITY (queueing discipline band), when not 0.
	Priority uint32
}

const (
	flagCongestion = 1 << 0
	flagMark       = 1 << 1
	flagPriority   = 1 << 2
)

// Options configure Load.
type Options struct {
	// Cgroup is the cgroup v2 whose sockets are covered: absolute, or
	// relative to the cgroup v2 mount. Empty means the root of the
	// hierarchy, i.e. every socket of the machine.
	Cgroup string
	// NetNS is the network namespace whose sockets are covered: a name
	// from `ip netns list`, a namespace file path, or "" for the caller's.
	// Sockets of the cgroup in other namespaces get no policy, no
	// telemetry entry and no send-share count.
	NetNS string
	// NoSendShare skips the scheduler-choice counters.
	NoSendShare bool
	// MaxSubflows sizes the telemetry map (0: DefaultMaxSubflows). It is
	// an LRU map, allocated in full at load (about 200 bytes of kernel
	// memory per entry): when more subflows live at once, those updated
	// least recently have no entry.
	MaxSubflows uint32
	// Telemetry, when set, is the telemetry map of an earlier PathPolicy
	// (HeldTelemetry) for this one to keep writing to: its subflows keep
	// their entries. A subflow gets an entry when it is established or at
	// its next callback, so in a new map an idle subflow established
	// before has none. The map is kept when its layout and size are this
	// program's, and a new one made otherwise (KeptTelemetry says why).
	// Load clones it: the caller closes its own.
	Telemetry *HeldTelemetry
}

// DefaultMaxSubflows is the telemetry map's size when Options.MaxSubflows
// is 0.
const DefaultMaxSubflows = 16384

// PathPolicy is the loaded and attached program set. Close detaches it.
type PathPolicy struct {
	cgroup string
	netns  uint64 // the covered namespace's cookie
	objs   pathpolicyObjects
	link   link.Link

	share      *sendshareObjects
	shareLinks []link.Link

	// lastTelemetry is how many entries Telemetry read last time: the
	// capacity of the next answer.
	lastTelemetry atomic.Int64

	// kept: the map of Options.Telemetry is this one's; notKept says why
	// not when one was offered.
	kept    bool
	notKept error
}

// Load loads the sockops program, attaches it to the cgroup and, unless
// opts.NoSendShare, attaches the send-share counters too. Where the kernel
// refuses a piece, the error names the program and the kernel's reason; a
// caller that can live without the send share retries with NoSendShare.
func Load(opts Options) (*PathPolicy, error) {
	cg := opts.Cgroup
	if cg == "" {
		root, err := cgroup.Mount()
		if err != nil {
			return nil, err
		}
		cg = root
	}
	cg, err := cgroup.Resolve(cg)
	if err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("pathpolicy: raise memlock limit: %w", err)
	}
	cookie, err := netns.Cookie(opts.NetNS)
	if err != nil {
		return nil, fmt.Errorf("pathpolicy: %w", err)
	}
	p := &PathPolicy{cgroup: cg, netns: cookie}
	spec, err := loadPathpolicy()
	if err != nil {
		return nil, fmt.Errorf("pathpolicy: load sockops program: %w", err)
	}
	if err := spec.Variables[pathpolicyVarScopeNetns].Set(cookie); err != nil {
		return nil, fmt.Errorf("pathpolicy: network namespace scope: %w", err)
	}
	if n := opts.MaxSubflows; n > 0 {
		spec.Maps[pathpolicyMapSubflows].MaxEntries = n
	}
	var opt *ebpf.CollectionOptions
	if h := opts.Telemetry; h != nil && h.Map != nil {
		m, err := keepTelemetry(spec, h)
		if err != nil {
			p.notKept = fmt.Errorf("pathpolicy: the telemetry map handed over is not kept: %w", err)
		} else {
			opt = &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{pathpolicyMapSubflows: m}}
		}
	}
	err = spec.LoadAndAssign(&p.objs, opt)
	if err != nil && opt != nil {
		// The map handed over is what failed, as far as this can tell:
		// the program and its policy matter more than keeping it.
		p.notKept = fmt.Errorf("pathpolicy: the telemetry map handed over is not kept: %w", err)
		opt = nil
		err = spec.LoadAndAssign(&p.objs, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("pathpolicy: load sockops program: %w", err)
	}
	p.kept = opt != nil
	p.link, err = link.AttachCgroup(link.CgroupOptions{
		Path:    cg,
		Attach:  ebpf.AttachCGroupSockOps,
		Program: p.objs.GigapathSockops,
	})
	if err != nil {
		p.objs.Close()
		return nil, fmt.Errorf("pathpolicy: attach sockops program to cgroup %s: %w", cg, err)
	}
	if !opts.NoSendShare {
		if err := p.loadShare(); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

func (p *PathPolicy) loadShare() error {
	// The tracepoint sees every MPTCP connection of the machine; the
	// program counts only sockets of p.cgroup and its descendants in p's
	// network namespace, the scope of the sockops policy.
	id, err := cgroup.ID(p.cgroup)
	if err != nil {
		return fmt.Errorf("pathpolicy: send-share scope: %w", err)
	}
	spec, err := loadSendshare()
	if err != nil {
		return fmt.Errorf("pathpolicy: load send-share programs: %w", err)
	}
	if err := spec.Variables[sendshareVarScopeCgid].Set(id); err != nil {
		return fmt.Errorf("pathpolicy: send-share scope: %w", err)
	}
	if err := spec.Variables[sendshareVarScopeNetns].Set(p.netns); err != nil {
		return fmt.Errorf("pathpolicy: send-share scope: %w", err)
	}
	p.share = new(sendshareObjects)
	if err := spec.LoadAndAssign(p.share, nil); err != nil {
		p.share = nil
		return fmt.Errorf("pathpolicy: load send-share programs: %w", err)
	}
	tp, err := link.AttachRawTracepoint(link.RawTracepointOptions{
		Name:    "mptcp_subflow_get_send",
		Program: p.share.GigapathGetSend,
	})
	if err != nil {
		return fmt.Errorf("pathpolicy: attach raw tracepoint mptcp_subflow_get_send: %w", err)
	}
	p.shareLinks = append(p.shareLinks, tp)
	return nil
}

// Cgroup is the cgroup the sockops program is attached to.
func (p *PathPolicy) Cgroup() string { return p.cgroup }

// NetNSCookie is the cookie of the network namespace covered.
func (p *PathPolicy) NetNSCookie() uint64 { return p.netns }

// Links returns the attachments (the sockops cgroup link, then the
// send-share tracepoints), for a caller that must keep them alive across
// an exec: a duplicate of a link's descriptor keeps the program attached
// after Close, until that duplicate is closed too.
func (p *PathPolicy) Links() []link.Link {
	var out []link.Link
	if p.link != nil {
		out = append(out, p.link)
	}
	return append(out, p.shareLinks...)
}

// Close detaches and unloads everything. Sockets keep the settings already
// applied to them.
func (p *PathPolicy) Close() error {
	var errs []error
	for _, l := range p.shareLinks {
		errs = append(errs, l.Close())
	}
	p.shareLinks = nil
	if p.share != nil {
		errs = append(errs, p.share.Close())
		p.share = nil
	}
	if p.link != nil {
		errs = append(errs, p.link.Close())
		p.link = nil
	}
	errs = append(errs, p.objs.Close())
	return errors.Join(errs...)
}

// addrKey encodes addr the way the BPF side keys it.
func addrKey(addr netip.Addr) (pathpolicyAddrKey, error) {
	var k pathpolicyAddrKey
	addr = addr.Unmap()
	switch {
	case addr.Is4():
		k.Family = 2
		b := addr.As4()
		k.Addr[0] = ne32(b[:])
	case addr.Is6():
		k.Family = 10
		b := addr.As16()
		for i := range 4 {
			k.Addr[i] = ne32(b[4*i:])
		}
	default:
		return k, fmt.Errorf("address %v: want an IPv4 or IPv6 address", addr)
	}
	return k, nil
}

// ne32 reads 4 bytes in network order into a uint32 whose in-memory layout
// (little-endian host) keeps those bytes in that order, as the kernel stores
// addresses.
func ne32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func keyAddr(family uint32, a [4]uint32) netip.Addr {
	put := func(dst []byte, v uint32) {
		dst[0], dst[1], dst[2], dst[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	switch family {
	case 2:
		var b [4]byte
		put(b[:], a[0])
		return netip.AddrFrom4(b)
	case 10:
		var b [16]byte
		for i := range 4 {
			put(b[4*i:], a[i])
		}
		return netip.AddrFrom16(b)
	}
	return netip.Addr{}
}

// AvailableCongestion lists the congestion control algorithms the kernel
// has loaded (net.ipv4.tcp_available_congestion_control). A BPF program
// cannot load a module, so only these can be set.
func AvailableCongestion() ([]string, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		return nil, fmt.Errorf("read available congestion control algorithms: %w", err)
	}
	return strings.Fields(string(b)), nil
}

// SetInterfacePolicy makes subflows established from addr from now on get
// pol. Sockets already established keep their settings.
func (p *PathPolicy) SetInterfacePolicy(addr netip.Addr, pol Policy) error {
	k, err := addrKey(addr)
	if err != nil {
		return err
	}
	var v pathpolicyPolicy
	if pol.Congestion != "" {
		if len(pol.Congestion) > len(v.Congestion)-1 {
			return fmt.Errorf("congestion %q: name longer than %d bytes", pol.Congestion, len(v.Congestion)-1)
		}
		avail, err := AvailableCongestion()
		if err != nil {
			return err
		}
		found := false
		for _, a := range avail {
			found = found || a == pol.Congestion
		}
		if !found {
			return fmt.Errorf("congestion %q is not available in this kernel (net.ipv4.tcp_available_congestion_control: %s); load its module (modprobe tcp_%s) first", pol.Congestion, strings.Join(avail, " "), pol.Congestion)
		}
		for i := range len(pol.Congestion) {
			v.Congestion[i] = int8(pol.Congestion[i])
		}
		v.Flags |= flagCongestion
	}
	if pol.Mark != 0 {
		v.Mark = pol.Mark
		v.Flags |= flagMark
	}
	if pol.Priority != 0 {
		v.Priority = pol.Priority
		v.Flags |= flagPriority
	}
	if err := p.objs.Policies.Put(&k, &v); err != nil {
		return fmt.Errorf("set policy for %v: %w", addr, err)
	}
	return nil
}

// DeleteInterfacePolicy removes the policy of addr; removing a missing one
// is not an error.
func (p *PathPolicy) DeleteInterfacePolicy(addr netip.Addr) error {
	k, err := addrKey(addr)
	if err != nil {
		return err
	}
	if err := p.objs.Policies.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete policy for %v: %w", addr, err)
	}
	return nil
}

// Applied says which parts of a policy took effect on a socket.
type Applied struct {
	Congestion bool `json:"congestion,omitempty"`
	Mark       bool `json:"mark,omitempty"`
	Priority   bool `json:"priority,omitempty"`
}

// SubflowStats is the latest telemetry of one TCP socket (an MPTCP subflow
// when MPTCP is true) in the cgroup, updated once per round trip (RTT_CB),
// retransmission and state change, and at most every 50 ms while it sends
// segments (ACKs included, so a subflow that only receives is updated too).
type SubflowStats struct {
	Cookie uint64         `json:"cookie"`
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	MPTCP  bool           `json:"mptcp"`
	// SRTT is the smoothed round-trip time (ss -ti "rtt").
	SRTT   time.Duration `json:"srtt"`
	MinRTT time.Duration `json:"min_rtt"`
	// Retransmits is the total of retransmitted segments.
	Retransmits uint32 `json:"retransmits"`
	// DeliveryRate in bytes per second, from the latest rate sample
	// (ss -ti "delivery_rate", which ss prints in bits per second).
	DeliveryRate  uint64 `json:"delivery_rate"`
	Cwnd          uint32 `json:"cwnd"`
	BytesAcked    uint64 `json:"bytes_acked"`
	BytesReceived uint64 `json:"bytes_received"`
	// BytesRetrans are the bytes retransmitted (tcpi_bytes_retrans).
	BytesRetrans uint64 `json:"bytes_retrans"`
	// DataSegsIn counts the data segments received, RcvOOOPack those
	// that arrived out of order (tcpi_data_segs_in, tcpi_rcv_ooopack).
	DataSegsIn uint32 `json:"data_segs_in"`
	RcvOOOPack uint32 `json:"rcv_ooopack"`
	// RcvRTT is the receiver's RTT estimate (tcpi_rcv_rtt).
	RcvRTT time.Duration `json:"rcv_rtt"`
	// State is the TCP state number (1 = ESTABLISHED).
	State   uint32  `json:"state"`
	Applied Applied `json:"applied"`
}

func statsFrom(cookie uint64, s *pathpolicySubflowStats) SubflowStats {
	out := SubflowStats{
		Cookie:        cookie,
		Local:         netip.AddrPortFrom(keyAddr(s.Local.Family, s.Local.Addr), uint16(s.LocalPort)),
		Remote:        netip.AddrPortFrom(keyAddr(s.Local.Family, s.Remote), uint16(s.RemotePort)),
		MPTCP:         s.IsMptcp != 0,
		SRTT:          time.Duration(s.SrttUs8>>3) * time.Microsecond,
		MinRTT:        time.Duration(s.RttMinUs) * time.Microsecond,
		Retransmits:   s.TotalRetrans,
		Cwnd:          s.SndCwnd,
		BytesAcked:    s.BytesAcked,
		BytesReceived: s.BytesReceived,
		BytesRetrans:  s.BytesRetrans,
		DataSegsIn:    s.DataSegsIn,
		RcvOOOPack:    s.RcvOoopack,
		RcvRTT:        time.Duration(s.RcvRttUs) * time.Microsecond,
		State:         s.State,
		Applied: Applied{
			Congestion: s.Applied&flagCongestion != 0,
			Mark:       s.Applied&flagMark != 0,
			Priority:   s.Applied&flagPriority != 0,
		},
	}
	if s.RateIntervalUs != 0 {
		// As tcp_get_info: rate = delivered * mss * USEC_PER_SEC / interval.
		out.DeliveryRate = uint64(s.RateDelivered) * uint64(s.MssCache) * 1e6 / uint64(s.RateIntervalUs)
	}
	return out
}

// telemetryBatch is how many entries one BPF_MAP_LOOKUP_BATCH reads.
const telemetryBatch = 1024

// Telemetry returns the current per-subflow statistics (MPTCP subflows
// only; plain TCP sockets in the cgroup get their policy but no entry).
// It reads the map in batches (one system call per 1,024 entries) where
// the kernel can (5.6+), one entry at a time otherwise.
func (p *PathPolicy) Telemetry() ([]SubflowStats, error) {
	return p.AppendTelemetry(nil)
}

// AppendTelemetry is Telemetry appending to dst[:0]: a reader that reads
// the map again and again (a health sampler, scrapes) gives the previous
// result back and allocates nothing once it is large enough (at 100,000
// subflows a result is ~17 MB).
func (p *PathPolicy) AppendTelemetry(dst []SubflowStats) ([]SubflowStats, error) {
	out, err := p.telemetryBatched(dst[:0])
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return out, err
	}
	var (
		cookie uint64
		s      pathpolicySubflowStats
	)
	out = out[:0]
	it := p.objs.Subflows.Iterate()
	for it.Next(&cookie, &s) {
		out = append(out, statsFrom(cookie, &s))
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("read subflow telemetry: %w", err)
	}
	return out, nil
}

func (p *PathPolicy) telemetryBatched(out []SubflowStats) ([]SubflowStats, error) {
	var (
		cursor ebpf.MapBatchCursor
		keys   = make([]uint64, telemetryBatch)
		vals   = make([]pathpolicySubflowStats, telemetryBatch)
	)
	if want := int(p.lastTelemetry.Load()) + telemetryBatch; cap(out) < want {
		out = make([]SubflowStats, 0, want)
	}
	for {
		n, err := p.objs.Subflows.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			out = append(out, statsFrom(keys[i], &vals[i]))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			p.lastTelemetry.Store(int64(len(out)))
			return out, nil // the last batch
		}
		if err != nil {
			return out, fmt.Errorf("read subflow telemetry: %w", err)
		}
	}
}

// PathShare counts the kernel scheduler's decisions for one local address.
type PathShare struct {
	Local netip.Addr `json:"local"`
	// Considered counts how often the default scheduler looked at a
	// subflow from this address (tracepoint mptcp_subflow_get_send).
	Considered uint64 `json:"considered"`
	// Free counts how often such a subflow could take more data then.
	Free uint64 `json:"free"`
	// Chosen counts the decisions that picked a subflow from this address,
	// reconstructed from the tracepoint as the default scheduler decides:
	// the active subflow with the least queued time, a backup one only
	// when no other is active.
	Chosen uint64 `json:"chosen"`
	// Bytes counts what subflows from this address carried (sent and
	// acknowledged by the peer) since Load, sampled from each subflow's
	// bytes_acked whenever the scheduler looks at it.
	Bytes uint64 `json:"bytes"`
}

// ErrNoSendShare is returned by SendShares when Load ran with NoSendShare.
var ErrNoSendShare = errors.New("pathpolicy: send-share counters not loaded")

// SendShares returns the per-address counters since Load.
func (p *PathPolicy) SendShares() ([]PathShare, error) {
	if p.share == nil {
		return nil, ErrNoSendShare
	}
	var (
		k   sendshareAddrKey
		v   sendshareShare
		out []PathShare
	)
	it := p.share.Shares.Iterate()
	for it.Next(&k, &v) {
		out = append(out, PathShare{Local: keyAddr(k.Family, k.Addr), Considered: v.Considered, Free: v.Free, Chosen: v.Chosen, Bytes: v.Bytes})
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("read send-share counters: %w", err)
	}
	return out, nil
}

// Shares turns counters into each address's share of the bytes sent
// ("share of sends per path"); when no bytes were counted, its share of
// the scheduler's choices.
func Shares(counts []PathShare) map[netip.Addr]float64 {
	var bytes, chosen uint64
	for _, c := range counts {
		bytes += c.Bytes
		chosen += c.Chosen
	}
	out := make(map[netip.Addr]float64, len(counts))
	for _, c := range counts {
		switch {
		case bytes > 0:
			out[c.Local] = float64(c.Bytes) / float64(bytes)
		case chosen > 0:
			out[c.Local] = float64(c.Chosen) / float64(chosen)
		default:
			out[c.Local] = 0
		}
	}
	return out
}
