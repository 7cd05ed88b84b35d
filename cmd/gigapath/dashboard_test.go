package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const dashboardFile = "../../docs/deploy/grafana-dashboard.json"

// promqlKeywords are the words of PromQL that look like metric names.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true, "inf": true, "nan": true,
}

// promqlMetrics returns the metric names a PromQL expression selects:
// identifiers outside label matchers ({...}), range and subquery brackets
// ([...]) and strings, that are not function or aggregation names (followed
// by "("), keywords, grouping labels (the list after by, without, on,
// ignoring, group_left, group_right), aggregations whose grouping comes
// first (sum by (x) (...)) or Grafana variables ($name).
// Metrics selected only by {__name__=...} are not found; the dashboard
// does not use that form.
func promqlMetrics(expr string) []string {
	var out []string
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isPart := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	skipGroup := false
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			i = j + 1
		case c == '{' || c == '[':
			end := byte('}')
			if c == '[' {
				end = ']'
			}
			j := i + 1
			for j < len(expr) && expr[j] != end {
				if expr[j] == '"' { // a label value may hold the bracket
					for j++; j < len(expr) && expr[j] != '"'; j++ {
						if expr[j] == '\\' {
							j++
						}
					}
				}
				j++
			}
			i = j + 1
		case c == '(' && skipGroup:
			i = strings.IndexByte(expr[i:], ')') + i + 1
			skipGroup = false
		case c == '$':
			i++
			for i < len(expr) && isPart(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isPart(expr[i]) || expr[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			switch {
			case promqlKeywords[strings.ToLower(word)]:
				switch strings.ToLower(word) {
				case "by", "without", "on", "ignoring", "group_left", "group_right":
					skipGroup = true
				}
			case k < len(expr) && expr[k] == '(':
			case strings.HasPrefix(expr[k:], "by") || strings.HasPrefix(expr[k:], "without"):
				// an aggregation with its grouping first: sum by (x) (...)
			default:
				out = append(out, word)
			}
			i = j
		default:
			i++
		}
	}
	return out
}

func TestPromqlMetrics(t *testing.T) {
	for expr, want := range map[string][]string{
		`gigapath_connections{instance=~"$daemon"}`: {"gigapath_connections"},
		`histogram_quantile(0.99, sum by (le) (rate(gigapath_reaction_latency_seconds_bucket{instance=~"$daemon"}[$__rate_interval])))`: {"gigapath_reaction_latency_seconds_bucket"},
		`sum by (side) (rate(a_sum{x="}"}[5m])) / sum without (side, le) (rate(a_count[5m])) * 8`:                                       {"a_sum", "a_count"},
		`max by(interface)(up) or on(instance) group_left(role) other_metric offset 5m > bool 0.5e3`:                                    {"up", "other_metric"},
	} {
		if got := promqlMetrics(expr); !slices.Equal(got, want) {
			t.Errorf("promqlMetrics(%s) = %q, want %q", expr, got, want)
		}
	}
}

// dashboardMetrics reads the dashboard and returns the metric names its
// queries use, by where they are (panel title, or the variable's name),
// checking the shape Grafana needs: every panel but rows reads the
// datasource variable and has at least one query, every query selects a
// metric.
func dashboardMetrics(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: no title, uid or panels", dashboardFile)
	}
	q := map[string][]string{}
	labelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*), *[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: query %q, want label_values(METRIC, LABEL)", v.Name, v.Definition)
			continue
		}
		q["variable "+v.Name] = []string{m[1]}
	}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q reads datasource %q, want the ${datasource} variable", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := promqlMetrics(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q selects no metric", p.Title, tg.Expr)
			}
			q["panel "+p.Title] = append(q["panel "+p.Title], names...)
		}
	}
	return q
}
