package controller

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
// in place, to a binary that may not keep the map) therefore lists
// in its state directory the socket cookies of the subflows its program
// followed; the next start reads the list, and the sampler counts those
// of them that live (checked against a dump) as covered until they get
// an entry. Socket cookies are not reused until a reboot, which empties
// /run, so an old list is never wrong, only short.

// followedMagic starts the file; the cookies follow, 8 bytes each, little
// endian.
const followedMagic = "gigapath followed subflows v1\n"

// maxFollowed bounds what is read: twice the largest telemetry map.
const maxFollowed = 2 * serverTelemetrySubflows

// followedFile is the list's path for the namespace whose cookie is ns.
func followedFile(dir string, ns uint64) string {
	return filepath.Join(dir, fmt.Sprintf("followed-netns-%d.bin", ns))
}

// readFollowed reads a list; a missing file is an empty list.
func readFollowed(path string) (map[uint64]struct{}, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(len(followedMagic)+8*maxFollowed+1)))
	if err != nil {
		return nil, err
	}
	rest, ok := bytes.CutPrefix(b, []byte(followedMagic))
	switch {
	case !ok:
		return nil, fmt.Errorf("%s: not a list of followed subflows (want it to start with %q)", path, followedMagic)
	case len(rest)%8 != 0:
		return nil, fmt.Errorf("%s: %d bytes of cookies, not a multiple of 8", path, len(rest))
	case len(rest) > 8*maxFollowed:
		return nil, fmt.Errorf("%s: more than %d cookies", path, maxFollowed)
	}
	out := make(map[uint64]struct{}, len(rest)/8)
	for ; len(rest) > 0; rest = rest[8:] {
		out[binary.LittleEndian.Uint64(rest)] = struct{}{}
	}
	return out, nil
}

// writeFollowed replaces the list at path with cookies.
func writeFollowed(path string, cookies []uint64) error {
	b := make([]byte, 0, len(followedMagic)+8*len(cookies))
	b = append(b, followedMagic...)
	for _, c := range cookies {
		b = binary.LittleEndian.AppendUint64(b, c)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// loadFollowed hands the sampler the list a previous run left (before
// the sampler starts).
func (c *Controller) loadFollowed() {
	if c.cfg.StateDir == "" {
		return
	}
	ns, err := netns.Cookie(c.cfg.NetNS)
	if err != nil {
		return // loadIDs warned
	}
	c.followedPath = followedFile(c.cfg.StateDir, ns)
	f, err := readFollowed(c.followedPath)
	if err != nil {
		c.log.Warn("health samples may come from sock_diag until idle subflows send: the list of followed subflows cannot be read", "err", err)
		return
	}
	c.sampler.followed = f
}

// saveFollowed lists the subflows the program follows (those with an
// entry, and those of the sampler's list that have none yet) for the next
// start; at a stop or an upgrade, after the sampler has stopped and before
// the program is closed.
func (c *Controller) saveFollowed() {
	if c.pp == nil || c.followedPath == "" {
		return
	}
	stats, err := c.pp.Telemetry()
	if err != nil {
		c.log.Warn("the list of followed subflows is not saved: the next start samples health from sock_diag until idle subflows send", "err", err)
		return
	}
	cookies := make([]uint64, 0, len(stats)+len(c.sampler.followed))
	for _, st := range stats {
		cookies = append(cookies, st.Cookie)
	}
	for k := range c.sampler.followed {
		cookies = append(cookies, k)
	}
	if err := writeFollowed(c.followedPath, cookies); err != nil {
		c.log.Warn("the list of followed subflows is not saved: the next start samples health from sock_diag until idle subflows send", "err", err)
	}
}

// followedLeft drops from the list the subflows that have an entry in
// stats (they are covered by it from now on) and returns how many of the
// list live without one: 0 until a dump has shown which of them live
// (the list is read at start, and subflows close).
func (s *sampler) followedLeft(stats []pathpolicy.SubflowStats) int64 {
	if len(s.followed) == 0 {
		return 0
	}
	if sd := s.shared.Load(); sd != nil && sd.read.After(s.followedAt) {
		s.pruneFollowed(sd.list, sd.read) // a resync's dump: the subflows that live
	}
	for _, st := range stats {
		delete(s.followed, st.Cookie)
	}
	if s.followedAt.IsZero() {
		return 0
	}
	return int64(len(s.followed))
}

// pruneFollowed keeps in the list only the subflows of a dump read at at.
func (s *sampler) pruneFollowed(list []pathmgr.Connection, at time.Time) {
	if len(s.followed) == 0 {
		return
	}
	live := make(map[uint64]struct{}, len(s.followed))
	for _, k := range list {
		for _, sf := range k.Subflows {
			if _, ok := s.followed[sf.Cookie]; ok {
				live[sf.Cookie] = struct{}{}
			}
		}
	}
	s.followed, s.followedAt = live, at
}
