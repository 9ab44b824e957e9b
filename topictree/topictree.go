// Package topictree is a wildcard-aware, reference-counted set of MQTT 3.1.1
// topic filters.
//
// The relay agent keeps one Tree per peer broker, holding the filters that the
// peer's clients subscribe to. Every message published locally goes through
// Match ("does any filter of this peer match this topic?") to decide whether
// it crosses to that peer, so Match is on the hot path: it takes a read lock,
// walks the topic in place and does not allocate. Subscriptions come and
// go through Add and Remove. These count references, so two clients
// subscribed to the same filter hold it twice. Add reports when a filter
// appears for the first time and Remove when its last reference goes, so the
// caller can send changes instead of recomputing the whole set.
//
// Matching follows MQTT 3.1.1 section 4.7:
//   - '+' matches exactly one level, which may be empty: "a/+/b" matches
//     "a//b", "+/+" matches "/x" and "a/", and "a/+" matches neither "a" nor
//     "a/b/c";
//   - '#' matches its parent level and any number of levels below it: "a/#"
//     matches "a", "a/" and "a/b/c", but not "ab";
//   - levels are compared byte for byte, and empty levels count: "/a" is not
//     "a", and "a//b" has three levels;
//   - a filter that starts with a wildcard never matches a topic that starts
//     with '$' [MQTT-4.7.2-1]: "#" and "+/x" do not match "$SYS/x", while
//     "$SYS/#" and "$SYS/+" do.
//
// Shared subscriptions ("$share/<group>/<filter>") are not special in Tree: a
// filter is taken literally. Shared (shared.go) holds them as (group, filter)
// pairs and SplitShare parses the prefix.
//
// # Layout
//
// The tree is a trie with one node per filter level, like the sublist of
// nats-server. Literal levels are children keyed by the level text (a short
// slice, or a map once a node has many children). '+' has its own child
// pointer, and '#', which is always the last level, is only a reference count
// on the node of the level before it, so neither wildcard is ever a key.
// Nodes are pruned as soon as the last filter through them goes. The full
// filter text is not stored: the level keys of the nodes that Add creates are
// substrings of one copy of the new part of the filter, and Filters and
// MatchingFilters rebuild the text from the path. This keeps a stored filter
// at roughly 100-200 bytes (see docs/benchmarks.md). A node created by a long
// filter keeps that filter's copy alive for as long as the node lives.
package topictree

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Errors returned by this package. Returned errors wrap one of them with
// detail, so test them with errors.Is.
var (
	// ErrInvalidFilter: the filter breaks an MQTT 3.1.1 rule for topic filters.
	ErrInvalidFilter = errors.New("topictree: invalid filter")
	// ErrInvalidTopic: the topic breaks an MQTT 3.1.1 rule for topic names.
	ErrInvalidTopic = errors.New("topictree: invalid topic")
	// ErrTooManyReferences: Add would push a filter's reference count past
	// math.MaxUint32.
	ErrTooManyReferences = errors.New("topictree: too many references")
)

// maxLen is the longest topic or filter: an MQTT UTF-8 string has a 16-bit
// length prefix [MQTT-4.7.3-3].
const maxLen = 65535

// indexAbove is the number of literal children a node keeps in a slice; one
// more and they move to a map. They move back to a slice when the map shrinks
// to indexAbove/2, so a node hovering around the limit does not flip back and
// forth.
const indexAbove = 16

// ValidateFilter reports whether filter is a valid MQTT 3.1.1 topic filter:
// 1 to 65535 bytes of UTF-8 without U+0000, '#' only as the whole last level,
// and '+' only as a whole level. The error wraps ErrInvalidFilter and names
// the rule.
func ValidateFilter(filter string) error {
	if msg := checkString(filter); msg != "" {
		return fmt.Errorf("%w %s: %s", ErrInvalidFilter, quote(filter), msg)
	}
	for i := 0; i < len(filter); i++ {
		switch filter[i] {
		case '#':
			// [MQTT-4.7.1-2] '#' is on its own or after a '/', and it is the
			// last character of the filter.
			if i != len(filter)-1 {
				return fmt.Errorf("%w %s: '#' must be the last level [MQTT-4.7.1-2]", ErrInvalidFilter, quote(filter))
			}
			if i > 0 && filter[i-1] != '/' {
				return fmt.Errorf("%w %s: '#' must be alone in its level [MQTT-4.7.1-2]", ErrInvalidFilter, quote(filter))
			}
		case '+':
			// [MQTT-4.7.1-3] '+' occupies an entire level.
			if (i > 0 && filter[i-1] != '/') || (i+1 < len(filter) && filter[i+1] != '/') {
				return fmt.Errorf("%w %s: '+' must be alone in its level [MQTT-4.7.1-3]", ErrInvalidFilter, quote(filter))
			}
		}
	}
	return nil
}

