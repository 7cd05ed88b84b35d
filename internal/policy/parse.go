package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gigapath/gigapath/internal/relay"
)

// Error is one problem in a configuration file: where (line, key path) and
// what (the bad value and what is valid).
type Error struct {
	Line int    // 1-based; 0 when unknown
	Path string // key path, e.g. interfaces[1].role; "" for the whole file
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem Parse found, in file order. Parse returns it as
// its error; use errors.As to get at the single problems.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads and parses the policy file at path. Errors are prefixed with
// the file name.
func Load(file string) (*Policy, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s:\n%w", file, err)
	}
	return p, nil
}

// Raw file structs: what the YAML may hold, decoded strictly. Pointers mark
// "given or not" where a default applies.
type rawFile struct {
	Side          *string        `yaml:"side"`
	PathManager   *string        `yaml:"path_manager"`
	Steering      *string        `yaml:"steering"`
	Scheduler     string         `yaml:"scheduler"`
	PathCgroup    string         `yaml:"path_cgroup"`
	Mptcpify      []string       `yaml:"mptcpify"`
	Interfaces    []rawInterface `yaml:"interfaces"`
	PeerAddresses *string        `yaml:"peer_addresses"`
	Announce      []rawAnnounce  `yaml:"announce"`
	InitialJoins  *string        `yaml:"initial_address_joins"`
	Limits        *rawLimits     `yaml:"limits"`
	Routing       *rawRouting    `yaml:"routing"`
	Priority      *rawPriority   `yaml:"priority"`
	Handover      *rawHandover   `yaml:"handover"`
	Metrics       *rawMetrics    `yaml:"metrics"`
	StatusSocket  *string        `yaml:"status_socket"`
	Log           *rawLog        `yaml:"log"`
	SkipLinkLocal *bool          `yaml:"skip_link_local"`
	Creates       *rawCreates    `yaml:"creates"`
	Relay         *relay.Config  `yaml:"relay"`
}

type rawInterface struct {
	Name        *string  `yaml:"name"`
	Match       *string  `yaml:"match"`
	Role        *string  `yaml:"role"`
	Backup      *bool    `yaml:"backup"`
	MaxSubflows *int     `yaml:"max_subflows"`
	Congestion  string   `yaml:"congestion"`
	Mark        uint32   `yaml:"mark"`
	Gateway     rawAddrs `yaml:"gateway"`
}

// rawAddrs is one address or a list of them.
type rawAddrs []string

func (r *rawAddrs) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*r = rawAddrs{s}
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*r = l
	return nil
}

type rawAnnounce struct {
	Address   *string `yaml:"address"`
	Interface *string `yaml:"interface"`
	Port      uint16  `yaml:"port"`
}

type rawLimits struct {
	Subflows        *int `yaml:"subflows"`
	AddAddrAccepted *int `yaml:"add_addr_accepted"`
}

// rawRouting is either a scalar (`routing: off`) or a mapping
// (`routing: {mode: managed, table_base: 2000}`).
type rawRouting struct {
	rawRoutingMap
}

type rawRoutingMap struct {
	Mode         *string `yaml:"mode"`
	TableBase    *uint32 `yaml:"table_base"`
	RulePriority *uint32 `yaml:"rule_priority"`
}

func (r *rawRouting) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		r.Mode = &s
		return nil
	}
	return n.Decode(&r.rawRoutingMap)
}

type rawPriority struct {
	RTTMs             *int     `yaml:"rtt_ms"`
	LossPercent       *float64 `yaml:"loss_percent"`
	ReorderPercent    *float64 `yaml:"reorder_percent"`
	HysteresisPercent *float64 `yaml:"hysteresis_percent"`
	Hold              *string  `yaml:"hold"`
}

type rawHandover struct {
	RTTMs          *int     `yaml:"rtt_ms"`
	LossPercent    *float64 `yaml:"loss_percent"`
	ReorderPercent *float64 `yaml:"reorder_percent"`
	Interval       *string  `yaml:"interval"`
	Failures       *int     `yaml:"failures"`
	Hold           *string  `yaml:"hold"`
}

