//go:build linux

package testbed

import (
	"encoding/json"
	"net/netip"
	"strconv"
)

// Status is what `gigapath testbed status` shows, read live from the
// namespaces rather than from the recorded description.
type Status struct {
	Namespaces []NSStatus   `json:"namespaces"`
	Links      []LinkStatus `json:"links"`
	Addresses  []AddrStatus `json:"addresses"`
	// Nodes of a fleet, with the balancer's view of each.
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// NSStatus is one namespace of the bed.
type NSStatus struct {
	Role    string `json:"role"`
	Name    string `json:"name"`
	Present bool   `json:"present"`
}

// LinkStatus is one access link seen from the client end.
type LinkStatus struct {
	Link     Link   `json:"link"`
	ClientIf string `json:"client_if"`
	ProxyIf  string `json:"proxy_if"`
	// State is the client end's operational state (UP, DOWN, ...), or
	// "absent".
	State string `json:"state"`
	// Rate is the tbf rate on the client end as tc reports it ("" =
	// unshaped).
	Rate    string `json:"rate"`
	RxBytes uint64 `json:"rx_bytes"`
	TxBytes uint64 `json:"tx_bytes"`
}

// AddrStatus names one address of the plan.
type AddrStatus struct {
	Name  string     `json:"name"`
	NetNS string     `json:"netns"`
	Iface string     `json:"iface"`
	Addr  netip.Addr `json:"addr"`
	Addr6 netip.Addr `json:"addr6"`
}

// Status reads the bed's state live. Missing namespaces or links are
// reported, not errors.
func (b *Bed) Status() Status {
	var s Status
	far := "proxy"
	if b.IsFleet() {
		far = "balancer"
	}
	for _, r := range []struct {
		role string
		n    *NetNS
	}{{"client", b.Client}, {far, b.Proxy}, {"origin", b.Origin}} {
		s.Namespaces = append(s.Namespaces, NSStatus{Role: r.role, Name: r.n.Name, Present: r.n.Exists()})
	}
	for _, n := range b.Nodes {
		s.Namespaces = append(s.Namespaces, NSStatus{Role: "node" + strconv.Itoa(n.Index), Name: n.NetNS.Name, Present: n.NetNS.Exists()})
	}
	var cnt map[Link]LinkCounters
	var links []struct {
		Ifname    string `json:"ifname"`
		Operstate string `json:"operstate"`
	}
	if b.Client.Exists() {
		cnt, _ = b.Counters()
		if out, err := b.Client.Run("ip", "-j", "link", "show"); err == nil {
			_ = json.Unmarshal([]byte(out), &links)
		}
	}
	for _, l := range Links {
		cif, pif, _ := Iface(l)
		ls := LinkStatus{Link: l, ClientIf: cif, ProxyIf: pif, State: "absent"}
		for _, x := range links {
			if x.Ifname == cif {
				ls.State = x.Operstate
			}
		}
		if ls.State != "absent" {
			ls.Rate = tbfRate(b.Client, cif)
			ls.RxBytes, ls.TxBytes = cnt[l].RxBytes, cnt[l].TxBytes
		}
		s.Links = append(s.Links, ls)
	}
	s.Addresses = []AddrStatus{
		{"client wifi", b.Client.Name, WiFiIf, b.WiFiAddr, b.WiFiAddr6},
		{"client lte", b.Client.Name, LTEIf, b.LTEAddr, b.LTEAddr6},
		{far + " service", b.Proxy.Name, "lo", b.ProxyAddr, b.ProxyAddr6},
		{far + " wifi", b.Proxy.Name, ProxyWiFiIf, b.ProxyWiFiAddr, b.ProxyWiFiAddr6},
		{far + " lte", b.Proxy.Name, ProxyLTEIf, b.ProxyLTEAddr, b.ProxyLTEAddr6},
		{far + " to origin", b.Proxy.Name, ProxyOriginIf, b.ProxyOriginAddr, b.ProxyOriginAddr6},
		{"origin", b.Origin.Name, OriginIf, b.OriginAddr, b.OriginAddr6},
	}
	for _, n := range b.Nodes {
		node := "node" + strconv.Itoa(n.Index)
		s.Addresses = append(s.Addresses,
			AddrStatus{node, n.NetNS.Name, "lo", n.Addr, n.Addr6},
			AddrStatus{node + " backend", n.NetNS.Name, NodeUplinkIf, n.Backend, n.Backend6})
	}
	if b.IsFleet() && b.Proxy.Exists() {
		s.Nodes = b.nodeStatus()
	}
	return s
}

// tbfRate returns the tbf rate on ifname in n in bits/s as "<N>bit"
// rounded to mbit/kbit when exact, or "".
func tbfRate(n *NetNS, ifname string) string {
	out, err := n.Run("tc", "-j", "qdisc", "show", "dev", ifname)
	if err != nil {
		return ""
	}
	var qs []struct {
		Kind    string `json:"kind"`
		Options struct {
			Rate uint64 `json:"rate"` // bytes per second
		} `json:"options"`
	}
	if json.Unmarshal([]byte(out), &qs) != nil {
		return ""
	}
	for _, q := range qs {
		if q.Kind == "tbf" {
			return FormatRate(q.Options.Rate * 8)
		}
	}
	return ""
}

// FormatRate writes bits per second in tc syntax: "100mbit", "1500kbit".
func FormatRate(bps uint64) string {
	switch {
	case bps >= 1e9 && bps%1e9 == 0:
		return strconv.FormatUint(bps/1e9, 10) + "gbit"
	case bps >= 1e6 && bps%1e6 == 0:
		return strconv.FormatUint(bps/1e6, 10) + "mbit"
	case bps >= 1e3 && bps%1e3 == 0:
		return strconv.FormatUint(bps/1e3, 10) + "kbit"
	}
	return strconv.FormatUint(bps, 10) + "bit"
}
