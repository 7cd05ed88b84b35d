package pathmgr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// ErrEventsLost is matched (errors.Is) by the error Receive returns when
// the kernel dropped events because the listener's receive buffer was full
// (ENOBUFS). The listener stays usable; the caller should resynchronise its
// view from the inventory (Connections), since it cannot know what it
// missed.
var ErrEventsLost = errors.New("events lost: netlink receive buffer overrun")

// ReceiveBatch is the most events one Receive returns: it reads every
// datagram already queued, up to this many, before it returns. A Receive
// that returns this many may have left more queued.
const ReceiveBatch = 256

// MoreQueued says whether a Receive that returned n events and err may
// have left events queued: a full batch (ReceiveBatch), or a loss
// (ErrEventsLost: the kernel then queues nothing more on the socket until
// it is read empty). A reader that waits between its reads, as a paced
// listener does, reads on at once after such a Receive.
func MoreQueued(n int, err error) bool {
	return n >= ReceiveBatch || errors.Is(err, ErrEventsLost)
}

// EventType is the kind of a path-manager event (enum mptcp_event_type).
type EventType uint8

// The event types the kernel sends. Types this package does not know are
// delivered as they are, with their number.
const (
	EventCreated         EventType = eventCreated
	EventEstablished     EventType = eventEstablished
	EventClosed          EventType = eventClosed
	EventAnnounced       EventType = eventAnnounced
	EventRemoved         EventType = eventRemoved
	EventSubEstablished  EventType = eventSubEstablished
	EventSubClosed       EventType = eventSubClosed
	EventSubPriority     EventType = eventSubPriority
	EventListenerCreated EventType = eventListenerCreated
	EventListenerClosed  EventType = eventListenerClosed
)

var eventNames = map[EventType]string{
	EventCreated:         "created",
	EventEstablished:     "established",
	EventClosed:          "closed",
	EventAnnounced:       "announced",
	EventRemoved:         "removed",
	EventSubEstablished:  "sub_established",
	EventSubClosed:       "sub_closed",
	EventSubPriority:     "sub_priority",
	EventListenerCreated: "listener_created",
	EventListenerClosed:  "listener_closed",
}

// String returns the lower-case name ("sub_established"), or "event_N"
// for a type this package does not know.
func (t EventType) String() string {
	if s, ok := eventNames[t]; ok {
		return s
	}
	return "event_" + strconv.Itoa(int(t))
}

// MarshalJSON encodes the type as its name.
func (t EventType) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// ParseEventType is the inverse of String (names and "event_N").
func ParseEventType(s string) (EventType, bool) {
	for t, n := range eventNames {
		if n == s {
			return t, true
		}
	}
	if rest, ok := strings.CutPrefix(s, "event_"); ok {
		if n, err := strconv.ParseUint(rest, 10, 8); err == nil {
			return EventType(n), true
		}
	}
	return 0, false
}

// Event is one path-manager event. Which fields are set depends on the
// type (see the kernel's mptcp_pm.yaml); Has tells whether the kernel sent
// a given attribute, so that a zero value (local id 0, port 0) can be told
// from an absent one.
//
//   - created, established: Token, Family, Local, Remote, LocalID, RemoteID,
//     ServerSide, DenyJoinID0 (and IfIndex, Backup of the initial subflow).
//   - closed: Token.
//   - announced: Token, RemoteID, Remote (the address the peer announced,
//     and a port: the announced one or the connection's).
//   - removed: Token, RemoteID.
//   - sub_established, sub_closed, sub_priority: Token, Family, LocalID,
//     RemoteID, Local, Remote, Backup, IfIndex, Error; sub_closed may carry
//     ResetReason and ResetFlags (MP_TCPRST).
//   - listener_created, listener_closed: Family, Local (address and port).
type Event struct {
	Type     EventType
	Token    uint32
	Family   uint16 // AF_INET (2) or AF_INET6 (10)
	LocalID  uint8
	RemoteID uint8
	Local    netip.AddrPort // saddr, sport
	Remote   netip.AddrPort // daddr, dport
	Backup   bool
	IfIndex  int
	Error    uint8 // errno of the subflow socket, see HasError
	Flags    uint16
	// ServerSide is set when the connection was accepted (MPTCP_ATTR_SERVER_SIDE
	// before 6.18, the flag bit MPTCP_PM_EV_FLAG_SERVER_SIDE since).
	ServerSide bool
	// DenyJoinID0 is set when the peer refuses joins to its initial address.
	DenyJoinID0 bool
	Timeout     uint32
	ResetReason uint32
	ResetFlags  uint32

	present uint32 // bit n set: attribute n was in the message
}

// EventAttr names an attribute an event may carry (for Has).
type EventAttr uint8

// Event attributes, for Has.
const (
	AttrToken       EventAttr = evAttrToken
	AttrFamily      EventAttr = evAttrFamily
	AttrLocalID     EventAttr = evAttrLocID
	AttrRemoteID    EventAttr = evAttrRemID
	AttrSourceAddr4 EventAttr = evAttrSaddr4
	AttrSourceAddr6 EventAttr = evAttrSaddr6
	AttrDestAddr4   EventAttr = evAttrDaddr4
	AttrDestAddr6   EventAttr = evAttrDaddr6
	AttrSourcePort  EventAttr = evAttrSport
	AttrDestPort    EventAttr = evAttrDport
	AttrBackup      EventAttr = evAttrBackup
	AttrError       EventAttr = evAttrError
	AttrFlags       EventAttr = evAttrFlags
	AttrTimeout     EventAttr = evAttrTimeout
	AttrIfIndex     EventAttr = evAttrIfIdx
	AttrResetReason EventAttr = evAttrResetReason
	AttrResetFlags  EventAttr = evAttrResetFlags
	AttrServerSide  EventAttr = evAttrServerSide
)

