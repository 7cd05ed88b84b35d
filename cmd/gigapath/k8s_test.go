package main

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/gigapath/gigapath/internal/policy"
)

// fleetManifest is the Kubernetes deployment of a proxy fleet.
const fleetManifest = "../../docs/deploy/gigapath-fleet.yaml"

// kubeVersion is the Kubernetes release whose API schemas the manifests
// are checked against (built into kubectl-validate: 1.23 to 1.30).
const kubeVersion = "1.30"

// kubectlValidate validates the manifest file path against the API
// schemas of kubeVersion with kubectl-validate, the Go tool pinned in
// .ci/k8s/go.mod (its schemas are inside its module: no cluster, no
// network). It returns the tool's output and whether it passed.
func kubectlValidate(t *testing.T, path string) (string, bool) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "tool", "-modfile=.ci/k8s/go.mod", "kubectl-validate", "--version", kubeVersion, abs)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("kubectl-validate: %v: %s", err, out)
	}
	return string(out), err == nil
}

// manifestDocs decodes every YAML document of a manifest file.
func manifestDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var d map[string]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, d)
	}
	return docs
}

// dig walks a decoded YAML document by keys (strings) and indices (ints).
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func findDoc(t *testing.T, docs []map[string]any, kind, name string) map[string]any {
	t.Helper()
	for _, d := range docs {
		if d["kind"] == kind && dig(d, "metadata", "name") == name {
			return d
		}
	}
	t.Fatalf("%s: no %s %q", fleetManifest, kind, name)
	return nil
}

