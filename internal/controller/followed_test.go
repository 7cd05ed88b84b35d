package controller

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/pathmgr"
)

// The list of followed subflows reads back what was written; a missing
// file is an empty list; a file that is not one, or is cut in the middle
// of a cookie, is refused with its path.
func TestFollowedFile(t *testing.T) {
	dir := t.TempDir()
	path := followedFile(filepath.Join(dir, "state"), 7)
	if got, err := readFollowed(path); got != nil || err != nil {
		t.Fatalf("missing file: %v, %v; want an empty list", got, err)
	}
	if err := writeFollowed(path, []uint64{1, 1 << 40, 3}); err != nil {
		t.Fatal(err)
	}
	got, err := readFollowed(path)
	if err != nil || len(got) != 3 {
		t.Fatalf("read back %v, %v; want 3 cookies", got, err)
	}
	for _, c := range []uint64{1, 1 << 40, 3} {
		if _, ok := got[c]; !ok {
			t.Errorf("cookie %d lost: %v", c, got)
		}
	}
	b, _ := os.ReadFile(path)
	for name, content := range map[string][]byte{
		"not a list": []byte("{}"),
		"cut":        b[:len(b)-3],
	} {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readFollowed(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want an error naming %s", name, err, path)
		}
	}
}

// listWithCookies is one connection whose subflows have these cookies.
func listWithCookies(cookies ...uint64) []pathmgr.Connection {
	c := pathmgr.Connection{Token: 1}
	for i, k := range cookies {
		c.Subflows = append(c.Subflows, pathmgr.SubflowInfo{Local: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+i)), Cookie: k})
	}
	return []pathmgr.Connection{c}
}

// The followed subflows count as covered only once a dump (the sampler's
// or a resync's) has shown which of them live, and only those without an
// entry in the map: one that has an entry is counted by it, one that
// closed not at all.
func TestSamplerCountsFollowedSubflows(t *testing.T) {
	s := newSampler(&countingInventory{}, time.Now, func(string, time.Duration) {})
	s.followed = map[uint64]struct{}{1: {}, 2: {}, 3: {}, 4: {}}
	entry := []pathpolicy.SubflowStats{{Cookie: 1}}
	if n := s.followedLeft(entry); n != 0 {
		t.Fatalf("before any dump: %d counted, want 0", n)
	}
	s.pruneFollowed(listWithCookies(2, 3, 9), time.Now()) // 4 closed
	if n := s.followedLeft(entry); n != 2 {
		t.Fatalf("after a dump with 2 and 3: %d counted (%v), want 2", n, s.followed)
	}
	// 3 sent a segment: it has an entry now.
	if n := s.followedLeft([]pathpolicy.SubflowStats{{Cookie: 3}}); n != 1 {
		t.Fatalf("once 3 has an entry: %d counted (%v), want 1", n, s.followed)
	}
	// A resync's dump without 2 (closed): no longer counted.
	s.setEvery(time.Second)
	s.share(listWithCookies(9), time.Now(), time.Now())
	if n := s.followedLeft(nil); n != 0 || len(s.followed) != 0 {
		t.Fatalf("after a resync dump without 2: %d counted (%v), want 0", n, s.followed)
	}
}
