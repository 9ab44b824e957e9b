package topictree

import (
	"errors"
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
