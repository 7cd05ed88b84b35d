/* Shared definitions for gigapath's BPF programs. */
#ifndef GIGAPATH_COMMON_H
#define GIGAPATH_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

/* Constants from the uapi headers that vmlinux.h (BTF) cannot carry. */
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOL_SOCKET 1
#define SO_PRIORITY 12
#define SO_MARK 36
#define SOL_TCP 6
#define TCP_CONGESTION 13
#define GP_IPPROTO_TCP 6
#define GP_IPPROTO_MPTCP 262

/* An IPv4 or IPv6 address as a map key: IPv4 uses addr[0], the rest is 0.
 * Addresses are kept in network byte order. */
struct addr_key {
	__u32 family;
	__u32 addr[4];
};

#endif
