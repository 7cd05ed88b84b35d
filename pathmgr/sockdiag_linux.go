//go:build linux

package pathmgr

// Numbers of the sock_diag netlink family (NETLINK_SOCK_DIAG) used by the
// connection inventory, from include/uapi/linux/inet_diag.h,
// include/uapi/linux/mptcp.h and include/uapi/linux/tcp.h. This is the
// only file that holds them; golang.org/x/sys/unix provides
// NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY and TCPInfo, and has none of the
// rest.

// Sizes of the fixed headers.
const (
	sizeofInetDiagReqV2 = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg   = 72 // struct inet_diag_msg
	sizeofMPTCPInfo     = 96 // struct mptcp_info as of Linux 6.10 (older kernels send less)
)

// Attributes of a request (enum INET_DIAG_REQ_*).
const (
	inetDiagReqNone     = 0
	inetDiagReqBytecode = 1
	inetDiagReqProtocol = 3 // u32: protocols above 255 (IPPROTO_MPTCP)
)

// Attributes of a reply (enum INET_DIAG_*).
const (
	inetDiagNone    = 0
	inetDiagMeminfo = 1
	inetDiagInfo    = 2 // tcp_info for TCP, mptcp_info for MPTCP
	inetDiagULPInfo = 19
)

// Nested in inetDiagULPInfo (enum INET_ULP_INFO_*).
const (
	inetULPInfoName  = 1 // string, "mptcp" for subflows
	inetULPInfoTLS   = 2
	inetULPInfoMPTCP = 3 // nest of mptcpSubflowAttr*
)

// Nested in inetULPInfoMPTCP (enum MPTCP_SUBFLOW_ATTR_*). Tokens and
// sequence numbers are sent only to CAP_NET_ADMIN callers.
const (
	mptcpSubflowAttrTokenRem   = 1  // u32
	mptcpSubflowAttrTokenLoc   = 2  // u32
	mptcpSubflowAttrRelSeq     = 3  // u32
	mptcpSubflowAttrMapSeq     = 4  // u64
	mptcpSubflowAttrMapSfSeq   = 5  // u32
	mptcpSubflowAttrSsnOffset  = 6  // u32
	mptcpSubflowAttrMapDatalen = 7  // u16
	mptcpSubflowAttrFlags      = 8  // u32, mptcpSubflowFlag*
	mptcpSubflowAttrIDRem      = 9  // u8
	mptcpSubflowAttrIDLoc      = 10 // u8
)

// TCP states (include/net/tcp_states.h), used as bit numbers in
// inet_diag_req_v2.idiag_states.
const (
	tcpEstablished = 1
	tcpSynSent     = 2
	tcpSynRecv     = 3
	tcpFinWait1    = 4
	tcpFinWait2    = 5
	tcpTimeWait    = 6
	tcpClose       = 7
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpListen      = 10
	tcpClosing     = 11
	tcpNewSynRecv  = 12
)
