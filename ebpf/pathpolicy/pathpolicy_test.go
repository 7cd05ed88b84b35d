//go:build linux

package pathpolicy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/gigapath/gigapath/ebpf/cgroup"
	"github.com/gigapath/gigapath/internal/testbed"
)

func TestAddrKeyRoundTrip(t *testing.T) {
	for _, s := range []string{"10.0.2.1", "192.168.1.254", "2001:db8::1", "fe80::1:2:3:4"} {
		a := netip.MustParseAddr(s)
		k, err := addrKey(a)
		if err != nil {
			t.Fatal(err)
		}
		if got := keyAddr(k.Family, k.Addr); got != a {
			t.Errorf("keyAddr(addrKey(%v)) = %v", a, got)
		}
	}
	// The kernel keeps IPv4 addresses in network order: on a little-endian
	// host 10.0.2.1 reads as 0x0102000a.
	k, _ := addrKey(netip.MustParseAddr("10.0.2.1"))
	if k.Family != 2 || k.Addr != [4]uint32{0x0102000a} {
		t.Errorf("addrKey(10.0.2.1) = %+v", k)
	}
	// A v4-mapped address is the IPv4 address.
	k, _ = addrKey(netip.MustParseAddr("::ffff:10.0.2.1"))
	if k.Family != 2 {
		t.Errorf("addrKey(::ffff:10.0.2.1) family %d, want 2", k.Family)
	}
	if _, err := addrKey(netip.Addr{}); err == nil {
		t.Error("addrKey(zero Addr) succeeded")
	}
}

func TestStatsFrom(t *testing.T) {
	l, _ := addrKey(netip.MustParseAddr("10.0.2.1"))
	r, _ := addrKey(netip.MustParseAddr("10.0.1.2"))
	s := statsFrom(7, &pathpolicySubflowStats{
		Local: l, Remote: r.Addr, LocalPort: 40000, RemotePort: 5201,
		SrttUs8: 8 * 25000, RttMinUs: 20000, TotalRetrans: 3,
		RateDelivered: 10, MssCache: 1448, RateIntervalUs: 1000,
		Applied: flagCongestion | flagPriority, IsMptcp: 1,
	})
	if s.Local.String() != "10.0.2.1:40000" || s.Remote.String() != "10.0.1.2:5201" {
		t.Errorf("addresses %v → %v", s.Local, s.Remote)
	}
	if s.SRTT != 25*time.Millisecond || s.MinRTT != 20*time.Millisecond {
		t.Errorf("srtt %v min %v, want 25ms 20ms", s.SRTT, s.MinRTT)
	}
	if s.DeliveryRate != 10*1448*1000 {
		t.Errorf("delivery rate %d, want %d", s.DeliveryRate, 10*1448*1000)
	}
	if !s.Applied.Congestion || s.Applied.Mark || !s.Applied.Priority || !s.MPTCP || s.Retransmits != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestShares(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("10.0.2.1")
	got := Shares([]PathShare{{Local: a, Chosen: 1, Bytes: 300}, {Local: b, Chosen: 30, Bytes: 100}})
	if got[a] != 0.75 || got[b] != 0.25 {
		t.Errorf("by bytes: %v", got)
	}
	got = Shares([]PathShare{{Local: a, Free: 1, Chosen: 3}, {Local: b, Free: 30, Chosen: 1}})
	if got[a] != 0.75 || got[b] != 0.25 {
		t.Errorf("by choices: %v", got)
	}
	got = Shares([]PathShare{{Local: a, Considered: 10}})
	if got[a] != 0 {
		t.Errorf("nothing chosen: %v", got)
	}
}

// Supported agrees with what Load does on this kernel.
func TestIntegrationSupported(t *testing.T) {
	needRoot(t)
	policy, share := Supported()
	if _, err := cgroup.Mount(); err != nil {
		t.Skipf("no cgroup v2 hierarchy (sockops programs attach to one): %v", err)
	}
	root, err := cgroup.Create(testbed.UniqueName("gigapath-test-support-"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cgroup.Remove(root) })
	p, err := Load(Options{Cgroup: root, NoSendShare: true})
	if (err == nil) != (policy == nil) {
		t.Fatalf("Supported() policy error %v, Load error %v", policy, err)
	}
	if err == nil {
		p.Close()
	}
	p, err = Load(Options{Cgroup: root})
	if policy == nil && (err == nil) != (share == nil) {
		t.Fatalf("Supported() send-share error %v, Load error %v", share, err)
	}
	if err == nil {
		p.Close()
	}
}
