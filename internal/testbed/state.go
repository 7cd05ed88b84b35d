//go:build linux

package testbed

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
)

// StateFile is where `gigapath testbed up` records the bed it built, for
// `testbed status` and `testbed down`.
const StateFile = "/run/gigapath/testbed.json"

// Description is the JSON form of a bed: its spec, namespaces, addresses
// and the rates currently set.
type Description struct {
	*Bed
	Rates      map[Link]string `json:"rates"`
	Interfaces map[string]any  `json:"interfaces"`
	// Fleet only: the service address the balancer owns, and the nodes
	// taken out of the balancer (RemoveFromBalancer).
	ServiceAddr   *netip.Addr `json:"service_addr,omitempty"`
	ServiceAddr6  *netip.Addr `json:"service_addr6,omitempty"`
	OutOfBalancer []int       `json:"out_of_balancer,omitempty"`
}

// Describe returns the bed's description.
func (b *Bed) Describe() Description {
	b.mu.Lock()
	rates := make(map[Link]string, len(b.rates))
	for k, v := range b.rates {
		rates[k] = v
	}
	var out []int
	for i := range b.out {
		out = append(out, i)
	}
	b.mu.Unlock()
	slices.Sort(out)
	d := Description{Bed: b, Rates: rates, Interfaces: map[string]any{
		"client": []string{WiFiIf, LTEIf},
		"proxy":  []string{ProxyWiFiIf, ProxyLTEIf, ProxyOriginIf},
		"origin": []string{OriginIf},
	}}
	if b.IsFleet() {
		lb := []string{ProxyWiFiIf, ProxyLTEIf, ProxyOriginIf}
		for _, n := range b.Nodes {
			lb = append(lb, NodeBalancerIf(n.Index))
		}
		d.Interfaces["proxy"] = lb
		d.Interfaces["node"] = []string{NodeUplinkIf, "lo"}
		d.ServiceAddr, d.ServiceAddr6 = &b.ProxyAddr, &b.ProxyAddr6
		d.OutOfBalancer = out
	}
	return d
}

// Save writes the description to path (its directory is created).
func (b *Bed) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(b.Describe(), "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Load reads a description written by Save and returns a Bed that can be
// inspected and closed (loss programs do not survive the process that set
// them).
func Load(path string) (*Bed, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Spec   Spec            `json:"spec"`
		Client *NetNS          `json:"client"`
		Proxy  *NetNS          `json:"proxy"`
		Origin *NetNS          `json:"origin"`
		Nodes  []*Node         `json:"nodes"`
		Rates  map[Link]string `json:"rates"`
		Out    []int           `json:"out_of_balancer"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if raw.Client == nil || raw.Proxy == nil || raw.Origin == nil {
		return nil, fmt.Errorf("%s: not a testbed description (client, proxy or origin namespace missing)", path)
	}
	b := newBed(raw.Spec, raw.Client, raw.Proxy, raw.Origin)
	for k, v := range raw.Rates {
		b.rates[k] = v
	}
	for i, n := range raw.Nodes {
		if n == nil || n.NetNS == nil || n.Index != i+1 {
			return nil, fmt.Errorf("%s: node %d of the fleet is not described (index and netns)", path, i+1)
		}
	}
	b.Nodes = raw.Nodes
	for _, i := range raw.Out {
		b.out[i] = true
	}
	return b, nil
}
