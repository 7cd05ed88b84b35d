//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "", ""},
		{"phone", "/run/netns/phone", ""},
		{"/proc/1/ns/net", "/proc/1/ns/net", ""},
		{"a/b", "", "must not contain '/'"},
		{"..", "", "must not contain '/'"},
	} {
		got, err := Path(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.in)) {
				t.Errorf("Path(%q) error = %v, want one naming the input and %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Path(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestOpenMissing(t *testing.T) {
	_, err := Open("gigapath-no-such-netns")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "gigapath-no-such-netns") {
		t.Fatalf("Open of a missing namespace: %v, want os.ErrNotExist naming it", err)
	}
}

// TestIntegrationCookie: the cookie is the kernel's per-namespace number:
// the same for one namespace however it is named, another for another
// namespace; Do really runs inside the namespace (the kernel's per-thread
// /proc view of its links is the oracle).
func TestIntegrationCookie(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (ip netns add)")
	}
	name := fmt.Sprintf("gp-nstest-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	own1, err := Cookie("")
	if err != nil {
		t.Fatal(err)
	}
	own2, err := Cookie("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	other, err := Cookie(name)
	if err != nil {
		t.Fatal(err)
	}
	if own1 == 0 || own1 != own2 {
		t.Fatalf("own namespace cookie: %d by \"\" and %d by /proc/self/ns/net; want one non-zero value", own1, own2)
	}
	if other == own1 {
		t.Fatalf("namespace %s has our cookie %d", name, own1)
	}
	// Do really runs inside: the namespace has only lo, ours has more.
	var links []string
	if err := Do(name, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/dev")
		links = strings.Split(strings.TrimSpace(string(b)), "\n")[2:]
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 || !strings.HasPrefix(strings.TrimSpace(links[0]), "lo:") {
		t.Fatalf("inside %s /proc/thread-self/net/dev lists %q, want only lo", name, links)
	}
}
