// configcheck.go reads the cluster file's YAML tree before it is decoded, so that every
// structural problem (a second document, an unknown or duplicate key, a value of the wrong type)
// is reported at once, each naming its key path, value, line and fix. yaml.v3 alone stops at the
// first unknown key, names Go types ("main.AgentConfig"), reports type errors without the key and
// ignores a second document. The decode itself still runs with KnownFields(true) as a backstop.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// problem is one thing wrong with the cluster file; path is its key path ("agent.keepalive").
type problem struct {
	path string
	err  error
}

// checkYAML parses data and compares its tree with the fields of Config. It reports problems
// only; decoding is left to yaml.v3. readable is false when the file is not a YAML mapping at
// all, so that nothing else is worth checking.
//
// When keys were removed (duplicates), cleaned holds the file without them, to be decoded
// instead of data.
func checkYAML(data []byte) (problems []problem, readable bool, cleaned []byte) {
	var c yamlChecker
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, true, nil // an empty file: Validate says what is missing
		}
		c.add("", "%s (YAML syntax)", strings.TrimPrefix(err.Error(), "yaml: "))
		return c.problems, false, nil
	}
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			c.add("", "%s (YAML syntax)", strings.TrimPrefix(err.Error(), "yaml: "))
			break
		}
		if len(extra.Content) > 0 && !isNull(extra.Content[0]) {
			c.add("", "line %d: a second YAML document: the cluster file is one document (remove the '---' and what follows, or merge it into the first)", extra.Line)
			break
		}
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return c.problems, true, nil
	}
	if root := doc.Content[0]; root.Kind != yaml.MappingNode {
		c.walk(root, reflect.TypeFor[Config](), "")
		return c.problems, false, nil
	}
	c.walk(doc.Content[0], reflect.TypeFor[Config](), "")
	if c.changed {
		if cleaned, err := yaml.Marshal(doc.Content[0]); err == nil {
			return c.problems, true, cleaned
		}
	}
	return c.problems, true, nil
}

type yamlChecker struct {
	problems []problem
	aliases  map[*yaml.Node]bool // alias targets already checked: each is walked once
	changed  bool                // duplicate keys were removed from the tree
}

func (c *yamlChecker) add(path, format string, args ...any) {
	c.problems = append(c.problems, problem{path: path, err: fmt.Errorf(format, args...)})
}

var durationType = reflect.TypeFor[time.Duration]()

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// walk checks node n against type t at key path.
func (c *yamlChecker) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode {
		if c.aliases == nil {
			c.aliases = map[*yaml.Node]bool{}
		}
		if c.aliases[n.Alias] {
			return
		}
		c.aliases[n.Alias] = true
		n = n.Alias
	}
	if isNull(n) {
		return // an empty value: the zero value, then the default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	name := path
	if name == "" {
		name = "the file"
	}
	switch {
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.mismatch(path, name, n, "want a mapping with the keys "+strings.Join(yamlKeys(t), ", "))
			return
		}
		c.mapping(n, t, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.mismatch(path, name, n, "want a list (one '- item' per line, or [a, b])")
			return
		}
		for i, e := range n.Content {
			c.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		if n.Kind != yaml.ScalarNode || n.Decode(reflect.New(t).Interface()) != nil {
			c.mismatch(path, name, n, want(t))
		}
	}
}

// mapping checks the keys of a mapping against the yaml tags of struct t.
func (c *yamlChecker) mapping(n *yaml.Node, t reflect.Type, path string) {
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if k := yamlKey(f); k != "" {
			fields[k] = f.Type
		}
	}
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode {
			k = k.Alias
		}
		if k.Tag == "!!merge" { // "<<: *anchor" merges another mapping's keys
			if v.Kind == yaml.SequenceNode {
				for _, m := range v.Content {
					c.walk(m, t, path)
				}
			} else {
				c.walk(v, t, path)
			}
			continue
		}
		key := join(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			c.mismatch(path, nameOr(path)+" key", k, "want a plain key such as "+yamlKeys(t)[0])
			continue
		}
		if line, dup := first[k.Value]; dup {
			c.add(key, "%s (line %d): duplicate key, first set at line %d (keep one)", key, k.Line, line)
			// yaml.v3 skips a whole mapping with a duplicate key: drop it here, so that the
			// values of the rest of the file are still decoded and checked.
			n.Content = append(n.Content[:i:i], n.Content[i+2:]...)
			c.changed = true
			i -= 2
			continue
		}
		first[k.Value] = k.Line
		ft, ok := fields[k.Value]
		if !ok {
			c.add(key, "%s (line %d): unknown key (%s)", key, k.Line, suggest(k.Value, path, yamlKeys(t)))
			continue
		}
		c.walk(v, ft, key)
	}
}

func nameOr(path string) string {
	if path == "" {
		return "the file"
	}
	return path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func yamlKey(f reflect.StructField) string {
	k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if k == "-" || !f.IsExported() {
		return ""
	}
	if k == "" {
		return strings.ToLower(f.Name)
	}
	return k
}

// yamlKeys lists the keys of struct t in declaration order.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if k := yamlKey(t.Field(i)); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// mismatch reports that the value of key path (shown as name) is not what the key takes:
// `agent.keepalive "10" (line 5): want a duration`, `nodes (line 3): a mapping, want a list`.
func (c *yamlChecker) mismatch(path, name string, n *yaml.Node, want string) {
	switch n.Kind {
	case yaml.MappingNode:
		c.add(path, "%s (line %d): a mapping, %s", name, n.Line, want)
	case yaml.SequenceNode:
		c.add(path, "%s (line %d): a list, %s", name, n.Line, want)
	default:
		v := n.Value
		if len(v) > 64 {
			v = v[:64] + "..."
		}
		c.add(path, "%s %q (line %d): %s", name, v, n.Line, want)
	}
}

// want says what a leaf of type t accepts.
func want(t reflect.Type) string {
	switch {
	case t == durationType:
		return `want a duration such as "10s", "500ms" or "1m"`
	case t.Kind() == reflect.Bool:
		return "want true or false"
	case t.Kind() == reflect.String:
		return "want a string (quote it if it starts with a special character)"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "want a whole number"
	}
	return "want a " + t.String()
}

// suggest names the closest known key, or lists them all.
func suggest(key, path string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(key), k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %s?", join(path, best))
	}
	sorted := append([]string(nil), known...)
	sort.Strings(sorted)
	where := "here"
	if path != "" {
		where = "under " + path
	}
	return fmt.Sprintf("keys %s: %s", where, strings.Join(sorted, ", "))
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
