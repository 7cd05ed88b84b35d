//go:build linux

package kcheck

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// newFamilyMsg encodes a CTRL_CMD_NEWFAMILY payload as the kernel sends
// it: id, name, version, then CTRL_ATTR_OPS as an array of nests (index
// 1..n), each with the op id and its capability flags.
func newFamilyMsg(t *testing.T, id uint16, version uint32, ops ...uint32) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.Uint16(unix.CTRL_ATTR_FAMILY_ID, id)
	ae.String(unix.CTRL_ATTR_FAMILY_NAME, "mptcp_pm")
	ae.Uint32(unix.CTRL_ATTR_VERSION, version)
	ae.Uint32(unix.CTRL_ATTR_HDRSIZE, 0)
	ae.Nested(unix.CTRL_ATTR_OPS, func(nae *netlink.AttributeEncoder) error {
		for i, op := range ops {
			nae.Nested(uint16(i+1), func(oae *netlink.AttributeEncoder) error {
				oae.Uint32(unix.CTRL_ATTR_OP_ID, op)
				oae.Uint32(unix.CTRL_ATTR_OP_FLAGS, unix.GENL_CMD_CAP_DO|unix.GENL_CMD_CAP_HASPOL)
				return nil
			})
		}
		return nil
	})
	ae.Nested(unix.CTRL_ATTR_MCAST_GROUPS, func(nae *netlink.AttributeEncoder) error {
		nae.Nested(1, func(g *netlink.AttributeEncoder) error {
			g.String(unix.CTRL_ATTR_MCAST_GRP_NAME, "mptcp_pm_events")
			g.Uint32(unix.CTRL_ATTR_MCAST_GRP_ID, 9)
			return nil
		})
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseFamily(t *testing.T) {
	got, err := parseFamily(newFamilyMsg(t, 0x1c, 1, 1, 2, 3, 10, 42))
	if err != nil {
		t.Fatal(err)
	}
	want := familyInfo{id: 0x1c, version: 1, ops: map[uint32]bool{1: true, 2: true, 3: true, 10: true, 42: true}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(familyInfo{})); diff != "" {
		t.Errorf("parseFamily (-want +got):\n%s", diff)
	}

	// No ops at all (a family registered without operations).
	got, err = parseFamily(newFamilyMsg(t, 5, 2))
	if err != nil || got.id != 5 || got.version != 2 || len(got.ops) != 0 {
		t.Errorf("parseFamily without ops = %+v, %v", got, err)
	}

	// Truncated attribute: an error, not a panic.
	b := newFamilyMsg(t, 0x1c, 1, 1)
	if _, err := parseFamily(b[:len(b)-3]); err == nil {
		t.Error("parseFamily of a truncated message: no error")
	}
}

func TestProgItem(t *testing.T) {
	// Every program type gigapath reports has both consequences written.
	seen := map[string]bool{}
	for _, p := range progTypes {
		if p.ok == "" || p.fail == "" || seen[p.name] {
			t.Errorf("program type %s: empty consequence or duplicate", p.name)
		}
		seen[p.name] = true
	}
	for _, n := range Names {
		if len(n) > 2 && n[:4] == "bpf_" && n != "bpf_mptcp_sched" && !seen[n] {
			t.Errorf("item %s has no program type probe", n)
		}
	}
}
