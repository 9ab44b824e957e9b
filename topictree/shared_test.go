package topictree

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestSplitShare(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Share
		ok   bool
	}{
		{"$share/g/jobs/#", Share{"g", "jobs/#"}, true},
		{"$share/g/#", Share{"g", "#"}, true},
		{"$share/g//a", Share{"g", "/a"}, true}, // the filter "/a" has an empty first level
		{"$share/g with space/a b", Share{"g with space", "a b"}, true},
		{"$share//a", Share{}, false},   // empty share name [MQTT-4.8.2-1]
		{"$share/g+/a", Share{}, false}, // wildcard in the share name
		{"$share/g", Share{}, false},    // no filter
		{"$share/g/", Share{}, false},   // empty filter
		{"$share/g/a#", Share{}, false}, // invalid filter
		{"jobs/#", Share{}, false},
		{"$SYS/#", Share{}, false},
		{"$sharex/g/a", Share{}, false},
	} {
		got, ok := SplitShare(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("SplitShare(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		if ok && got.String() != tc.in {
			t.Errorf("Share%+v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}

func TestSharedCountsPairsNotGroups(t *testing.T) {
	s := NewShared()
	add := func(g, f string, wantFirst bool) {
		t.Helper()
		first, err := s.Add(Share{g, f})
		if err != nil || first != wantFirst {
			t.Fatalf("Add(%s, %s) = %v, %v; want %v", g, f, first, err, wantFirst)
		}
	}
	add("g", "a/#", true)
	add("g", "a/#", false) // a second member of the same subscription
	add("g", "a/+", true)  // same group, another filter: another shared subscription
	add("h", "a/#", true)  // same filter, another group
	if s.Len() != 3 || s.Count(Share{"g", "a/#"}) != 2 {
		t.Fatalf("Len %d, Count %d", s.Len(), s.Count(Share{"g", "a/#"}))
	}
	got := s.AppendMatching(nil, "a/b")
	want := []Share{{"g", "a/#"}, {"h", "a/#"}, {"g", "a/+"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("AppendMatching(a/b) = %v, want %v", got, want)
	}
	if got := s.AppendMatching(nil, "a"); !reflect.DeepEqual(got, []Share{{"g", "a/#"}, {"h", "a/#"}}) {
		t.Fatalf("AppendMatching(a) = %v", got) // "a/#" matches its parent level
	}
	if s.Remove(Share{"g", "a/#"}) {
		t.Fatal("Remove of one of two references reported the last")
	}
	if !s.Remove(Share{"g", "a/#"}) || s.Remove(Share{"g", "a/#"}) {
		t.Fatal("the last reference, then an unknown pair")
	}
	if got := s.AppendMatching(nil, "a/b"); !reflect.DeepEqual(got, []Share{{"h", "a/#"}, {"g", "a/+"}}) {
		t.Fatalf("after Remove: %v", got)
	}
	if !reflect.DeepEqual(s.Shares(), []Share{{"h", "a/#"}, {"g", "a/+"}}) {
		t.Fatalf("Shares() = %v", s.Shares())
	}
	s.Remove(Share{"h", "a/#"})
	s.Remove(Share{"g", "a/+"})
	if s.Len() != 0 || s.Match("a/b") || s.tree.nodeCount() != 1 {
		t.Fatalf("not empty after removing everything: %d pairs, %d nodes", s.Len(), s.tree.nodeCount())
	}
}

func TestSharedDollarAndInvalid(t *testing.T) {
	s := NewShared()
	if _, err := s.Add(Share{"g", "#"}); err != nil {
		t.Fatal(err)
	}
	// [MQTT-4.7.2-1] holds inside a shared subscription too.
	if s.Match("$SYS/x") || !s.Match("x") {
		t.Fatal("'#' of a share matched a $ topic, or missed a plain one")
	}
	for _, sh := range []Share{{"", "a"}, {"g/h", "a"}, {"g#", "a"}, {"g", "a/#/b"}, {"g", ""}} {
		if _, err := s.Add(sh); !errors.Is(err, ErrInvalidFilter) {
			t.Errorf("Add(%+v) = %v, want ErrInvalidFilter", sh, err)
		}
	}
	if s.Len() != 1 {
		t.Fatalf("invalid pairs were added: %d", s.Len())
	}
}

// TestSharedAgainstReference runs random Add/Remove sequences of (group, filter) pairs and
// compares Shared with a map of reference counts and refMatch after every step.
func TestSharedAgainstReference(t *testing.T) {
	everyTopic := allTopics(3)
	groups := []string{"g", "h", "g2"}
	for seed := range uint64(6) {
		rng := rand.New(rand.NewPCG(seed, 0x54a2e))
		s := NewShared()
		model := map[Share]int{}
		for step := range 800 {
			sh := Share{Group: groups[rng.IntN(len(groups))], Filter: randomName(rng, filterLevels)}
			if !refValidFilter(sh.Filter) {
				continue
			}
			if rng.IntN(3) > 0 {
				first, err := s.Add(sh)
				if err != nil || first != (model[sh] == 0) {
					t.Fatalf("seed %d step %d: Add(%+v) = %v, %v with %d references", seed, step, sh, first, err, model[sh])
				}
				model[sh]++
			} else {
				last := s.Remove(sh)
				if last != (model[sh] == 1) {
					t.Fatalf("seed %d step %d: Remove(%+v) = %v with %d references", seed, step, sh, last, model[sh])
				}
				if model[sh] > 0 {
					model[sh]--
				}
				if model[sh] == 0 {
					delete(model, sh)
				}
			}
			if s.Len() != len(model) {
				t.Fatalf("seed %d step %d: Len %d, want %d", seed, step, s.Len(), len(model))
			}
			if step%50 != 0 {
				continue
			}
			for _, topic := range everyTopic {
				if !refValidTopic(topic) {
					continue // "" is no topic
				}
				var want []Share
				for sh := range model {
					if refMatch(sh.Filter, topic) {
						want = append(want, sh)
					}
				}
				got := s.AppendMatching(nil, topic)
				if !sameShares(got, want) || s.Match(topic) != (len(want) > 0) {
					t.Fatalf("seed %d step %d: topic %q: got %v, want %v", seed, step, topic, got, want)
				}
			}
		}
	}
}

func sameShares(a, b []Share) bool {
	if len(a) != len(b) {
		return false
	}
	set := map[Share]bool{}
	for _, s := range a {
		if set[s] {
			return false // a pair listed twice
		}
		set[s] = true
	}
	for _, s := range b {
		if !set[s] {
			return false
		}
	}
	return true
}