func namedItem(t *testing.T, list any, name string) map[string]any {
	t.Helper()
	l, _ := list.([]any)
	for _, x := range l {
		if m, ok := x.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	t.Fatalf("no item named %q in %v", name, list)
	return nil
}

// TestKubernetesManifests: the fleet manifest is valid against the
// Kubernetes API schemas (and the validator does reject a broken copy, so
// the check can fail); the policy its init container renders for a node
// passes `gigapath config check` and announces that node's address; the
// Service, probes and Prometheus annotations point at ports the pods
// have.
func TestKubernetesManifests(t *testing.T) {
	if out, ok := kubectlValidate(t, fleetManifest); !ok {
		t.Errorf("kubectl-validate %s (Kubernetes %s):\n%s", fleetManifest, kubeVersion, out)
	}
	orig, err := os.ReadFile(fleetManifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, broken := range []struct{ from, to, want string }{
		{"hostNetwork: true", "hostNetwork: yes-please", "hostNetwork"},
		{"externalTrafficPolicy: Local", "externalTrafficPolicy: Local\n  loadBalancerPolicy: Maglev", "loadBalancerPolicy"},
	} {
		bad := filepath.Join(t.TempDir(), "broken.yaml")
		if err := os.WriteFile(bad, bytes.Replace(orig, []byte(broken.from), []byte(broken.to), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, ok := kubectlValidate(t, bad); ok || !strings.Contains(out, broken.want) {
			t.Errorf("kubectl-validate accepted %q in place of %q (or did not name %s):\n%s", broken.to, broken.from, broken.want, out)
		}
	}

	docs := manifestDocs(t, fleetManifest)
	cm := findDoc(t, docs, "ConfigMap", "gigapath-fleet-policy")
	ds := findDoc(t, docs, "DaemonSet", "gigapath-proxy")
	pod := dig(ds, "spec", "template", "spec")

	// The policy, as the daemon of node 192.0.2.10 reads it: ${NODE_IP}
	// from its environment, set from the downward API.
	text, _ := dig(cm, "data", "gigapath.yaml").(string)
	if text == "" {
		t.Fatal("the ConfigMap has no gigapath.yaml")
	}
	if ic := dig(pod, "initContainers"); ic != nil {
		t.Errorf("init containers %v: the daemon reads the node address from its environment and sets the C flag itself", ic)
	}
	daemon := namedItem(t, dig(pod, "containers"), "gigapath")
	if dig(daemon, "env", 0, "name") != "NODE_IP" || dig(daemon, "env", 0, "valueFrom", "fieldRef", "fieldPath") != "status.hostIP" {
		t.Errorf("the daemon's NODE_IP does not come from the downward API's status.hostIP: %v", dig(daemon, "env"))
	}
	if dig(daemon, "securityContext", "privileged") != true {
		t.Error("the daemon writes the host's net.mptcp sysctls: it must be privileged (/proc/sys is read-only otherwise)")
	}
	rendered := filepath.Join(t.TempDir(), "gigapath.yaml")
	if err := os.WriteFile(rendered, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NODE_IP", "192.0.2.10")
	if code, stdout, stderr := gp(t, "config", "check", rendered); code != 0 {
		t.Errorf("gigapath config check of the policy: exit %d\n%s%s", code, stdout, stderr)
	}
	p, err := policy.Load(rendered)
	if err != nil {
		t.Fatal(err)
	}
	node := netip.MustParseAddr("192.0.2.10")
	if p.Side != policy.SideServer || len(p.Announce) != 1 || p.Announce[0].Address != node || p.Announce[0].Port != 1081 || p.InitialAddressJoins != policy.JoinsRefuse {
		t.Errorf("policy: side %s, announce %+v, initial_address_joins %s; want side server announcing 192.0.2.10 port 1081 and refusing joins to the initial address",
			p.Side, p.Announce, p.InitialAddressJoins)
	}
	if p.Metrics.Listen != "192.0.2.10:9477" {
		t.Errorf("policy: metrics.listen %q", p.Metrics.Listen)
	}

	// Names and ports that must agree across the documents.
	if dig(pod, "hostNetwork") != true {
		t.Error("the proxies must run on the host network (the node's own address)")
	}
	labels := dig(ds, "spec", "template", "metadata", "labels").(map[string]any)
	for _, name := range []string{"gigapath", "gigapath-relay-metrics"} {
		svc := findDoc(t, docs, "Service", name)
		for k, v := range dig(svc, "spec", "selector").(map[string]any) {
			if labels[k] != v {
				t.Errorf("Service %s selects %s=%v, the pods have %v", name, k, v, labels[k])
			}
		}
	}
	ports := map[string]int{}
	for _, c := range dig(pod, "containers").([]any) {
		for _, p := range dig(c, "ports").([]any) {
			ports[dig(p, "name").(string)] = dig(p, "containerPort").(int)
		}
	}
	if tp := dig(findDoc(t, docs, "Service", "gigapath"), "spec", "ports", 0, "targetPort"); ports[tp.(string)] != 1080 {
		t.Errorf("the service targets port %v, the relay listens on 1080", tp)
	}
	relay := namedItem(t, dig(pod, "containers"), "relay")
	if args := strings.Join(toStrings(dig(relay, "args")), " "); !strings.Contains(args, "--listen=$(NODE_IP):1080") || !strings.Contains(args, "--metrics=$(NODE_IP):9478") {
		t.Errorf("relay args %q: want it on the node address, port 1080, metrics 9478", args)
	}
	for _, a := range []struct {
		ann  any
		port int
	}{
		{dig(ds, "spec", "template", "metadata", "annotations", "prometheus.io/port"), ports["metrics"]},
		{dig(findDoc(t, docs, "Service", "gigapath-relay-metrics"), "metadata", "annotations", "prometheus.io/port"), ports["relay-metrics"]},
	} {
		if a.ann == nil || a.ann.(string) == "" || a.ann.(string) != strconv.Itoa(a.port) {
			t.Errorf("prometheus.io/port %v does not name a container port (%v)", a.ann, ports)
		}
	}
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	var s []string
	for _, x := range l {
		if str, ok := x.(string); ok {
			s = append(s, str)
		}
	}
	return s
}
