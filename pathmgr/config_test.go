package pathmgr

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestOpenNetNS(t *testing.T) {
	if f, err := OpenNetNS(""); f != nil || err != nil {
		t.Errorf(`OpenNetNS("") = %v, %v; want nil, nil (the current namespace)`, f, err)
	}
	for _, bad := range []string{"a/b", ".", ".."} {
		if _, err := OpenNetNS(bad); err == nil || !strings.Contains(err.Error(), "must not contain '/'") {
			t.Errorf("OpenNetNS(%q) err = %v, want the name rule", bad, err)
		}
	}
	_, err := OpenNetNS("gp-no-such-namespace")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), `"gp-no-such-namespace"`) {
		t.Errorf("missing namespace: err = %v, want os.ErrNotExist naming it", err)
	}
	f, err := OpenNetNS("/proc/self/ns/net")
	if err != nil {
		t.Fatalf("absolute path: %v", err)
	}
	f.Close()
	if _, err := (&Config{NetNS: "a/b"}).netnsFile(); err == nil || !strings.HasPrefix(err.Error(), "pathmgr: network namespace") {
		t.Errorf("Config.netnsFile err = %v, want it prefixed with pathmgr:", err)
	}
}
