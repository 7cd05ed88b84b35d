package controller

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/pathmgr"
)

// The list of followed subflows reads back what was written, each cookie
// once; a missing file, or one of another boot, is an empty list; a file
// that is not one is refused with its path; a cut one gives its whole
// cookies.
func TestFollowedFile(t *testing.T) {
	dir := t.TempDir()
	path := followedFile(filepath.Join(dir, "state"), 7)
	if got, err := readFollowed(path, "b1"); got != nil || err != nil {
		t.Fatalf("missing file: %v, %v; want an empty list", got, err)
	}
	if n, err := writeFollowed(path, "b1", 2, slices.Values([]uint64{1, 1 << 40}), slices.Values([]uint64{3, 1})); err != nil || n != 3 {
		t.Fatalf("wrote %d, %v; want 3 (each cookie once)", n, err)
	}
	b, _ := os.ReadFile(path)
	if want := len(followedMagic) + len("b1\n") + 3*8; len(b) != want {
		t.Errorf("the file has %d bytes, want %d (three cookies, each once)", len(b), want)
	}
	got, err := readFollowed(path, "b1")
	if err != nil || !slices.Equal(slices.Sorted(maps.Keys(got)), []uint64{1, 3, 1 << 40}) {
		t.Fatalf("read back %v, %v; want 1, 3 and 1<<40", got, err)
	}
	if got, err := readFollowed(path, "b2"); got != nil || err != nil {
		t.Errorf("a list of another boot: %v, %v; want an empty list", got, err)
	}
	if err := os.WriteFile(path, b[:len(b)-3], 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readFollowed(path, "b1"); err != nil || len(got) != 2 {
		t.Errorf("a cut list: %v, %v; want its two whole cookies", got, err)
	}
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readFollowed(path, "b1"); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("not a list: %v, want an error naming %s", err, path)
	}
}

// listWithCookies is one connection whose established subflows have these
// cookies.
func listWithCookies(cookies ...uint64) []pathmgr.Connection {
	c := pathmgr.Connection{Token: 1}
	for i, k := range cookies {
		c.Subflows = append(c.Subflows, pathmgr.SubflowInfo{State: tcpEstablished,
			Local: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+i)), Cookie: k})
	}
	return []pathmgr.Connection{c}
}

func entries(cookies ...uint64) []pathpolicy.SubflowStats {
	var out []pathpolicy.SubflowStats
	for _, k := range cookies {
		out = append(out, pathpolicy.SubflowStats{Cookie: k, State: tcpEstablished})
	}
	return out
}

// The followed subflows count as covered only once a dump (the sampler's
// or a resync's) has shown which of them live, and only those without an
// entry in the map: one that has an entry is counted by it, one that
// closed not at all. Nothing counts while the map is full, or while the
// first dump showed a subflow in neither the map nor the list (made while
// no program ran), until it closes.
func TestSamplerCountsFollowedSubflows(t *testing.T) {
	pp := &pathpolicy.PathPolicy{} // only its identity is used
	s := newSampler(&countingInventory{}, time.Now, func(string, time.Duration) {})
	s.followed = map[uint64]struct{}{1: {}, 2: {}, 3: {}, 4: {}}
	if n := s.followedCredit(pp, false, entries(1, 9)); n != 0 {
		t.Fatalf("before any dump: %d counted, want 0", n)
	}
	s.checkFollowed(pp, listWithCookies(2, 3, 9), time.Now(), entries(9)) // 4 closed
	if n := s.followedCredit(pp, false, entries(9)); n != 2 {
		t.Fatalf("after a dump with 2 and 3: %d counted (%v), want 2", n, s.followed)
	}
	if n := s.followedCredit(pp, true, entries(9)); n != 0 {
		t.Fatalf("with the map full: %d counted, want 0", n)
	}
	if n := s.followedCredit(pp, false, entries(3, 9)); n != 1 {
		t.Fatalf("once 3 has an entry: %d counted (%v), want 1", n, s.followed)
	}
	// A resync's dump without 2 (closed): no longer counted.
	s.setEvery(time.Second)
	s.share(listWithCookies(3, 9), time.Now(), time.Now())
	if n := s.followedCredit(pp, false, entries(3, 9)); n != 0 || len(s.followed) != 0 {
		t.Fatalf("after a resync dump without 2: %d counted (%v), want 0", n, s.followed)
	}

	// 5 has no entry and is not followed: made while no program ran.
	s = newSampler(&countingInventory{}, time.Now, func(string, time.Duration) {})
	s.followed = map[uint64]struct{}{1: {}}
	s.checkFollowed(pp, listWithCookies(1, 5), time.Now(), nil)
	if n := s.followedCredit(pp, false, nil); n != 0 {
		t.Fatalf("with an unfollowed subflow alive: %d counted, want 0", n)
	}
	// 5 closed; 6, new since the first check, lacks an entry only in the
	// map read before the dump: it does not count as unfollowed.
	s.checkFollowed(pp, listWithCookies(1, 6), time.Now(), nil)
	if n := s.followedCredit(pp, false, nil); n != 1 {
		t.Fatalf("once the unfollowed subflow closed: %d counted (unfollowed %v), want 1", n, s.unfollowed)
	}
	// Another program (a reload loaded it anew): checked again from scratch.
	if n := s.followedCredit(&pathpolicy.PathPolicy{}, false, nil); n != 0 {
		t.Fatalf("for another program: %d counted, want 0 until a dump", n)
	}
}