// ValidateTopic reports whether topic is a valid MQTT 3.1.1 topic name:
// 1 to 65535 bytes of UTF-8 without U+0000 and without the wildcard
// characters '+' and '#'. The error wraps ErrInvalidTopic and names the rule.
func ValidateTopic(topic string) error {
	if msg := checkString(topic); msg != "" {
		return fmt.Errorf("%w %s: %s", ErrInvalidTopic, quote(topic), msg)
	}
	// [MQTT-4.7.1-1] wildcards are for filters, never for topic names.
	if strings.ContainsAny(topic, "+#") {
		return fmt.Errorf("%w %s: wildcards '+' and '#' are not allowed in a topic name [MQTT-4.7.1-1]", ErrInvalidTopic, quote(topic))
	}
	return nil
}

// checkString checks the rules that topics and filters share and returns the
// broken one, or "".
func checkString(s string) string {
	switch {
	case len(s) == 0:
		return "must be at least 1 byte long [MQTT-4.7.3-1]"
	case len(s) > maxLen:
		return fmt.Sprintf("is %d bytes, longer than %d [MQTT-4.7.3-3]", len(s), maxLen)
	case strings.IndexByte(s, 0) >= 0:
		return "must not contain U+0000 [MQTT-4.7.3-2]"
	case !utf8.ValidString(s):
		return "must be valid UTF-8 [MQTT-1.5.3-1]"
	}
	return ""
}

// quote quotes s for an error message, cut short if it is long.
func quote(s string) string {
	const keep = 100
	if len(s) <= keep {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:keep], len(s))
}

// Tree is a reference-counted set of topic filters. It is safe for concurrent
// use: any number of readers (Match, MatchingFilters, Filters, Count, Len)
// run together, and a writer (Add, Remove, Reset) excludes them.
//
// The zero value is an empty Tree ready to use. A Tree must not be copied
// after first use.
type Tree struct {
	mu   sync.RWMutex
	root node // root.key is unused; root.refs is always 0
	n    int  // distinct filters
}

// node is one level of the trie: the filters whose levels so far lead here.
type node struct {
	key      string           // this level's text ("" for the '+' child, which is not keyed)
	kids     []*node          // literal children while there are at most indexAbove of them
	index    map[string]*node // literal children once there are more; kids is then nil
	plus     *node            // the '+' child
	refs     uint32           // references to the filter that ends at this level
	hashRefs uint32           // references to this filter followed by "/#" ("#" at the root)
}

// New returns an empty Tree.
func New() *Tree { return new(Tree) }

// Add adds one reference to filter. first is true when the filter was not in
// the tree before. The error wraps ErrInvalidFilter when ValidateFilter
// rejects the filter.
func (t *Tree) Add(filter string) (first bool, err error) {
	if err := ValidateFilter(filter); err != nil {
		return false, err
	}
	body, levels, hash := splitHash(filter)

	t.mu.Lock()
	defer t.mu.Unlock()

	n := &t.root
	var copied string // the new part of the filter, copied once
	copiedAt := -1    // offset of copied in body; -1 before the copy
	for i := 0; levels; {
		end, last := levelEnd(body, i)
		level := body[i:end]
		if level == "+" {
			if n.plus == nil {
				n.plus = new(node)
			}
			n = n.plus
		} else {
			c := n.child(level)
			if c == nil {
				if copiedAt < 0 {
					// Copy only the part that needs new nodes, so that the
					// caller's string (maybe a slice of a whole log line) is
					// not retained.
					copied, copiedAt = strings.Clone(body[i:]), i
				}
				c = &node{key: copied[i-copiedAt : end-copiedAt]}
				n.addChild(c)
			}
			n = c
		}
		if last {
			break
		}
		i = end + 1
	}

	refs := &n.refs
	if hash {
		refs = &n.hashRefs
	}
	if *refs == math.MaxUint32 {
		return false, fmt.Errorf("%w: filter %s has %d", ErrTooManyReferences, quote(filter), *refs)
	}
	*refs++
	if *refs == 1 {
		t.n++
		return true, nil
	}
	return false, nil
}

