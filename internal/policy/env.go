package policy

import (
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// lookupEnv is where ${NAME} in a policy is looked up (the process's
// environment; tests replace it).
var lookupEnv = os.LookupEnv

// envRef is one ${NAME} reference; NAME as a shell variable name.
var envRef = regexp.MustCompile(`\$\$\{|\$\{([^}]*)\}?`)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandEnv replaces ${NAME} in every scalar value of the document (not in
// keys, not in comments) with the variable NAME of the environment, so one
// policy serves many nodes (a Kubernetes DaemonSet gives each pod its node's
// address in $NODE_IP: `address: ${NODE_IP}`). $${ is a literal ${. An
// unset variable, an empty or bad name, or a ${ without its } is an error
// naming the line and key. A plain scalar is typed again after expansion,
// so `port: ${PORT}` is a number; a quoted one stays a string.
func (c *checker) expandEnv(n *yaml.Node, seen map[*yaml.Node]bool) {
	if n == nil || seen[n] {
		return
	}
	seen[n] = true
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, x := range n.Content {
			c.expandEnv(x, seen)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			c.expandEnv(n.Content[i], seen)
		}
	case yaml.AliasNode:
		c.expandEnv(n.Alias, seen)
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return
		}
		v, msg := expand(n.Value)
		if msg != "" {
			c.errs = append(c.errs, &Error{Line: n.Line, Path: c.byLine[n.Line], Msg: msg})
			return
		}
		n.Value = v
		if n.Style == 0 {
			n.Tag = "" // resolved again from the new value
		}
	}
}

// expand substitutes the references in s; msg says what is wrong, if
// anything.
func expand(s string) (out, msg string) {
	out = envRef.ReplaceAllStringFunc(s, func(ref string) string {
		if ref == "$${" {
			return "${"
		}
		if msg != "" {
			return ref
		}
		if !strings.HasSuffix(ref, "}") {
			msg = ref + ` has no closing "}"; write ${NAME}, or $${ for a literal ${`
			return ref
		}
		name := ref[2 : len(ref)-1]
		if !envName.MatchString(name) {
			msg = ref + " is not a valid reference; want ${NAME} with NAME of letters, digits and _ (not starting with a digit), or $${ for a literal ${"
			return ref
		}
		v, ok := lookupEnv(name)
		if !ok {
			msg = "the environment variable " + name + " (in " + ref + ") is not set; the policy takes ${NAME} from the environment of the process reading it (write $${ for a literal ${)"
			return ref
		}
		return v
	})
	return out, msg
}
