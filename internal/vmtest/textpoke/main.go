//go:build linux

// Command textpoke is the load of .ci/tcg-textpoke-repro: it loads,
// attaches and detaches the mptcpify program ROUNDS times as fast as it
// can. Each attach and detach rewrites the entry of the kernel
// function update_socket_protocol (a BPF trampoline, text_poke_bp), which
// the repro's other processes call on every socket(2).
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/gigapath/gigapath/ebpf/mptcpify"
)

func main() {
	rounds := 1000
	if len(os.Args) > 1 {
		n, err := strconv.Atoi(os.Args[1])
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "usage: textpoke [ROUNDS]: %q is not a positive number\n", os.Args[1])
			os.Exit(2)
		}
		rounds = n
	}
	for i := 1; i <= rounds; i++ {
		m, err := mptcpify.Load()
		if err != nil {
			fmt.Fprintf(os.Stderr, "textpoke: round %d: %v\n", i, err)
			os.Exit(1)
		}
		if err := m.Attach(); err != nil {
			fmt.Fprintf(os.Stderr, "textpoke: round %d: %v\n", i, err)
			os.Exit(1)
		}
		if err := m.Close(); err != nil { // detaches
			fmt.Fprintf(os.Stderr, "textpoke: round %d: detach: %v\n", i, err)
			os.Exit(1)
		}
		if i%100 == 0 {
			fmt.Printf("round %d\n", i)
		}
	}
}
