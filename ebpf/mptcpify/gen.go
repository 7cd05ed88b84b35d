package mptcpify

// Run through `make generate`, which pins the clang version and flags.
//go:generate go tool bpf2go -cc "$CLANG" -cflags "$BPF_CFLAGS" -target bpfel mptcpify ../bpf/mptcpify.c -- -I../bpf -D__TARGET_ARCH_x86