// Remove drops one reference to filter. last is true when that was the last
// reference: the filter is gone and the nodes only it used are pruned.
// Removing a filter that is not in the tree, or an invalid one, does nothing
// and returns false.
func (t *Tree) Remove(filter string) (last bool) {
	if ValidateFilter(filter) != nil {
		return false
	}
	body, levels, hash := splitHash(filter)

	t.mu.Lock()
	defer t.mu.Unlock()

	var buf [16]*node
	path := append(buf[:0], &t.root)
	n := &t.root
	for i := 0; levels; {
		end, last := levelEnd(body, i)
		if n = n.next(body[i:end]); n == nil {
			return false
		}
		path = append(path, n)
		if last {
			break
		}
		i = end + 1
	}

	refs := &n.refs
	if hash {
		refs = &n.hashRefs
	}
	if *refs == 0 {
		return false
	}
	*refs--
	if *refs > 0 {
		return false
	}
	t.n--
	for k := len(path) - 1; k > 0 && path[k].empty(); k-- {
		parent, c := path[k-1], path[k]
		if parent.plus == c {
			parent.plus = nil
		} else {
			parent.removeChild(c)
		}
	}
	return true
}

// Count returns the number of references held for exactly this filter: 0 if
// it is not in the tree or is invalid.
func (t *Tree) Count(filter string) int {
	if ValidateFilter(filter) != nil {
		return 0
	}
	body, levels, hash := splitHash(filter)

	t.mu.RLock()
	defer t.mu.RUnlock()

	n := &t.root
	for i := 0; levels; {
		end, last := levelEnd(body, i)
		if n = n.next(body[i:end]); n == nil {
			return 0
		}
		if last {
			break
		}
		i = end + 1
	}
	if hash {
		return int(n.hashRefs)
	}
	return int(n.refs)
}

// Match reports whether any filter in the tree matches topic. It does not
// allocate. topic is expected to be a valid topic name, as delivered by a
// broker (check untrusted input with ValidateTopic); an empty topic never
// matches, and for other invalid topics the answer is meaningless but
// harmless.
func (t *Tree) Match(topic string) bool {
	if topic == "" {
		return false
	}
	t.mu.RLock()
	// [MQTT-4.7.2-1] wildcards at the first level never match topics that
	// start with '$'.
	ok := match(&t.root, topic, 0, topic[0] != '$')
	t.mu.RUnlock()
	return ok
}

// match reports whether a filter through n matches the rest of topic, which
// starts with the level at i. wild is false only at the root for a topic that
// starts with '$', where the wildcard children must not match.
func match(n *node, topic string, i int, wild bool) bool {
	for {
		if wild && n.hashRefs > 0 {
			// "x/#" matches every topic that reaches x with levels to spare;
			// the case without (topic "x") is handled below.
			return true
		}
		end, last := levelEnd(topic, i)
		if p := n.plus; wild && p != nil {
			if last {
				if p.refs > 0 || p.hashRefs > 0 {
					return true
				}
			} else if match(p, topic, end+1, true) {
				return true
			}
		}
		c := n.child(topic[i:end])
		if c == nil {
			return false
		}
		if last {
			// "a/#" also matches "a", its parent level.
			return c.refs > 0 || c.hashRefs > 0
		}
		n, i, wild = c, end+1, true
	}
}

// MatchingFilters returns every filter in the tree that matches topic,
// sorted. The result is never nil. Like Match, it expects a valid topic.
func (t *Tree) MatchingFilters(topic string) []string {
	out := []string{}
	if topic == "" {
		return out
	}
	buf := make([]byte, 0, len(topic)+8)
	t.mu.RLock()
	collect(&t.root, topic, 0, true, topic[0] != '$', buf, &out)
	t.mu.RUnlock()
	slices.Sort(out)
	return out
}

// collect is match that appends every matching filter to out instead of
// stopping at the first. buf holds the filter text of the levels that led to
// n; root tells whether n is the root.
func collect(n *node, topic string, i int, root, wild bool, buf []byte, out *[]string) {
	if wild && n.hashRefs > 0 {
		*out = append(*out, string(appendLevel(buf, "#", root)))
	}
	end, last := levelEnd(topic, i)
	if p := n.plus; wild && p != nil {
		pb := appendLevel(buf, "+", root)
		if last {
			terminals(p, pb, out)
		} else {
			collect(p, topic, end+1, false, true, pb, out)
		}
	}
	level := topic[i:end]
	c := n.child(level)
	if c == nil {
		return
	}
	cb := appendLevel(buf, level, root)
	if last {
		terminals(c, cb, out)
	} else {
		collect(c, topic, end+1, false, true, cb, out)
	}
}

