package sched

// Run through `make generate`, which pins the clang version and flags.
//go:generate go tool bpf2go -cc "$CLANG" -cflags "$BPF_CFLAGS" -target bpfel -no-global-types first ../bpf/sched_first.c -- -I../bpf
//go:generate go tool bpf2go -cc "$CLANG" -cflags "$BPF_CFLAGS" -target bpfel -no-global-types backup ../bpf/sched_backup.c -- -I../bpf
//go:generate go tool bpf2go -cc "$CLANG" -cflags "$BPF_CFLAGS" -target bpfel -no-global-types rr ../bpf/sched_rr.c -- -I../bpf
//go:generate go tool bpf2go -cc "$CLANG" -cflags "$BPF_CFLAGS" -target bpfel -no-global-types redundant ../bpf/sched_redundant.c -- -I../bpf
//go:generate go tool bpf2go -cc "$CLANG" -cflags "$BPF_CFLAGS" -target bpfel -no-global-types minrtt ../bpf/sched_minrtt.c -- -I../bpf
