// shared.go owns shared subscriptions: the "$share/<group>/<filter>" syntax and Shared, a
// reference-counted set of (group, filter) pairs that answers which pairs match a topic.
//
// MQTT 5 (section 4.8.2) identifies a shared subscription by its share name and its filter
// together: "$share/g/a/#" and "$share/g/a/+" are two subscriptions, each of which delivers a
// message once to one of its members, so the unit here is the pair, never the group alone.

package topictree

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// SharePrefix starts a shared subscription's filter.
const SharePrefix = "$share/"

// Share is one shared subscription: its share name (group) and its topic filter.
type Share struct {
	Group  string
	Filter string
}

// String is the filter as a client subscribes to it.
func (s Share) String() string { return SharePrefix + s.Group + "/" + s.Filter }

// SplitShare splits "$share/<group>/<filter>" into its group and filter. ok is false when the
// filter is not a shared subscription, or when it breaks a rule of one: the group is at least
// one character without '/', '+' or '#' [MQTT-4.8.2-1] and the filter is a valid topic filter
// [MQTT-4.8.2-2]. Mosquitto refuses such subscriptions, so a caller that gets !ok for a filter
// starting with SharePrefix may take it literally.
func SplitShare(filter string) (s Share, ok bool) {
	rest, found := strings.CutPrefix(filter, SharePrefix)
	if !found {
		return Share{}, false
	}
	i := strings.IndexByte(rest, '/')
	if i <= 0 || strings.ContainsAny(rest[:i], "+#") {
		return Share{}, false
	}
	s = Share{Group: rest[:i], Filter: rest[i+1:]}
	if ValidateFilter(s.Filter) != nil {
		return Share{}, false
	}
	return s, true
}

// ValidateGroup reports whether group is a valid share name: 1 to 65535 bytes of UTF-8
// without U+0000, '/', '+' or '#' [MQTT-4.8.2-1]. The error wraps ErrInvalidFilter.
func ValidateGroup(group string) error {
	if msg := checkString(group); msg != "" {
		return fmt.Errorf("%w: share name %s: %s", ErrInvalidFilter, quote(group), msg)
	}
	if strings.ContainsAny(group, "/+#") {
		return fmt.Errorf("%w: share name %s: must not contain '/', '+' or '#' [MQTT-4.8.2-1]", ErrInvalidFilter, quote(group))
	}
	return nil
}

// Shared is a reference-counted set of shared subscriptions. Like Tree it is safe for
// concurrent use (readers together, a writer alone) and its zero value is ready to use.
type Shared struct {
	mu     sync.RWMutex
	tree   Tree                         // each filter once per group that holds it
	groups map[string]map[string]uint32 // filter -> group -> references
	n      int                          // distinct pairs
}

// NewShared returns an empty Shared.
func NewShared() *Shared { return new(Shared) }

// Add adds one reference to s; first is true when the pair was not in the set before. The
// error wraps ErrInvalidFilter for an invalid group or filter.
func (s *Shared) Add(sh Share) (first bool, err error) {
	if err := ValidateGroup(sh.Group); err != nil {
		return false, err
	}
	if err := ValidateFilter(sh.Filter); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[sh.Filter]
	if g[sh.Group] == 0 {
		if _, err := s.tree.Add(sh.Filter); err != nil {
			return false, err
		}
		if g == nil {
			if s.groups == nil {
				s.groups = map[string]map[string]uint32{}
			}
			g = map[string]uint32{}
			s.groups[strings.Clone(sh.Filter)] = g
		}
		g[strings.Clone(sh.Group)] = 1
		s.n++
		return true, nil
	}
	if g[sh.Group] == ^uint32(0) {
		return false, fmt.Errorf("%w: share %s", ErrTooManyReferences, quote(sh.String()))
	}
	g[sh.Group]++
	return false, nil
}

// Remove drops one reference to sh; last is true when that was the last one. Removing a pair
// that is not in the set does nothing.
func (s *Shared) Remove(sh Share) (last bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[sh.Filter]
	if g[sh.Group] == 0 {
		return false
	}
	g[sh.Group]--
	if g[sh.Group] > 0 {
		return false
	}
	delete(g, sh.Group)
	if len(g) == 0 {
		delete(s.groups, sh.Filter)
	}
	s.tree.Remove(sh.Filter)
	s.n--
	return true
}

// Count returns the references held for sh.
func (s *Shared) Count(sh Share) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return int(s.groups[sh.Filter][sh.Group])
}

// HasFilter reports whether any group holds filter.
func (s *Shared) HasFilter(filter string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.groups[filter]) > 0
}

// Len returns the number of distinct pairs.
func (s *Shared) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.n
}

// Match reports whether any pair's filter matches topic, with the rules of Tree.Match.
func (s *Shared) Match(topic string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.n > 0 && s.tree.Match(topic)
}

// AppendMatching appends every pair whose filter matches topic, sorted by filter then group.
func (s *Shared) AppendMatching(dst []Share, topic string) []Share {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.n == 0 {
		return dst
	}
	for _, f := range s.tree.MatchingFilters(topic) {
		dst = appendGroups(dst, f, s.groups[f])
	}
	return dst
}

// Shares returns every pair, sorted by filter then group. The result is never nil.
func (s *Shared) Shares() []Share {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Share, 0, s.n)
	for _, f := range s.tree.Filters() {
		out = appendGroups(out, f, s.groups[f])
	}
	return out
}

func appendGroups(dst []Share, filter string, groups map[string]uint32) []Share {
	start := len(dst)
	for g := range groups {
		dst = append(dst, Share{Group: g, Filter: filter})
	}
	slices.SortFunc(dst[start:], func(a, b Share) int { return strings.Compare(a.Group, b.Group) })
	return dst
}
