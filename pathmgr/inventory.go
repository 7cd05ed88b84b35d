package pathmgr

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"
)

// TCPState is a socket state as sock_diag reports it (include/net/tcp_states.h).
type TCPState uint8

var tcpStateNames = [...]string{
	1: "established", 2: "syn-sent", 3: "syn-recv", 4: "fin-wait-1",
	5: "fin-wait-2", 6: "time-wait", 7: "close", 8: "close-wait",
	9: "last-ack", 10: "listen", 11: "closing", 12: "new-syn-recv",
}

// String returns the state as ss prints it ("established", "listen", ...).
func (s TCPState) String() string {
	if int(s) < len(tcpStateNames) && tcpStateNames[s] != "" {
		return tcpStateNames[s]
	}
	return "state-" + strconv.Itoa(int(s))
}

// MarshalJSON encodes the state as its name.
func (s TCPState) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// ListOptions selects what Connections returns.
type ListOptions struct {
	// ListenersToo includes listening MPTCP sockets (State "listen", no
	// token, no subflows).
	ListenersToo bool
}

// Connection is a live MPTCP connection (or listener) and its subflows.
type Connection struct {
	// Token is the local token, the one path-manager commands and events use.
	Token uint32 `json:"token"`
	// Local and Remote are the addresses of the connection's socket: those
	// of the initial subflow.
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	State  TCPState       `json:"state"`
	// Subflows are the TCP subflows whose local token is Token, sorted by
	// local id then local address.
	Subflows []SubflowInfo `json:"subflows"`
	// Info is the kernel's struct mptcp_info for the connection; nil when
	// the kernel sent none.
	Info *MPTCPInfo `json:"info,omitempty"`
	// Inode is the socket's inode (as in `ss -e`), 0 once orphaned.
	Inode uint32 `json:"inode,omitempty"`
}

// SubflowInfo is one TCP subflow of a Connection, as sock_diag reports it.
type SubflowInfo struct {
	Local  netip.AddrPort
	Remote netip.AddrPort
	// IfIndex and IfName are the interface the subflow leaves through:
	// the device it is bound to when it is, otherwise the interface that
	// holds its local address in the connection's namespace.
	IfIndex int
	IfName  string
	State   TCPState
	// LocalID and RemoteID are the MPTCP address ids of the two ends.
	LocalID, RemoteID uint8
	// Backup is the local backup flag (we asked the peer not to use
	// this subflow unless no other is left); BackupRemote the peer's.
	Backup, BackupRemote bool
	// Flags are the kernel's MPTCP_SUBFLOW_FLAG_* bits.
	Flags uint32
	// TokenLocal and TokenRemote are the connection tokens (CAP_NET_ADMIN
	// only: 0 otherwise).
	TokenLocal, TokenRemote uint32
	// From tcp_info: smoothed RTT and its variance, retransmitted segments
	// in total, bytes acknowledged by the peer, received, sent and
	// retransmitted, and the delivery rate in bytes per second.
	RTT, RTTVar   time.Duration
	Retrans       uint32
	BytesAcked    uint64
	BytesReceived uint64
	BytesSent     uint64
	BytesRetrans  uint64
	DeliveryRate  uint64
	Cwnd          uint32
	MSS           uint32
	// Receive side, from tcp_info: the receiver's RTT estimate
	// (tcpi_rcv_rtt: how long a window of data takes to arrive, queueing
	// included; 0 until data has been received), the data segments
	// received (tcpi_data_segs_in, 4.6) and the packets that arrived out of
	// order (tcpi_rcv_ooopack, 5.4: each segment queued behind a hole, as
	// after a loss on the way in). Sending counters say nothing about a
	// download: these do. Kernels older than the field leave it 0.
	RcvRTT     time.Duration
	DataSegsIn uint32
	RcvOOOPack uint32
	// Cookie is the kernel's socket cookie of the subflow (`ss -e`
	// "sk:", in hex), the key BPF programs know a socket by
	// (bpf_get_socket_cookie).
	Cookie uint64
}

// Subflow returns the subflow's two ends, as DestroySubflow and
// SetSubflowBackup take them.
func (s SubflowInfo) Subflow() Subflow { return Subflow{Local: s.Local, Remote: s.Remote} }

// Join reports whether the subflow was added with MP_JOIN (it is not the
// connection's initial subflow).
func (s SubflowInfo) Join() bool {
	return s.Flags&(mptcpSubflowFlagJoinLoc|mptcpSubflowFlagJoinRem) != 0
}

// FullyEstablished reports the kernel's MPTCP_SUBFLOW_FLAG_FULLY_ESTABLISHED.
func (s SubflowInfo) FullyEstablished() bool { return s.Flags&mptcpSubflowFlagFullyEstablished != 0 }

