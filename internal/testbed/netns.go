//go:build linux

// Package testbed builds throw-away network namespaces, veth links, shaping
// and loss for integration tests, benchmarks and the demo. Everything it
// makes has a unique name and is removed by Close, even when a test fails.
package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"

	"github.com/gigapath/gigapath/pathmgr/netns"
)

// NamePrefix starts the name of every namespace the testbed creates, so that
// `gigapath testbed down` and leak checks can find them.
const NamePrefix = "gp-"

// NetNS is a named network namespace (/run/netns/NAME) made by the testbed.
type NetNS struct {
	Name string `json:"name"`
}

// UniqueName returns prefix followed by a short random suffix, e.g. "cli-3fa2c1".
// Interface names must stay within 15 bytes: keep prefixes short.
func UniqueName(prefix string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// NewNetNS creates a namespace named NamePrefix+role+random suffix, brings
// its loopback up and enables MPTCP in it.
func NewNetNS(role string) (*NetNS, error) {
	name := UniqueName(NamePrefix + role + "-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	n := &NetNS{Name: name}
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"sysctl", "-qw", "net.mptcp.enabled=1"},
	} {
		if _, err := n.Run(args...); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// Path is the bind-mounted namespace file, usable with setns(2).
func (n *NetNS) Path() string { return "/run/netns/" + n.Name }

// Close deletes the namespace; the veth ends inside it go with it.
func (n *NetNS) Close() error {
	out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

// Command returns a command that runs inside the namespace.
func (n *NetNS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its standard output.
// The error names the command and includes its standard error.
func (n *NetNS) Run(args ...string) (string, error) {
	cmd := n.Command(context.Background(), args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("[%s] %s: %v: %s", n.Name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// MustRun is Run for set-up steps whose failure ends the test: it panics
// with the error.
func (n *NetNS) MustRun(args ...string) string {
	out, err := n.Run(args...)
	if err != nil {
		panic(err)
	}
	return out
}

// Do runs fn on an OS thread switched into the namespace. The thread is
// thrown away afterwards, so no other goroutine ever runs in the namespace
// by accident. Sockets created by fn stay in the namespace.
func (n *NetNS) Do(fn func() error) error { return netns.Do(n.Path(), fn) }

// Veth creates a veth pair with end aName in a and end bName in b, both up.
func Veth(a *NetNS, aName string, b *NetNS, bName string) error {
	tmp := UniqueName("gpv")
	if out, err := exec.Command("ip", "link", "add", tmp, "type", "veth", "peer", "name", bName, "netns", b.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("veth %s/%s: %v: %s", aName, bName, err, bytes.TrimSpace(out))
	}
	if out, err := exec.Command("ip", "link", "set", tmp, "netns", a.Name, "name", aName).CombinedOutput(); err != nil {
		exec.Command("ip", "link", "del", tmp).Run()
		return fmt.Errorf("veth %s: %v: %s", aName, err, bytes.TrimSpace(out))
	}
	if _, err := a.Run("ip", "link", "set", aName, "up"); err != nil {
		return err
	}
	_, err := b.Run("ip", "link", "set", bName, "up")
	return err
}

// AddAddr adds an address in CIDR form (10.0.1.1/24) to an interface. IPv6
// addresses are added with nodad so they are usable at once.
func (n *NetNS) AddAddr(ifname, cidr string) error {
	args := []string{"ip", "addr", "add", cidr, "dev", ifname}
	if strings.Contains(cidr, ":") {
		args = append(args, "nodad")
	}
	_, err := n.Run(args...)
	return err
}

// Sysctl sets a sysctl inside the namespace.
func (n *NetNS) Sysctl(key, value string) error {
	_, err := n.Run("sysctl", "-qw", key+"="+value)
	return err
}
