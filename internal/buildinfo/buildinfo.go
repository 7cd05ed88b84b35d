// Package buildinfo says which gigapath a binary is, from what the Go
// toolchain embedded in it (module version, VCS revision and time, whether
// the tree had uncommitted changes), for `gigapath --version` and the
// daemon's status, so an operator can tell which binary is running after
// an upgrade.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// revision is set by `make build` (-ldflags -X) from `git describe`, for
// builds where the toolchain recorded no VCS information.
var revision string

// Version is "VERSION (REVISION[, modified], TIME) GOVERSION", with the
// parts the build has: `go build` in a git checkout records the revision,
// `go install module@version` the version.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information)"
	}
	return format(bi, revision)
}

func format(bi *debug.BuildInfo, fallbackRev string) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		rev = fallbackRev
	}
	var parts []string
	if rev != "" {
		parts = append(parts, rev)
	}
	if modified {
		parts = append(parts, "modified")
	}
	if at != "" {
		parts = append(parts, at)
	}
	out := v
	if len(parts) > 0 {
		out += " (" + strings.Join(parts, ", ") + ")"
	}
	return out + " " + bi.GoVersion
}