type subflowJSON struct {
	Local            netip.AddrPort `json:"local"`
	Remote           netip.AddrPort `json:"remote"`
	Dev              string         `json:"dev,omitempty"`
	IfIdx            int            `json:"if_idx,omitempty"`
	State            TCPState       `json:"state"`
	LocID            uint8          `json:"loc_id"`
	RemID            uint8          `json:"rem_id"`
	Backup           bool           `json:"backup"`
	BackupRemote     bool           `json:"backup_remote"`
	Join             bool           `json:"join"`
	FullyEstablished bool           `json:"fully_established"`
	RTTus            int64          `json:"rtt_us"`
	RTTVarus         int64          `json:"rttvar_us"`
	Retrans          uint32         `json:"retrans"`
	BytesAcked       uint64         `json:"bytes_acked"`
	BytesReceived    uint64         `json:"bytes_received"`
	BytesSent        uint64         `json:"bytes_sent"`
	BytesRetrans     uint64         `json:"bytes_retrans"`
	DeliveryRate     uint64         `json:"delivery_rate"` // bytes/s
	Cwnd             uint32         `json:"cwnd"`
	MSS              uint32         `json:"mss"`
	RcvRTTus         int64          `json:"rcv_rtt_us"`
	DataSegsIn       uint32         `json:"data_segs_in"`
	RcvOOOPack       uint32         `json:"rcv_ooopack"`
}

// MarshalJSON writes the subflow with snake_case keys: local, remote, dev,
// if_idx, state, loc_id, rem_id, backup, backup_remote, join,
// fully_established, rtt_us, rttvar_us, retrans, bytes_acked,
// bytes_received, bytes_sent, bytes_retrans, delivery_rate (bytes/s),
// cwnd, mss, rcv_rtt_us, data_segs_in, rcv_ooopack.
func (s SubflowInfo) MarshalJSON() ([]byte, error) {
	return json.Marshal(subflowJSON{
		Local: s.Local, Remote: s.Remote, Dev: s.IfName, IfIdx: s.IfIndex, State: s.State,
		LocID: s.LocalID, RemID: s.RemoteID, Backup: s.Backup, BackupRemote: s.BackupRemote,
		Join: s.Join(), FullyEstablished: s.FullyEstablished(),
		RTTus: s.RTT.Microseconds(), RTTVarus: s.RTTVar.Microseconds(), Retrans: s.Retrans,
		BytesAcked: s.BytesAcked, BytesReceived: s.BytesReceived, BytesSent: s.BytesSent,
		BytesRetrans: s.BytesRetrans, DeliveryRate: s.DeliveryRate, Cwnd: s.Cwnd, MSS: s.MSS,
		RcvRTTus: s.RcvRTT.Microseconds(), DataSegsIn: s.DataSegsIn, RcvOOOPack: s.RcvOOOPack,
	})
}

// MPTCPInfo is the kernel's struct mptcp_info (include/uapi/linux/mptcp.h)
// for one connection. Fields a kernel does not send stay zero: the
// structure grew over time (bytes counters in 6.5, last_* in 6.10).
type MPTCPInfo struct {
	Subflows           uint8  `json:"subflows"`
	AddAddrSignal      uint8  `json:"add_addr_signal"`
	AddAddrAccepted    uint8  `json:"add_addr_accepted"`
	SubflowsMax        uint8  `json:"subflows_max"`
	AddAddrSignalMax   uint8  `json:"add_addr_signal_max"`
	AddAddrAcceptedMax uint8  `json:"add_addr_accepted_max"`
	Flags              uint32 `json:"flags"`
	Token              uint32 `json:"token"`
	WriteSeq           uint64 `json:"write_seq"`
	SndUna             uint64 `json:"snd_una"`
	RcvNxt             uint64 `json:"rcv_nxt"`
	LocalAddrUsed      uint8  `json:"local_addr_used"`
	LocalAddrMax       uint8  `json:"local_addr_max"`
	CsumEnabled        bool   `json:"csum_enabled"`
	Retransmits        uint32 `json:"retransmits"`
	BytesRetrans       uint64 `json:"bytes_retrans"`
	BytesSent          uint64 `json:"bytes_sent"`
	BytesReceived      uint64 `json:"bytes_received"`
	BytesAcked         uint64 `json:"bytes_acked"`
	SubflowsTotal      uint8  `json:"subflows_total"`
	LastDataSent       uint32 `json:"last_data_sent_ms"`
	LastDataRecv       uint32 `json:"last_data_recv_ms"`
	LastAckRecv        uint32 `json:"last_ack_recv_ms"`
}

// Fallback reports whether the connection fell back to plain TCP.
func (i *MPTCPInfo) Fallback() bool { return i.Flags&mptcpInfoFlagFallback != 0 }