type rawMetrics struct {
	Listen        *string `yaml:"listen"`
	SubflowSeries *int    `yaml:"subflow_series"`
}

type rawCreates struct {
	Thread   *string `yaml:"thread"`
	Priority *int    `yaml:"priority"`
}

type rawLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

var (
	yamlNodeType   = reflect.TypeOf(yaml.Node{})
	rawRoutingType = reflect.TypeOf(rawRouting{})
	rawRoutingMapT = reflect.TypeOf(rawRoutingMap{})
)

// checker collects errors and knows where each key path is in the file.
type checker struct {
	nodes  map[string]*yaml.Node // key path -> value node
	byLine map[int]string        // line -> key path of the scalar there
	errs   Errors
	// aliased holds the anchored nodes already walked.
	aliased map[*yaml.Node]bool
}

func (c *checker) lineOf(p string) int {
	for {
		if n, ok := c.nodes[p]; ok {
			return n.Line
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return 0
		}
		p = p[:i]
	}
}

func (c *checker) errorf(p, format string, args ...any) {
	c.errs = append(c.errs, &Error{Line: c.lineOf(p), Path: p, Msg: fmt.Sprintf(format, args...)})
}

func join(p, k string) string {
	if p == "" {
		return k
	}
	return p + "." + k
}

// yamlKeys lists the keys a raw struct accepts, in declaration order.
func yamlKeys(t reflect.Type) ([]string, map[string]reflect.Type) {
	var keys []string
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous {
			k, mm := yamlKeys(f.Type)
			keys = append(keys, k...)
			for a, b := range mm {
				m[a] = b
			}
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		keys = append(keys, tag)
		m[tag] = f.Type
	}
	return keys, m
}

// walk records the position of every key path and reports unknown keys with
// their path and the valid ones.
func (c *checker) walk(n *yaml.Node, t reflect.Type, p string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		// Walk an anchored node once: following every alias would make
		// a "billion laughs" file exponential.
		if c.aliased[n.Alias] {
			return
		}
		c.aliased[n.Alias] = true
		n = n.Alias
	}
	if p != "" {
		c.nodes[p] = n
	}
	if n.Kind == yaml.ScalarNode {
		c.byLine[n.Line] = p
	} else if _, ok := c.byLine[n.Line]; !ok {
		// A list or mapping where a scalar belongs (`key: [x]`): its
		// scalars, walked later, take the line over when they share it.
		c.byLine[n.Line] = p
	}
	switch {
	case t == yamlNodeType:
		return
	case t == rawRoutingType:
		if n.Kind != yaml.MappingNode {
			return
		}
		t = rawRoutingMapT
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		keys, fields := yamlKeys(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				c.errs = append(c.errs, &Error{Line: k.Line, Path: join(p, k.Value),
					Msg: "unknown key; valid keys: " + strings.Join(keys, ", ")})
				continue
			}
			c.walk(v, ft, join(p, k.Value))
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			c.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", p, i))
		}
	}
}

var (
	typeErrRE     = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (.*)$")
	typeErrNodeRE = regexp.MustCompile(`^line (\d+): cannot unmarshal !!(seq|map) into (.*)$`)
)

// describeType says in words what a Go type accepts.
func describeType(t string) string {
	switch {
	case t == "int":
		return "an integer"
	case t == "uint16":
		return "an integer from 0 to 65535"
	case t == "uint32":
		return "an integer from 0 to 4294967295"
	case t == "bool":
		return "true or false"
	case t == "float64":
		return "a number"
	case t == "time.Duration":
		return "a duration such as 500ms, 10s or 5m"
	case t == "relay.Config":
		return "a mapping of the relay's keys (see docs/relay.md)"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "policy."):
		return "a mapping of keys"
	}
	return t
}