// terminals appends the filters that end at the non-root node n, whose
// filter text is buf: n's own and n's "/#".
func terminals(n *node, buf []byte, out *[]string) {
	if n.refs > 0 {
		*out = append(*out, string(buf))
	}
	if n.hashRefs > 0 {
		*out = append(*out, string(appendLevel(buf, "#", false)))
	}
}

// Filters returns every distinct filter in the tree, sorted. The result is
// never nil.
func (t *Tree) Filters() []string {
	t.mu.RLock()
	out := make([]string, 0, t.n)
	all(&t.root, nil, true, &out)
	t.mu.RUnlock()
	slices.Sort(out)
	return out
}

// all appends every filter through n to out; buf and root are as in collect.
func all(n *node, buf []byte, root bool, out *[]string) {
	if root {
		if n.hashRefs > 0 {
			*out = append(*out, "#")
		}
	} else {
		terminals(n, buf, out)
	}
	if n.plus != nil {
		all(n.plus, appendLevel(buf, "+", root), false, out)
	}
	for _, c := range n.kids {
		all(c, appendLevel(buf, c.key, root), false, out)
	}
	for _, c := range n.index {
		all(c, appendLevel(buf, c.key, root), false, out)
	}
}

// Len returns the number of distinct filters in the tree.
func (t *Tree) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.n
}

// Reset removes every filter.
func (t *Tree) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.root = node{}
	t.n = 0
}

// splitHash splits a valid filter into the levels to walk and whether it ends
// in '#'. levels is false only for the filter "#", which has none; otherwise
// body holds at least one (maybe empty) level: "/#" walks the one level "".
func splitHash(filter string) (body string, levels, hash bool) {
	switch {
	case filter == "#":
		return "", false, true
	case strings.HasSuffix(filter, "/#"):
		return filter[:len(filter)-2], true, true
	}
	return filter, true, false
}

// levelEnd returns the end of the level of s that starts at i, and whether it
// is the last level.
func levelEnd(s string, i int) (end int, last bool) {
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return i + j, false
	}
	return len(s), true
}

// appendLevel appends a level to the filter text buf.
func appendLevel(buf []byte, level string, root bool) []byte {
	if !root {
		buf = append(buf, '/')
	}
	return append(buf, level...)
}

// child returns the literal child for level, or nil.
func (n *node) child(level string) *node {
	if n.index != nil {
		return n.index[level]
	}
	for _, c := range n.kids {
		if c.key == level {
			return c
		}
	}
	return nil
}

// next returns the child for a filter level: the '+' child or a literal one.
func (n *node) next(level string) *node {
	if level == "+" {
		return n.plus
	}
	return n.child(level)
}

func (n *node) addChild(c *node) {
	switch {
	case n.index != nil:
		n.index[c.key] = c
	case len(n.kids) < indexAbove:
		n.kids = append(n.kids, c)
	default:
		n.index = make(map[string]*node, len(n.kids)+1)
		for _, k := range n.kids {
			n.index[k.key] = k
		}
		n.index[c.key] = c
		n.kids = nil
	}
}

func (n *node) removeChild(c *node) {
	if n.index != nil {
		delete(n.index, c.key)
		if len(n.index) <= indexAbove/2 {
			n.kids = make([]*node, 0, len(n.index))
			for _, k := range n.index {
				n.kids = append(n.kids, k)
			}
			n.index = nil
		}
		return
	}
	for i, k := range n.kids {
		if k == c {
			last := len(n.kids) - 1
			n.kids[i] = n.kids[last]
			n.kids[last] = nil
			n.kids = n.kids[:last]
			break
		}
	}
	if len(n.kids) == 0 {
		n.kids = nil
	}
}

// empty reports whether no filter goes through n.
func (n *node) empty() bool {
	return n.refs == 0 && n.hashRefs == 0 && n.plus == nil && len(n.kids) == 0 && len(n.index) == 0
}

// nodeCount returns the number of nodes, the root included. For tests.
func (t *Tree) nodeCount() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return countNodes(&t.root)
}

func countNodes(n *node) int {
	c := 1
	if n.plus != nil {
		c += countNodes(n.plus)
	}
	for _, k := range n.kids {
		c += countNodes(k)
	}
	for _, k := range n.index {
		c += countNodes(k)
	}
	return c
}
