package controller

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// niceOf reads a thread's nice value from /proc (field 19 of its stat).
func niceOf(t *testing.T, tid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	n, err := strconv.Atoi(f[16])
	if err != nil {
		t.Fatalf("stat of thread %d: %q", tid, b)
	}
	return n
}

// background lowers its goroutine's thread only, and restore gives it its
// priority back (as root; without CAP_SYS_NICE the thread stays locked to
// the goroutine instead, which this cannot see).
func TestBackgroundLowersOnlyItsThread(t *testing.T) {
	base := niceOf(t, os.Getpid())
	tids := make(chan int)
	next, restored := make(chan struct{}), make(chan struct{})
	go func() {
		restore := background()
		tids <- unix.Gettid()
		<-next
		restore()
		close(restored)
	}()
	tid := <-tids // the goroutine holds its thread until next
	if got, want := niceOf(t, tid), min(base+backgroundNice, 19); got != want {
		t.Errorf("background thread: nice %d, want %d", got, want)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tasks {
		other, _ := strconv.Atoi(e.Name())
		if other == tid {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", other)); err != nil {
			continue // ended meanwhile
		}
		if n := niceOf(t, other); n != base {
			t.Errorf("thread %d: nice %d, want the process's %d", other, n, base)
		}
	}
	close(next)
	<-restored
	if os.Geteuid() != 0 {
		return // the thread may be gone with its goroutine
	}
	if got := niceOf(t, tid); got != base {
		t.Errorf("after restore: nice %d, want %d", got, base)
	}
}