// typeErrors turns yaml's type errors into Errors with key paths.
func (c *checker) typeErrors(te *yaml.TypeError) {
	for _, s := range te.Errors {
		if m := typeErrNodeRE.FindStringSubmatch(s); m != nil {
			line, _ := strconv.Atoi(m[1])
			what := map[string]string{"seq": "a list", "map": "a mapping"}[m[2]]
			c.errs = append(c.errs, &Error{Line: line, Path: c.byLine[line],
				Msg: fmt.Sprintf("%s is not valid here; want %s", what, describeType(m[3]))})
			continue
		}
		m := typeErrRE.FindStringSubmatch(s)
		if m == nil {
			c.errs = append(c.errs, &Error{Msg: s})
			continue
		}
		line, _ := strconv.Atoi(m[1])
		c.errs = append(c.errs, &Error{Line: line, Path: c.byLine[line],
			Msg: fmt.Sprintf("%q is not valid; want %s", m[3], describeType(m[4]))})
	}
}

// Parse decodes and validates a policy. The error, if any, is of type
// Errors and lists every problem found.
func Parse(b []byte) (*Policy, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, Errors{{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, Errors{{Msg: "the file is empty; see `gigapath config example`"}}
	}
	doc := root.Content[0]
	c := &checker{nodes: map[string]*yaml.Node{}, byLine: map[int]string{}, aliased: map[*yaml.Node]bool{}}
	if doc.Kind != yaml.MappingNode {
		return nil, Errors{{Line: doc.Line, Msg: "the top level must be a mapping of keys (side, path_manager, steering, interfaces, ...)"}}
	}
	c.walk(doc, reflect.TypeOf(rawFile{}), "")
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var first, extra yaml.Node
	if err := dec.Decode(&first); err == nil {
		if err := dec.Decode(&extra); err != io.EOF {
			return nil, Errors{{Line: extra.Line, Msg: "more than one YAML document; put the whole policy in one"}}
		}
	}
	before := len(c.errs)
	c.expandEnv(doc, map[*yaml.Node]bool{})
	if len(c.errs) > before {
		return nil, c.sorted()
	}
	// The walk reported unknown keys, with their paths; the values are
	// decoded from the expanded document.
	var raw rawFile
	if err := doc.Decode(&raw); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			c.typeErrors(te)
			return nil, c.sorted()
		}
		return nil, Errors{{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	p := c.validate(&raw)
	if len(c.errs) > 0 {
		return nil, c.sorted()
	}
	return p, nil
}

// sorted returns the errors in file order (errors without a line last).
func (c *checker) sorted() Errors {
	sort.SliceStable(c.errs, func(i, j int) bool {
		li, lj := c.errs[i].Line, c.errs[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
	return c.errs
}

func oneOf[T ~string](c *checker, p string, v *string, def T, valid ...T) T {
	if v == nil {
		return def
	}
	for _, x := range valid {
		if string(x) == *v {
			return x
		}
	}
	s := make([]string, len(valid))
	for i, x := range valid {
		s[i] = string(x)
	}
	c.errorf(p, "%q is not valid; use one of %s", *v, strings.Join(s, ", "))
	return def
}

var nameRE = regexp.MustCompile(`^[a-z0-9_]{1,15}$`)

func validIfName(s string) bool {
	return s != "" && len(s) <= 15 && s != "." && s != ".." && !strings.ContainsAny(s, "/: \t\n")
}

func (c *checker) duration(p string, v *string, def time.Duration) time.Duration {
	if v == nil {
		return def
	}
	d, err := time.ParseDuration(*v)
	if err != nil || d <= 0 {
		c.errorf(p, "%q is not valid; want a positive duration such as 500ms, 3s or 1m", *v)
		return def
	}
	return d
}

func (c *checker) percent(p string, v *float64, def float64) float64 {
	if v == nil {
		return def
	}
	if *v < 0 || *v > 100 {
		c.errorf(p, "%v is out of range; use 0 to 100", *v)
		return def
	}
	return *v
}

func (c *checker) millis(p string, v *int, def time.Duration) time.Duration {
	if v == nil {
		return def
	}
	if *v <= 0 || *v > 600000 {
		c.errorf(p, "%d is out of range; use 1 to 600000 (milliseconds)", *v)
		return def
	}
	return time.Duration(*v) * time.Millisecond
}

func (c *checker) validate(r *rawFile) *Policy {
	p := &Policy{
		Side:        oneOf(c, "side", r.Side, SideClient, SideClient, SideServer),
		PathManager: oneOf(c, "path_manager", r.PathManager, PMUserspace, PMUserspace, PMKernel),
		Steering: oneOf(c, "steering", r.Steering, SteerAggregate,
			SteerAggregate, SteerActiveStandby, SteerHandover, SteerPriority),
		Scheduler:     r.Scheduler,
		PathCgroup:    r.PathCgroup,
		StatusSocket:  DefaultStatusSocket,
		SkipLinkLocal: true,
	}
	if r.PathManager == nil {
		c.errorf("path_manager", "missing; use one of userspace, kernel")
	}
	if r.Scheduler != "" && !nameRE.MatchString(r.Scheduler) {
		c.errorf("scheduler", "%q is not a valid scheduler name; want 1-15 of a-z, 0-9, _ (see `gigapath sched list`)", r.Scheduler)
	}
	if r.SkipLinkLocal != nil {
		p.SkipLinkLocal = *r.SkipLinkLocal
	}
	for _, m := range r.Mptcpify {
		if m == "" || slices.Contains(strings.Split(m, "/"), "..") {
			c.errorf("mptcpify", "%q is not a cgroup: give a systemd unit name (app.service) or a cgroup v2 path without '..'", m)
			continue
		}
		p.Mptcpify = append(p.Mptcpify, m)
	}

	// interfaces
	if len(r.Interfaces) == 0 {
		c.errorf("interfaces", "missing; list at least one interface (name and role)")
	}
	seen := map[string]string{}
	for i, ri := range r.Interfaces {
		ip := fmt.Sprintf("interfaces[%d]", i)
		it := Interface{MaxSubflows: DefaultMaxSubflows, Congestion: ri.Congestion, Mark: ri.Mark}
		switch {
		case ri.Name == nil && ri.Match == nil:
			c.errorf(ip, `has neither name nor match; set name (an interface name such as "wlan0") or match (a glob such as "wwan*")`)
		case ri.Name != nil && ri.Match != nil:
			c.errorf(ip, "has both name and match; set only one")
		case ri.Name != nil:
			it.Name = *ri.Name
			if !validIfName(it.Name) {
				c.errorf(ip+".name", "%q is not a valid interface name; want 1-15 characters without '/', ':' or whitespace", it.Name)
			}
		default:
			it.Match = *ri.Match
			if _, err := path.Match(it.Match, ""); err != nil || it.Match == "" {
				c.errorf(ip+".match", "%q is not a valid glob; use *, ? and [...] as in \"wlan*\"", it.Match)
			}
		}
		if k := it.Key(); k != "" {
			kp := ip + ".name"
			if it.Name == "" {
				kp = ip + ".match"
			}
			if prev, dup := seen[k]; dup {
				c.errorf(kp, "%q is already used by %s; list each interface once", k, prev)
			} else {
				seen[k] = ip
			}
		}
		if ri.Role == nil {
			c.errorf(ip+".role", "missing; use one of wifi, lte, ethernet, other")
		} else {
			it.Role = oneOf(c, ip+".role", ri.Role, RoleOther, RoleWiFi, RoleLTE, RoleEthernet, RoleOther)
		}
		if ri.Backup != nil {
			it.Backup = *ri.Backup
		} else if (p.Steering == SteerActiveStandby || p.Steering == SteerHandover) && it.Role == RoleLTE {
			it.Backup = true
		}
		if ri.MaxSubflows != nil {
			it.MaxSubflows = *ri.MaxSubflows
			if it.MaxSubflows < 1 || it.MaxSubflows > MaxLimit {
				c.errorf(ip+".max_subflows", "%d is out of range; use 1 to %d", it.MaxSubflows, MaxLimit)
			}
		}
		if it.Congestion != "" && !nameRE.MatchString(it.Congestion) {
			c.errorf(ip+".congestion", "%q is not a valid congestion control name; want 1-15 of a-z, 0-9, _ such as cubic or bbr (see sysctl net.ipv4.tcp_available_congestion_control)", it.Congestion)
		}
		it.Gateway = c.gateway(ip+".gateway", ri.Gateway)
		p.Interfaces = append(p.Interfaces, it)
	}
	if p.Steering == SteerActiveStandby || p.Steering == SteerHandover {
		var active, backup int
		for _, it := range p.Interfaces {
			if it.Backup {
				backup++
			} else {
				active++
			}
		}
		if len(p.Interfaces) > 0 && (active == 0 || backup == 0) {
			c.errorf("steering", "%s needs at least one active and one backup interface (backup: true; the lte role is backup by default under active-standby and handover)", p.Steering)
		}
	}

	// peer addresses
	p.PeerAddresses = oneOf(c, "peer_addresses", r.PeerAddresses, PeerIgnore, PeerIgnore, PeerUse)
	if p.PeerAddresses == PeerUse && r.PeerAddresses != nil && p.Side == SideServer {
		c.errorf("peer_addresses", "use is only valid with side: client (the server side does not open subflows); use ignore or remove the key")
	}

	// announce
	if len(r.Announce) > 0 && p.Side != SideServer {
		c.errorf("announce", "only valid with side: server (the client side does not advertise addresses)")
	}
	for i, ra := range r.Announce {
		ap := fmt.Sprintf("announce[%d]", i)
		a := Announce{Port: ra.Port}
		switch {
		case ra.Address == nil && ra.Interface == nil:
			c.errorf(ap, "has neither address nor interface; set address (an IP address) or interface (a name from interfaces)")
		case ra.Address != nil && ra.Interface != nil:
			c.errorf(ap, "has both address and interface; set only one")
		case ra.Address != nil:
			addr, err := netip.ParseAddr(*ra.Address)
			if err != nil || addr.Zone() != "" {
				c.errorf(ap+".address", "%q is not an IP address; want e.g. 192.0.2.10 or 2001:db8::10", *ra.Address)
			} else if addr.IsUnspecified() || addr.IsLoopback() || addr.IsMulticast() {
				c.errorf(ap+".address", "%q cannot be announced; want a unicast address of this host", *ra.Address)
			}
			a.Address = addr.Unmap()
		default:
			a.Interface = *ra.Interface
			if _, ok := p.InterfaceFor(a.Interface); !ok {
				c.errorf(ap+".interface", "%q is not in interfaces; list it there first", a.Interface)
			}
		}
		p.Announce = append(p.Announce, a)
	}

	p.InitialAddressJoins = oneOf(c, "initial_address_joins", r.InitialJoins, JoinsAllow, JoinsAllow, JoinsRefuse)
	if p.InitialAddressJoins == JoinsRefuse && p.Side != SideServer {
		c.errorf("initial_address_joins", "refuse is only valid with side: server (the C flag is sent by the end that accepts connections); use allow or remove the key")
	}

	// limits
	p.Limits = Limits{Subflows: DefaultLimitSubflows, AddAddrAccepted: DefaultLimitAddAddr}
	if r.Limits != nil {
		for _, l := range []struct {
			key string
			v   *int
			dst *int
		}{{"subflows", r.Limits.Subflows, &p.Limits.Subflows}, {"add_addr_accepted", r.Limits.AddAddrAccepted, &p.Limits.AddAddrAccepted}} {
			if l.v == nil {
				continue
			}
			if *l.v < 0 || *l.v > MaxLimit {
				c.errorf("limits."+l.key, "%d is out of range; use 0 to %d (the kernel's maximum)", *l.v, MaxLimit)
				continue
			}
			*l.dst = *l.v
		}
	}

	// routing
	p.Routing = Routing{Mode: RoutingManaged, TableBase: DefaultTableBase, RulePriority: DefaultRulePriority}
	if r.Routing != nil {
		modePath := "routing"
		if _, isMap := c.nodes["routing.mode"]; isMap {
			modePath = "routing.mode"
		}
		p.Routing.Mode = oneOf(c, modePath, r.Routing.Mode, RoutingManaged, RoutingManaged, RoutingOff)
		if v := r.Routing.TableBase; v != nil {
			if *v < 256 || *v > 0xffffffff-0x10000 {
				c.errorf("routing.table_base", "%d is out of range; use 256 to %d (tables 253-255 are the kernel's; the table of an interface is table_base + its index)", *v, uint32(0xffffffff-0x10000))
			} else {
				p.Routing.TableBase = *v
			}
		}
		if v := r.Routing.RulePriority; v != nil {
			if *v < 1 || *v > 32765 {
				c.errorf("routing.rule_priority", "%d is out of range; use 1 to 32765 (below the main table's rule at 32766)", *v)
			} else {
				p.Routing.RulePriority = *v
			}
		}
	}

	if p.Routing.Mode == RoutingOff {
		for i, it := range p.Interfaces {
			if !it.Gateway.IsZero() {
				c.errorf(fmt.Sprintf("interfaces[%d].gateway", i), "only used with routing: managed (it is the next hop of the interface's table); with routing: off set the route yourself")
			}
		}
	}

	// priority and handover
	var rp rawPriority
	if r.Priority != nil {
		rp = *r.Priority
	}
	p.Priority = Priority{
		RTT:               c.millis("priority.rtt_ms", rp.RTTMs, DefaultPriorityRTT),
		LossPercent:       c.percent("priority.loss_percent", rp.LossPercent, DefaultPriorityLoss),
		ReorderPercent:    c.percent("priority.reorder_percent", rp.ReorderPercent, DefaultPriorityReorder),
		HysteresisPercent: c.percent("priority.hysteresis_percent", rp.HysteresisPercent, DefaultHysteresis),
		Hold:              c.duration("priority.hold", rp.Hold, DefaultPriorityHold),
	}
	var rh rawHandover
	if r.Handover != nil {
		rh = *r.Handover
	}
	p.Handover = Handover{
		RTT:            c.millis("handover.rtt_ms", rh.RTTMs, DefaultHandoverRTT),
		LossPercent:    c.percent("handover.loss_percent", rh.LossPercent, DefaultHandoverLoss),
		ReorderPercent: c.percent("handover.reorder_percent", rh.ReorderPercent, DefaultHandoverReorder),
		Interval:       c.duration("handover.interval", rh.Interval, DefaultHandoverPeriod),
		Failures:       DefaultHandoverFailures,
		Hold:           c.duration("handover.hold", rh.Hold, DefaultHandoverHold),
	}
	if rh.Failures != nil {
		if *rh.Failures < 1 || *rh.Failures > 100 {
			c.errorf("handover.failures", "%d is out of range; use 1 to 100", *rh.Failures)
		} else {
			p.Handover.Failures = *rh.Failures
		}
	}

	// observation
	p.Metrics.Listen = DefaultMetricsListen
	if r.Metrics != nil && r.Metrics.Listen != nil {
		p.Metrics.Listen = *r.Metrics.Listen
		if l := *r.Metrics.Listen; l != "" {
			_, port, err := net.SplitHostPort(l)
			if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
				c.errorf("metrics.listen", "%q is not valid; want HOST:PORT such as 127.0.0.1:9477 or [::1]:9477, or \"\" to disable", l)
			}
		}
	}
	p.Metrics.SubflowSeries = DefaultSubflowSeries
	if r.Metrics != nil && r.Metrics.SubflowSeries != nil {
		if n := *r.Metrics.SubflowSeries; n < 0 || n > MaxSubflowSeries {
			c.errorf("metrics.subflow_series", "%d is out of range; use 0 (no per-subflow series) to %d (every subflow the telemetry map can hold)", n, MaxSubflowSeries)
		} else {
			p.Metrics.SubflowSeries = n
		}
	}
	if r.StatusSocket != nil {
		p.StatusSocket = *r.StatusSocket
		if s := *r.StatusSocket; s != "" && !strings.HasPrefix(s, "/") {
			c.errorf("status_socket", "%q is not valid; want an absolute path such as %s, or \"\" to disable", s, DefaultStatusSocket)
		}
	}
	p.Log = Log{Level: "info", Format: "text"}
	if r.Log != nil {
		if r.Log.Level != "" {
			p.Log.Level = string(oneOf(c, "log.level", &r.Log.Level, "info", "debug", "info", "warn", "error"))
		}
		if r.Log.Format != "" {
			p.Log.Format = string(oneOf(c, "log.format", &r.Log.Format, "text", "text", "json"))
		}
	}

	p.Creates = Creates{Thread: CreatesAuto, Priority: DefaultCreatesPriority}
	if r.Creates != nil {
		p.Creates.Thread = oneOf(c, "creates.thread", r.Creates.Thread, CreatesAuto, CreatesAuto, CreatesReader, CreatesRealtime)
		if p.Creates.Thread == CreatesReader {
			p.Creates.Priority = 0
		}
		if r.Creates.Priority != nil {
			if p.Creates.Thread == CreatesReader {
				c.errorf("creates.priority", "only valid with creates.thread: auto or realtime (the reader runs at the daemon's own scheduling)")
			} else if n := *r.Creates.Priority; n < 1 || n > 99 {
				c.errorf("creates.priority", "%d is out of range; use 1 to 99 (SCHED_FIFO priority)", n)
			} else {
				p.Creates.Priority = n
			}
		}
		if p.Creates.Thread == CreatesRealtime && !p.Threaded() {
			c.errorf("creates.thread", "realtime is only valid with side: client and path_manager: userspace (the thread answers new connections with the userspace PM's creates); use auto or reader, or remove the key")
		}
	}

	// relay: the section of `gigapath relay --config`, checked here as
	// far as it can be without reading its credentials file.
	if r.Relay != nil {
		cfg := *r.Relay
		if err := cfg.Check(); err != nil {
			c.errorf("relay", "%v", err)
		}
		p.Relay = &cfg
	}

	// Keys the chosen path manager would not use are refused rather than
	// accepted and ignored.
	if p.PathManager == PMKernel {
		if p.PeerAddresses == PeerUse {
			c.errorf("peer_addresses", "use is only valid with path_manager: userspace (the in-kernel PM accepts announcements up to limits.add_addr_accepted); use ignore or remove the key")
		}
		if p.Steering == SteerHandover || p.Steering == SteerPriority {
			c.errorf("steering", "%s needs path_manager: userspace (it opens, closes and re-flags subflows itself; the in-kernel PM supports aggregate and active-standby)", p.Steering)
		}
	} else if r.Limits != nil {
		c.errorf("limits", "only valid with path_manager: kernel (the kernel's limits do not bound the userspace PM; max_subflows per interface does); remove it or use the in-kernel PM")
	}
	return p
}

// gateway validates an interface's gateway addresses: unicast, no zone, at
// most one per family.
func (c *checker) gateway(p string, in rawAddrs) Gateway {
	var g Gateway
	for _, v := range in {
		a, err := netip.ParseAddr(v)
		switch {
		case err != nil || a.Zone() != "":
			c.errorf(p, "%q is not an IP address; want e.g. 192.0.2.1 or fe80::1 (no %%zone: the interface is the zone)", v)
			continue
		case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast():
			c.errorf(p, "%q cannot be a next hop; want a unicast address of a router on the link", v)
			continue
		}
		a = a.Unmap()
		dst := &g.V4
		if a.Is6() {
			dst = &g.V6
		}
		if dst.IsValid() {
			c.errorf(p, "two IPv%d gateways (%s and %s); give at most one per family", map[bool]int{false: 4, true: 6}[a.Is6()], *dst, a)
			continue
		}
		*dst = a
	}
	return g
}
