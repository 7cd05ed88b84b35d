//go:build !linux

package controller

func monotonicUsec() int64 { return 0 }
