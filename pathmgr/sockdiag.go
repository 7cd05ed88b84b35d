package pathmgr

// Flag bits of include/uapi/linux/mptcp.h that sock_diag reports and the
// platform-neutral types (SubflowInfo, MPTCPInfo) interpret; the rest of
// the sock_diag numbers live in sockdiag_linux.go.

// MPTCP_SUBFLOW_FLAG_*.
const (
	mptcpSubflowFlagMcapRem          = 1 << 0
	mptcpSubflowFlagMcapLoc          = 1 << 1
	mptcpSubflowFlagJoinRem          = 1 << 2
	mptcpSubflowFlagJoinLoc          = 1 << 3
	mptcpSubflowFlagBkupRem          = 1 << 4
	mptcpSubflowFlagBkupLoc          = 1 << 5
	mptcpSubflowFlagFullyEstablished = 1 << 6
	mptcpSubflowFlagConnected        = 1 << 7
	mptcpSubflowFlagMapValid         = 1 << 8
)

// MPTCP_INFO_FLAG_* in mptcp_info.mptcpi_flags.
const (
	mptcpInfoFlagFallback          = 1 << 0
	mptcpInfoFlagRemoteKeyReceived = 1 << 1
)
