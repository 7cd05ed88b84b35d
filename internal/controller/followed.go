package controller

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/pathmgr"
	"github.com/gigapath/gigapath/pathmgr/netns"
)

// Subflows the sockops program followed, across a restart.
//
// The program turns a subflow's callbacks on when the subflow is
// established, and the socket keeps them for its life: a later program
// gets that subflow's callbacks too, and gives it a telemetry entry at its
// next segment. A restarted daemon's new map therefore lacks only the
// subflows that have been idle since, whose counters have not moved, and
// the subflows established while no program was attached, which never get
// an entry. The sampler cannot tell the two apart from the map, and took a
// sock_diag dump for every sample while either kind lived (at 50,000
// connections a dump is 0.3 s of CPU). A daemon that stops (or upgrades
// in place, to a binary that may not keep the map) therefore lists in its
// state directory the socket cookies of the subflows its program
// followed, and its sampler keeps that list while it runs, for a
// crash. The next start reads the list, and a dump, with the map read
// after it, shows which of them live without an entry (followed) and
// which live subflows are neither in the map nor in the list (unfollowed:
// made while no program was attached). While there are none of the
// latter, the sampler counts the former as covered. Socket cookies are
// not reused before a reboot, and the list names the boot it was written
// in.

// followedMagic starts the file's first line, the boot id ends it; the
// cookies follow, 8 bytes each, little endian.
const followedMagic = "gigapath followed subflows v1 boot "

// maxFollowed bounds the list: twice the largest telemetry map.
const maxFollowed = 2 * serverTelemetrySubflows

// bootIDFile names the boot (a random UUID the kernel makes at boot).
const bootIDFile = "/proc/sys/kernel/random/boot_id"

func bootID() (string, error) {
	b, err := os.ReadFile(bootIDFile)
	return strings.TrimSpace(string(b)), err
}

// followedFile is the list's path for the namespace whose cookie is ns.
func followedFile(dir string, ns uint64) string {
	return filepath.Join(dir, fmt.Sprintf("followed-netns-%d.bin", ns))
}

