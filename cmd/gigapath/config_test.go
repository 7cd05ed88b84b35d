package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildGigapathForConfig builds the real command into the test's temporary
// directory (the build cache makes the second build cheap).
func buildGigapathForConfig(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go tool is not in PATH, the binary cannot be built")
	}
	bin := filepath.Join(t.TempDir(), "gigapath")
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	return bin
}

func runConfigCLI(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func writeConfigFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigExampleChecksOK(t *testing.T) {
	bin := buildGigapathForConfig(t)
	code, example, stderr := runConfigCLI(t, bin, "config", "example")
	if code != 0 || !strings.Contains(example, "interfaces:") {
		t.Fatalf("config example: exit %d, stderr %q, output %q", code, stderr, example)
	}
	f := writeConfigFile(t, "example.yaml", example)
	code, out, stderr := runConfigCLI(t, bin, "config", "check", f)
	want := "ok: " + f + ": side client, path_manager userspace, steering aggregate, routing managed, 2 interfaces (wifi0 wifi, lte0 lte)\n"
	if code != 0 || out != want {
		t.Errorf("config check of the example: exit %d, stdout %q, stderr %q; want 0 and %q", code, out, stderr, want)
	}
	code, out, _ = runConfigCLI(t, bin, "-j", "config", "check", f)
	var v struct {
		OK     bool `json:"ok"`
		Policy struct {
			Interfaces []struct {
				Name, Role string
			} `json:"interfaces"`
		} `json:"policy"`
	}
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || !v.OK || len(v.Policy.Interfaces) != 2 || v.Policy.Interfaces[1].Role != "lte" {
		t.Errorf("config check -j: exit %d, %v, %+v\n%s", code, err, v, out)
	}
}

// TestConfigCheckExplainsFleetKeys: config check of a fleet node's policy
// says what initial_address_joins: refuse does and that the daemon listens
// behind the announced port, takes ${NODE_IP} from its environment, and
// names an unset variable.
func TestConfigCheckExplainsFleetKeys(t *testing.T) {
	bin := buildGigapathForConfig(t)
	f := writeConfigFile(t, "node.yaml", "side: server\npath_manager: userspace\ninitial_address_joins: refuse\n"+
		"interfaces:\n  - {match: \"e*\", role: ethernet}\nannounce:\n  - address: ${NODE_IP}\n    port: 1081\n")
	cmd := exec.Command(bin, "config", "check", f)
	cmd.Env = append(os.Environ(), "NODE_IP=192.0.2.7")
	out, err := cmd.CombinedOutput()
	for _, want := range []string{
		"ok: " + f + ": side server",
		`note: initial_address_joins: refuse: the connections this node accepts carry the "C" flag (RFC 8684 §3.1)`,
		"net.mptcp.allow_join_initial_addr_port=0",
		"note: announce[0]: the daemon keeps an MPTCP listener on 192.0.2.7 port 1081",
	} {
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("config check: %v, output:\n%s\nwant %q", err, out, want)
		}
	}
	cmd = exec.Command(bin, "config", "check", f)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NODE_IP=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "line 7: announce[0].address: the environment variable NODE_IP (in ${NODE_IP}) is not set") {
		t.Errorf("config check without NODE_IP: %v, output:\n%s", err, out)
	}
}