// A map read that covers what the loop knows by itself (a new subflow's
// entry came before the loop had its event) leaves the idle followed
// subflows on the list: once the loop knows the new subflow, they count.
func TestSamplerCoverageKeepsTheList(t *testing.T) {
	pp := &pathpolicy.PathPolicy{}
	s := newSampler(&countingInventory{}, time.Now, func(string, time.Duration) {})
	s.followed = map[uint64]struct{}{1: {}}
	s.checkFollowed(pp, listWithCookies(1, 2), time.Now(), entries(2))
	// 3 is new: in the map, not yet known to the loop.
	if got := s.coverage(pp, 64, entries(2, 3), 2, 2); got != 2 {
		t.Fatalf("covered %d, want 2 (the map alone)", got)
	}
	if got := s.coverage(pp, 64, entries(2, 3), 2, 3); got != 3 {
		t.Fatalf("once the loop knows 3: covered %d of 3 (list %v), want 3 (idle 1 still counted)", got, s.followed)
	}
	if got := s.coverage(pp, 2, entries(2, 3), 2, 3); got != 2 {
		t.Fatalf("with the map full: covered %d, want 2", got)
	}
}

// While sampling, the list is written at the first sample, then again
// when the map's entries have changed by more than a sixteenth or a
// minute has passed, not at every sample.
func TestSamplerKeepsTheList(t *testing.T) {
	path := followedFile(t.TempDir(), 7)
	s := newSampler(&countingInventory{}, time.Now, func(string, time.Duration) {})
	s.list = &followedList{path: path, boot: "b1", warn: func(err error) { t.Error(err) }}
	listed := func() int {
		got, err := readFollowed(path, "b1")
		if err != nil {
			t.Fatal(err)
		}
		return len(got)
	}
	cookies := make([]uint64, 32)
	for i := range cookies {
		cookies[i] = uint64(i + 1)
	}
	s.keepFollowed(entries(cookies...))
	if n := listed(); n != 32 {
		t.Fatalf("after the first sample the list holds %d, want 32", n)
	}
	s.keepFollowed(entries(cookies[:30]...)) // 2 of 32: not more than a sixteenth
	if n := listed(); n != 32 {
		t.Fatalf("after a change of 2 in 32 the list holds %d, want 32 (not written again)", n)
	}
	s.keepFollowed(entries(cookies[:29]...))
	if n := listed(); n != 29 {
		t.Fatalf("after a change of 3 in 32 the list holds %d, want 29", n)
	}
	s.wrote = s.wrote.Add(-followedEvery)
	s.followed = map[uint64]struct{}{100: {}} // idle, no entry
	s.keepFollowed(entries(cookies[:28]...))
	if n := listed(); n != 29 {
		t.Fatalf("a minute later the list holds %d, want 29 (28 entries and one followed)", n)
	}

	// A write that fails is said once, not at every try.
	var warned int
	s.list = &followedList{path: filepath.Join(path, "not-a-dir", "list"), boot: "b1", warn: func(error) { warned++ }}
	for range 3 {
		s.wrote = s.wrote.Add(-followedEvery)
		s.keepFollowed(entries(cookies...))
	}
	if warned != 1 {
		t.Errorf("three failing writes warned %d times, want 1", warned)
	}
}

// BenchmarkFollowedList is the list's share of a stop and of a start: the
// write at a stop (the map's entries, then the listed subflows without
// one) and the read at the next start, for as many subflows as a proxy
// with 50,000 connections and their joins follows, and twice that. The
// map's own read at the stop is the sampler's "a read" in
// docs/benchmarks.md.
//
//	go test -run '^$' -bench FollowedList -benchmem ./internal/controller
func BenchmarkFollowedList(b *testing.B) {
	for _, n := range []int{80_000, 160_000} {
		stats := make([]pathpolicy.SubflowStats, n*7/8)
		for i := range stats {
			stats[i].Cookie = uint64(i + 1)
		}
		// The rest are listed without an entry (idle since the last start);
		// the first eighth of them overlaps the entries.
		followed := map[uint64]struct{}{}
		for i := len(stats) - n/64; i < n; i++ {
			followed[uint64(i+1)] = struct{}{}
		}
		path := followedFile(b.TempDir(), 1)
		l := &followedList{path: path, boot: "b", warn: func(err error) { b.Fatal(err) }}
		b.Run("write/subflows="+strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				if _, ok := l.save(stats, followed); !ok {
					b.Fatal("not saved")
				}
			}
		})
		b.Run("read/subflows="+strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				if got, err := readFollowed(path, "b"); err != nil || len(got) != n {
					b.Fatalf("read %d, %v; want %d", len(got), err, n)
				}
			}
		})
	}
}