// Has reports whether the kernel sent attribute a with the event.
func (e Event) Has(a EventAttr) bool { return a < 32 && e.present&(1<<a) != 0 }

func (e *Event) set(a uint16) {
	if a < 32 {
		e.present |= 1 << a
	}
}

// HasError reports whether the event carries a socket error.
func (e Event) HasError() bool { return e.Has(AttrError) }

func (e Event) hasSaddr() bool { return e.Has(AttrSourceAddr4) || e.Has(AttrSourceAddr6) }
func (e Event) hasDaddr() bool { return e.Has(AttrDestAddr4) || e.Has(AttrDestAddr6) }

// FamilyName is "inet" for AF_INET, "inet6" for AF_INET6 and the number
// otherwise.
func FamilyName(f uint16) string {
	switch f {
	case afInet:
		return "inet"
	case afInet6:
		return "inet6"
	}
	return strconv.Itoa(int(f))
}

// MarshalJSON writes the event as one flat object with "type" and the
// attributes the kernel sent, in snake_case as `ip mptcp monitor` names
// them: token, family ("inet"/"inet6"), saddr, daddr, sport, dport, loc_id,
// rem_id, backup, if_idx, server_side, deny_join_id0, flags, error (+
// error_name), timeout, reset_reason, reset_flags. Keys are sorted.
func (e Event) MarshalJSON() ([]byte, error) {
	m := map[string]any{"type": e.Type.String()}
	if e.Has(AttrToken) {
		m["token"] = e.Token
	}
	if e.Has(AttrFamily) {
		m["family"] = FamilyName(e.Family)
	}
	if e.hasSaddr() {
		m["saddr"] = e.Local.Addr().String()
	}
	if e.hasDaddr() {
		m["daddr"] = e.Remote.Addr().String()
	}
	if e.Has(AttrSourcePort) {
		m["sport"] = e.Local.Port()
	}
	if e.Has(AttrDestPort) {
		m["dport"] = e.Remote.Port()
	}
	if e.Has(AttrLocalID) {
		m["loc_id"] = e.LocalID
	}
	if e.Has(AttrRemoteID) {
		m["rem_id"] = e.RemoteID
	}
	if e.Has(AttrBackup) {
		m["backup"] = e.Backup
	}
	if e.Has(AttrIfIndex) {
		m["if_idx"] = e.IfIndex
	}
	if e.Has(AttrServerSide) || e.ServerSide {
		m["server_side"] = e.ServerSide
	}
	if e.DenyJoinID0 {
		m["deny_join_id0"] = true
	}
	if e.Has(AttrFlags) {
		m["flags"] = e.Flags
	}
	if e.Has(AttrError) {
		m["error"] = e.Error
		m["error_name"] = syscall.Errno(e.Error).Error()
	}
	if e.Has(AttrTimeout) {
		m["timeout"] = e.Timeout
	}
	if e.Has(AttrResetReason) {
		m["reset_reason"] = e.ResetReason
	}
	if e.Has(AttrResetFlags) {
		m["reset_flags"] = e.ResetFlags
	}
	return json.Marshal(m)
}

// String formats the event on one line, like `ip mptcp monitor`:
//
//	[ SUB_ESTABLISHED] token=3735928559 remid=0 locid=2 saddr=10.0.2.1 daddr=10.0.1.2 sport=40001 dport=8080 backup=0 ifindex=3
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%16s]", strings.ToUpper(e.Type.String()))
	if e.Has(AttrToken) {
		fmt.Fprintf(&b, " token=%d", e.Token)
	}
	if e.Has(AttrRemoteID) {
		fmt.Fprintf(&b, " remid=%d", e.RemoteID)
	}
	if e.Has(AttrLocalID) {
		fmt.Fprintf(&b, " locid=%d", e.LocalID)
	}
	if e.hasSaddr() {
		fmt.Fprintf(&b, " saddr=%s", e.Local.Addr())
	}
	if e.hasDaddr() {
		fmt.Fprintf(&b, " daddr=%s", e.Remote.Addr())
	}
	if e.Has(AttrSourcePort) {
		fmt.Fprintf(&b, " sport=%d", e.Local.Port())
	}
	if e.Has(AttrDestPort) {
		fmt.Fprintf(&b, " dport=%d", e.Remote.Port())
	}
	if e.Has(AttrBackup) {
		fmt.Fprintf(&b, " backup=%d", b2i(e.Backup))
	}
	if e.Has(AttrIfIndex) {
		fmt.Fprintf(&b, " ifindex=%d", e.IfIndex)
	}
	if e.Has(AttrError) {
		fmt.Fprintf(&b, " error=%d (%s)", e.Error, syscall.Errno(e.Error))
	}
	if e.ServerSide {
		b.WriteString(" server_side")
	}
	if e.DenyJoinID0 {
		b.WriteString(" deny_join_id0")
	}
	if e.Has(AttrTimeout) {
		fmt.Fprintf(&b, " timeout=%d", e.Timeout)
	}
	if e.Has(AttrResetReason) {
		fmt.Fprintf(&b, " reset_reason=%d", e.ResetReason)
	}
	if e.Has(AttrResetFlags) {
		fmt.Fprintf(&b, " reset_flags=%#x", e.ResetFlags)
	}
	return b.String()
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

// receiveError maps a failed read: ENOBUFS means the kernel dropped events.
func receiveError(err error) error {
	if errors.Is(err, syscall.ENOBUFS) {
		return fmt.Errorf("pathmgr: receive events: %w: %w", ErrEventsLost, err)
	}
	return fmt.Errorf("pathmgr: receive events: %w", err)
}
