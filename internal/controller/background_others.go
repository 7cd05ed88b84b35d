//go:build !linux

package controller

// background: thread priorities are Linux's here (background_linux.go).
func background() (restore func()) { return func() {} }
