package pathpolicy

// Run through `make generate`, which pins the clang version and flags.
//go:generate go tool bpf2go -cc "$CLANG" -cflags "$BPF_CFLAGS" -target bpfel -type subflow_stats -type policy -type addr_key pathpolicy ../bpf/pathpolicy.c -- -I../bpf -D__TARGET_ARCH_x86
//go:generate go tool bpf2go -cc "$CLANG" -cflags "$BPF_CFLAGS" -target bpfel -type share sendshare ../bpf/sendshare.c -- -I../bpf
