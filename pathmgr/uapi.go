package pathmgr

// Numbers of the kernel's generic netlink family "mptcp_pm", taken from
// include/uapi/linux/mptcp_pm.h (generated from
// Documentation/netlink/specs/mptcp_pm.yaml) and include/uapi/linux/mptcp.h.
// This is the only file that holds them: golang.org/x/sys/unix has none.

const (
	familyName    = "mptcp_pm"
	familyVersion = 1
	groupCommands = "mptcp_pm_cmds"
	groupEvents   = "mptcp_pm_events"
	solMPTCP      = 284 // SOL_MPTCP
	ipprotoMPTCP  = 262 // IPPROTO_MPTCP
	maxEndpointID = 255
	maxLimitValue = 8 // MPTCP_PM_ADDR_MAX on 5.x..6.18 kernels

	// Address families as Linux numbers them on the wire (the same on
	// every architecture; other OSes' AF_INET6 differs).
	afInet  = 2  // AF_INET
	afInet6 = 10 // AF_INET6
)

// Commands (enum, MPTCP_PM_CMD_*).
const (
	cmdUnspec = iota
	cmdAddAddr
	cmdDelAddr
	cmdGetAddr
	cmdFlushAddrs
	cmdSetLimits
	cmdGetLimits
	cmdSetFlags
	cmdAnnounce
	cmdRemove
	cmdSubflowCreate
	cmdSubflowDestroy
)

// Top-level attributes (MPTCP_PM_ATTR_*).
const (
	attrUnspec = iota
	attrAddr
	attrRcvAddAddrs
	attrSubflows
	attrToken
	attrLocID
	attrAddrRemote
)

// Attributes nested in an address (MPTCP_PM_ADDR_ATTR_*).
const (
	addrAttrUnspec = iota
	addrAttrFamily // u16
	addrAttrID     // u8
	addrAttrAddr4  // struct in_addr
	addrAttrAddr6  // struct in6_addr
	addrAttrPort   // u16, host byte order on the wire (kernel uses nla_get_u16)
	addrAttrFlags  // u32
	addrAttrIfIdx  // s32
)

// Endpoint flags (MPTCP_PM_ADDR_FLAG_*).
const (
	flagSignal   = 1 << 0
	flagSubflow  = 1 << 1
	flagBackup   = 1 << 2
	flagFullmesh = 1 << 3
	flagImplicit = 1 << 4 // set by the kernel only
	flagLaminar  = 1 << 5 // 6.18
)

// Event types (enum mptcp_event_type).
const (
	eventUnspec          = 0
	eventCreated         = 1
	eventEstablished     = 2
	eventClosed          = 3
	eventAnnounced       = 6
	eventRemoved         = 7
	eventSubEstablished  = 10
	eventSubClosed       = 11
	eventSubPriority     = 13
	eventListenerCreated = 15
	eventListenerClosed  = 16
)

// Event attributes (enum mptcp_event_attr).
const (
	evAttrUnspec      = iota
	evAttrToken       // u32
	evAttrFamily      // u16
	evAttrLocID       // u8
	evAttrRemID       // u8
	evAttrSaddr4      // be32
	evAttrSaddr6      // in6_addr
	evAttrDaddr4      // be32
	evAttrDaddr6      // in6_addr
	evAttrSport       // be16
	evAttrDport       // be16
	evAttrBackup      // u8
	evAttrError       // u8
	evAttrFlags       // u16
	evAttrTimeout     // u32
	evAttrIfIdx       // u32
	evAttrResetReason // u32
	evAttrResetFlags  // u32
	evAttrServerSide  // u8 (deprecated in 6.18 in favour of evFlagServerSide)
)

// Event flags carried in evAttrFlags (MPTCP_PM_EV_FLAG_*).
const (
	evFlagDenyJoinID0 = 1 << 0
	evFlagServerSide  = 1 << 1
)

// Netlink framing of the event datagrams this package reads itself
// (include/uapi/linux/netlink.h, include/uapi/linux/genetlink.h); the
// same on every architecture.
const (
	nlmsgHdrLen  = 16 // sizeof(struct nlmsghdr)
	genlHdrLen   = 4  // sizeof(struct genlmsghdr)
	nlmsgError   = 2  // NLMSG_ERROR
	nlmsgOverrun = 4  // NLMSG_OVERRUN
)
