package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		bi   debug.BuildInfo
		rev  string
		want string
	}{
		{debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.3.0"}}, "", "v0.3.0 go1.26.0"},
		{debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "ada41db0123456789abcdef"}, {Key: "vcs.time", Value: "2026-11-28T06:00:15Z"}, {Key: "vcs.modified", Value: "true"},
		}}, "ignored", "(devel) (ada41db01234, modified, 2026-11-28T06:00:15Z) go1.26.0"},
		{debug.BuildInfo{GoVersion: "go1.26.0"}, "", "(devel) go1.26.0"},
		{debug.BuildInfo{GoVersion: "go1.26.0"}, "ada41db-dirty", "(devel) (ada41db-dirty) go1.26.0"},
	} {
		if got := format(&tc.bi, tc.rev); got != tc.want {
			t.Errorf("format = %q, want %q", got, tc.want)
		}
	}
	if v := Version(); !strings.Contains(v, "go1.") {
		t.Errorf("Version() = %q: no Go version", v)
	}
}