// readFollowed reads the list at path written in the boot boot: a missing
// file, or one of another boot, is an empty list; cookies beyond
// maxFollowed are left out.
func readFollowed(path, boot string) (map[uint64]struct{}, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(io.LimitReader(f, 256+8*maxFollowed))
	first, err := r.ReadString('\n')
	id, ok := strings.CutPrefix(strings.TrimSuffix(first, "\n"), followedMagic)
	if err != nil || !ok {
		return nil, fmt.Errorf("%s: not a list of followed subflows (want a first line %q and a boot id)", path, followedMagic)
	}
	if id != boot {
		return nil, nil // socket cookies start again at each boot
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rest = rest[:len(rest)-len(rest)%8] // a cut file: its whole cookies
	out := make(map[uint64]struct{}, len(rest)/8)
	for ; len(rest) > 0; rest = rest[8:] {
		out[binary.LittleEndian.Uint64(rest)] = struct{}{}
	}
	return out, nil
}

// writeFollowed replaces the list at path with the cookies of sets, in
// that order, each once, maxFollowed at most. It returns how many it
// wrote.
func writeFollowed(path, boot string, hint int, sets ...iter.Seq[uint64]) (int, error) {
	hint = min(hint, maxFollowed)
	b := make([]byte, 0, len(followedMagic)+len(boot)+1+8*hint)
	b = append(b, followedMagic+boot+"\n"...)
	seen := make(map[uint64]struct{}, hint)
	for _, set := range sets {
		for c := range set {
			if len(seen) == maxFollowed {
				break
			}
			if _, ok := seen[c]; !ok {
				seen[c] = struct{}{}
				b = binary.LittleEndian.AppendUint64(b, c)
			}
		}
	}
	return len(seen), writeFileAtomic(path, b)
}

// followedList is where the list is kept: its file, the boot it names,
// and how to say that it could not be.
type followedList struct {
	path, boot string
	warn       func(err error)
	// failing is the last write's error, said once (the sampler writes
	// every minute).
	failing string
}

// save writes the list: the cookies of the map's entries (stats), then
// those of followed, each once. It returns how many it wrote and whether
// it could.
func (l *followedList) save(stats []pathpolicy.SubflowStats, followed map[uint64]struct{}) (int, bool) {
	entries := func(yield func(uint64) bool) {
		for _, st := range stats {
			if !yield(st.Cookie) {
				return
			}
		}
	}
	n, err := writeFollowed(l.path, l.boot, len(stats)+len(followed), entries, maps.Keys(followed))
	switch {
	case err == nil:
		l.failing = ""
		return n, true
	case err.Error() != l.failing:
		l.failing = err.Error()
		l.warn(err)
	}
	return 0, false
}

// loadFollowed hands the sampler the list a previous run left, and where
// to keep it (before the sampler starts).
func (c *Controller) loadFollowed() {
	if c.cfg.StateDir == "" {
		return
	}
	ns, err := netns.Cookie(c.cfg.NetNS)
	if err != nil {
		return // loadIDs warned
	}
	warn := func(err error) { c.log.Warn(followedLost, "err", err) }
	boot, err := bootID()
	if err != nil {
		warn(err)
		return
	}
	l := &followedList{path: followedFile(c.cfg.StateDir, ns), boot: boot, warn: warn}
	f, err := readFollowed(l.path, boot)
	if err != nil {
		warn(err)
	}
	c.sampler.list, c.sampler.followed = l, f
}

// followedLost: what a list that cannot be read or saved costs.
const followedLost = "the list of followed subflows is not kept: after a restart, health samples come from sock_diag until idle subflows send"

// saveFollowed lists the subflows the program follows (those with an
// entry, and those of the sampler's list that have none yet) for the next
// start; at a stop or an upgrade, after the sampler has stopped and before
// the program is closed.
func (c *Controller) saveFollowed() {
	if c.pp == nil || c.sampler.list == nil {
		return
	}
	stats, err := c.pp.Telemetry()
	if err != nil {
		c.sampler.list.warn(err)
		return
	}
	if n, ok := c.sampler.list.save(stats, c.sampler.followed); ok {
		c.log.Info("followed subflows listed for the next start", "subflows", n, "file", c.sampler.list.path)
	}
}

// followedEvery is how often the sampler writes the list while the map's
// entries change by less than a sixteenth: the list a crash leaves.
const followedEvery = time.Minute

// keepFollowed writes the list from the sampler's map read (stats) when
// it is older than followedEvery or the number of entries has changed by
// more than a sixteenth since, so that a restart after a crash finds
// the subflows followed until shortly before (at 100,000 subflows a write
// is 800 KB in /run and about 10 ms of the sampler's CPU).
func (s *sampler) keepFollowed(stats []pathpolicy.SubflowStats) {
	if s.list == nil {
		return
	}
	n := len(stats)
	if !s.wrote.IsZero() && time.Since(s.wrote) < followedEvery && max(n-s.wroteN, s.wroteN-n) <= s.wroteN/16 {
		return
	}
	s.list.save(stats, s.followed)
	s.wrote, s.wroteN = time.Now(), n
}

// coverage is how many subflows a map read (stats, of a map of capacity
// entries; subs of them established) covers of the known ones: its
// established entries, and the followed subflows that followedCredit
// counts. The list is checked even when the map alone covers what the
// loop knows: a new subflow has its entry before the loop has its event,
// and the list must not lose the idle ones meanwhile.
func (s *sampler) coverage(pp *pathpolicy.PathPolicy, capacity uint32, stats []pathpolicy.SubflowStats, subs int, known int64) int64 {
	covered := int64(subs)
	if credit := s.followedCredit(pp, uint32(len(stats)) >= capacity, stats); covered < known {
		covered += credit
	}
	return covered
}

// followedCredit drops from the list the subflows that have an entry in
// stats (the map read of this sample, full when it is at the map's size)
// and returns how many of the list to count as covered: those that live
// without an entry, once a dump has shown which live, while it showed no
// subflow that is neither in the map nor in the list, and while the map
// is not full (its least recently updated entries are evicted, an idle
// subflow's among them).
func (s *sampler) followedCredit(pp *pathpolicy.PathPolicy, full bool, stats []pathpolicy.SubflowStats) int64 {
	if len(s.followed) == 0 {
		return 0
	}
	if sd := s.shared.Load(); sd != nil && sd.read.After(s.followedAt) {
		s.checkFollowed(pp, sd.list, sd.read, stats) // a resync's dump, read before stats
	}
	for _, st := range stats {
		delete(s.followed, st.Cookie)
	}
	if full || s.checkedFor != pp || len(s.unfollowed) > 0 {
		return 0
	}
	return int64(len(s.followed))
}

// checkFollowed takes a dump read at at, and stats, pp's map read after
// it: the list keeps the subflows that live without an entry; the first
// check for pp notes the live subflows that are neither in the map nor in
// the list, and later ones only drop those that closed or got an entry (a
// subflow established since has its entry from its start).
func (s *sampler) checkFollowed(pp *pathpolicy.PathPolicy, list []pathmgr.Connection, at time.Time, stats []pathpolicy.SubflowStats) {
	entries := make(map[uint64]struct{}, len(stats))
	for _, st := range stats {
		entries[st.Cookie] = struct{}{}
	}
	first := s.checkedFor != pp
	followed := make(map[uint64]struct{}, len(s.followed))
	unfollowed := map[uint64]struct{}{}
	for _, k := range list {
		for _, sf := range k.Subflows {
			if sf.State != tcpEstablished {
				continue
			}
			if _, ok := entries[sf.Cookie]; ok {
				continue
			}
			if _, ok := s.followed[sf.Cookie]; ok {
				followed[sf.Cookie] = struct{}{}
			} else if _, ok := s.unfollowed[sf.Cookie]; ok || first {
				unfollowed[sf.Cookie] = struct{}{}
			}
		}
	}
	s.followed, s.unfollowed, s.followedAt, s.checkedFor = followed, unfollowed, at, pp
}