// TestConfigCheckSubflowSeries: config check says what a raised
// metrics.subflow_series costs a scrape, shows the value in -j, and
// refuses one out of range naming the key and the range (exit 2).
func TestConfigCheckSubflowSeries(t *testing.T) {
	bin := buildGigapathForConfig(t)
	const base = "path_manager: userspace\ninterfaces:\n  - {name: wifi0, role: wifi}\n"
	f := writeConfigFile(t, "many.yaml", base+"metrics: {subflow_series: 100000}\n")
	out, err := exec.Command(bin, "config", "check", f).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "note: metrics.subflow_series: 100000: up to that many subflows, /metrics has four series per subflow") ||
		!strings.Contains(string(out), "(4.0 s and 37 MB at 100000, as measured on 2 loaded cores;") {
		t.Errorf("config check: %v, output:\n%s", err, out)
	}
	out, err = exec.Command(bin, "-j", "config", "check", f).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"subflow_series": 100000`) {
		t.Errorf("config check -j: %v, output:\n%s", err, out)
	}
	out, err = exec.Command(bin, "config", "check", writeConfigFile(t, "default.yaml", base)).CombinedOutput()
	if err != nil || strings.Contains(string(out), "note:") {
		t.Errorf("config check of the default: %v, output:\n%s\nwant no note", err, out)
	}
	out, err = exec.Command(bin, "config", "check", writeConfigFile(t, "bad.yaml", base+"metrics:\n  subflow_series: 200000\n")).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out),
		"line 5: metrics.subflow_series: 200000 is out of range; use 0 (no per-subflow series) to 131072 (every subflow the telemetry map can hold)") {
		t.Errorf("config check of subflow_series 200000: %v, output:\n%s", err, out)
	}
}

// TestConfigCheckExitCodes runs the built binary on each bad-config class
// of the issue: exit 2 and a message naming the problem.
func TestConfigCheckExitCodes(t *testing.T) {
	bin := buildGigapathForConfig(t)
	const ifs = "interfaces:\n  - name: wifi0\n    role: wifi\n  - name: lte0\n    role: lte\n"
	for _, tt := range []struct {
		name, config, want string
	}{
		{"unknown key", "path_manager: userspace\nsteerin: aggregate\n" + ifs,
			"line 2: steerin: unknown key; valid keys: side, path_manager, steering,"},
		{"bad role", "path_manager: userspace\ninterfaces:\n  - name: lte0\n    role: 4g\n",
			`line 4: interfaces[0].role: "4g" is not valid; use one of wifi, lte, ethernet, other`},
		{"missing interface name", "path_manager: userspace\ninterfaces:\n  - role: lte\n",
			"line 3: interfaces[0]: has neither name nor match; set name"},
		{"bad address", "side: server\npath_manager: userspace\n" + ifs + "announce:\n  - address: 192.0.2.300\n",
			`line 9: announce[0].address: "192.0.2.300" is not an IP address`},
		{"bad steering", "path_manager: userspace\nsteering: turbo\n" + ifs,
			`line 2: steering: "turbo" is not valid; use one of aggregate, active-standby, handover, priority`},
		{"limits above 8", "path_manager: kernel\nlimits: {subflows: 16}\n" + ifs,
			"line 2: limits.subflows: 16 is out of range; use 0 to 8"},
		{"bad peer_addresses", "path_manager: userspace\npeer_addresses: all\n" + ifs,
			`line 2: peer_addresses: "all" is not valid; use one of ignore, use`},
		{"max_subflows above 8", "path_manager: userspace\ninterfaces:\n  - name: lte0\n    role: lte\n    max_subflows: 9\n",
			"line 5: interfaces[0].max_subflows: 9 is out of range; use 1 to 8"},
		{"duplicate interface", "path_manager: userspace\n" + ifs + "  - name: lte0\n    role: lte\n",
			`line 7: interfaces[2].name: "lte0" is already used by interfaces[1]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := writeConfigFile(t, "bad.yaml", tt.config)
			code, out, stderr := runConfigCLI(t, bin, "config", "check", f)
			if code != 2 || out != "" || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, f) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 and a message naming %s and containing %q", code, out, stderr, f, tt.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "none.yaml")
		code, _, stderr := runConfigCLI(t, bin, "config", "check", missing)
		if code != 2 || !strings.Contains(stderr, "no such file") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("no file", func(t *testing.T) {
		code, _, stderr := runConfigCLI(t, bin, "config", "check")
		if code != 2 || !strings.Contains(stderr, "want exactly one FILE") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestConfigDiff(t *testing.T) {
	bin := buildGigapathForConfig(t)
	const base = "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n  - name: lte0\n    role: lte\n"
	old := writeConfigFile(t, "old.yaml", base)
	nw := writeConfigFile(t, "new.yaml", strings.Replace(base, "path_manager: userspace", "path_manager: userspace\nsteering: active-standby", 1))
	code, out, stderr := runConfigCLI(t, bin, "config", "diff", old, nw)
	if code != 0 || !strings.Contains(out, "~ steering: aggregate -> active-standby\n") || !strings.Contains(out, "~ interface lte0: lte max_subflows 1 -> lte backup max_subflows 1\n") {
		t.Errorf("config diff: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if code, out, _ := runConfigCLI(t, bin, "config", "diff", old, old); code != 0 || out != "no change\n" {
		t.Errorf("config diff of a file with itself: exit %d, %q", code, out)
	}
	bad := writeConfigFile(t, "bad.yaml", "path_manager: kernal\n")
	if code, _, stderr := runConfigCLI(t, bin, "config", "diff", old, bad); code != 2 || !strings.Contains(stderr, `path_manager: "kernal" is not valid`) {
		t.Errorf("config diff with a bad NEW: exit %d, stderr %q", code, stderr)
	}
}

// A gigapath built without cgo has no real-time create thread: config
// check and run refuse a policy that asks for it as bad input (exit 2,
// naming the file and the key), before touching anything; one built with
// cgo accepts it. The default, auto, is valid in both, and check notes
// what it is without cgo.
func TestRealtimeCreatesNeedCgo(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go tool is not in PATH, the binary cannot be built")
	}
	nocgo := filepath.Join(t.TempDir(), "gigapath")
	build := exec.Command(gobin, "build", "-o", nocgo, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	f := writeConfigFile(t, "rt.yaml", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\ncreates: {thread: realtime}\n")
	const want = "creates.thread: realtime needs a gigapath built with cgo"
	for _, args := range [][]string{{"config", "check", f}, {"run", "--config", f}} {
		code, out, stderr := runConfigCLI(t, nocgo, args...)
		if code != 2 || out != "" || !strings.Contains(stderr, want) || !strings.Contains(stderr, f) {
			t.Errorf("%q without cgo: exit %d, stdout %q, stderr %q; want exit 2 naming %s and %q", args, code, out, stderr, f, want)
		}
	}
	cgo := buildGigapathForConfig(t)
	if code, out, stderr := runConfigCLI(t, cgo, "config", "check", f); code != 0 || !strings.HasPrefix(out, "ok: ") {
		t.Errorf("config check with cgo: exit %d, stdout %q, stderr %q; want ok", code, out, stderr)
	}
	// The default, auto, is valid in both; without cgo it is the event
	// reader, and check says so.
	auto := writeConfigFile(t, "auto.yaml", "path_manager: userspace\ninterfaces:\n  - name: wifi0\n    role: wifi\n")
	const note = "note: creates.thread: auto: this gigapath was built without cgo and has no real-time create thread: the event reader sends"
	if code, out, stderr := runConfigCLI(t, nocgo, "config", "check", auto); code != 0 || !strings.HasPrefix(out, "ok: ") || !strings.Contains(out, note) {
		t.Errorf("config check of auto without cgo: exit %d, stdout %q, stderr %q; want ok and %q", code, out, stderr, note)
	}
	if code, out, stderr := runConfigCLI(t, cgo, "config", "check", auto); code != 0 || !strings.HasPrefix(out, "ok: ") || strings.Contains(out, "creates.thread") {
		t.Errorf("config check of auto with cgo: exit %d, stdout %q, stderr %q; want ok and no note", code, out, stderr)
	}
}
