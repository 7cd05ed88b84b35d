package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// withEnv makes Parse see only vars as the environment.
func withEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	old := lookupEnv
	lookupEnv = func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	t.Cleanup(func() { lookupEnv = old })
}

// TestEnvExpansion: ${NAME} in values comes from the environment; a plain
// scalar is typed after expansion (a port is a number), keys and comments
// are left alone, $${ is a literal ${, and an unset variable or a broken
// reference is an error naming the line and the key.
func TestEnvExpansion(t *testing.T) {
	withEnv(t, map[string]string{"NODE_IP": "192.0.2.7", "JPORT": "1081", "IF": "eth1", "EMPTY": ""})
	p := mustParse(t, `side: server   # ${NOT_SET} in a comment is not expanded
path_manager: userspace
interfaces:
  - name: ${IF}
    role: ethernet
announce:
  - address: ${NODE_IP}
    port: ${JPORT}
  - interface: "${IF}"
metrics:
  listen: "${NODE_IP}:9477"
status_socket: "/run/x$${y}${EMPTY}"
`)
	if a := p.Announce[0]; a.Address != netip.MustParseAddr("192.0.2.7") || a.Port != 1081 {
		t.Errorf("announce[0] = %+v, want 192.0.2.7 port 1081", a)
	}
	if p.Interfaces[0].Name != "eth1" || p.Announce[1].Interface != "eth1" {
		t.Errorf("interface names %q, %q, want eth1", p.Interfaces[0].Name, p.Announce[1].Interface)
	}
	if p.Metrics.Listen != "192.0.2.7:9477" || p.StatusSocket != "/run/x${y}" {
		t.Errorf("metrics.listen %q, status_socket %q", p.Metrics.Listen, p.StatusSocket)
	}

	for _, tt := range []struct{ in, want string }{
		{"  - address: ${NOPE}\n", "line 6: announce[0].address: the environment variable NOPE (in ${NOPE}) is not set"},
		{"  - address: ${NODE_IP\n", `line 6: announce[0].address: ${NODE_IP has no closing "}"`},
		{"  - address: ${1X}\n", "line 6: announce[0].address: ${1X} is not a valid reference"},
		{"  - address: ${}\n", "line 6: announce[0].address: ${} is not a valid reference"},
		// A quoted value stays a string: a port must be a number.
		{"  - address: 192.0.2.1\n    port: \"${JPORT}\"\n", `line 7: announce[0].port: "1081" is not valid; want an integer from 0 to 65535`},
		// The expanded value is validated like any other.
		{"  - address: ${IF}\n", `line 6: announce[0].address: "eth1" is not an IP address`},
	} {
		_, err := Parse([]byte("side: server\npath_manager: userspace\ninterfaces:\n  - {name: eth1, role: ethernet}\nannounce:\n" + tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.in, err, tt.want)
		}
	}
}
