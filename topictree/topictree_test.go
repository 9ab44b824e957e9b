package topictree

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
	"weak"
)

// TestMatch is the table of MQTT matching traps: one filter, one topic.
func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		// '#' covers its parent level and everything below, not a longer level.
		{"a/#", "a", true},
		{"a/#", "a/", true},
		{"a/#", "a/b", true},
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"a/#", "ab/c", false},
		{"a/#", "b/a", false},
		{"a/b/#", "a/b", true},
		{"a/b/#", "a/bc", false},
		{"a/b/#", "a", false},
		{"#", "a", true},
		{"#", "/", true},
		{"#", "a/b/c", true},
		{"#", "/a", true},
		// [MQTT-4.7.2-1] wildcards first never match '$' topics.
		{"#", "$SYS", false},
		{"#", "$SYS/x", false},
		{"#", "$", false},
		{"+", "$SYS", false},
		{"+/x", "$SYS/x", false},
		{"+/#", "$SYS/x", false},
		{"+/+", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"$SYS/#", "$SYS", true},
		{"$SYS/+", "$SYS/x", true},
		{"$SYS/+", "$SYS", false},
		{"$SYS/x", "$SYS/x", true},
		{"$SYS/#", "$SYSx/y", false},
		// '$' further down is an ordinary character.
		{"a/+", "a/$x", true},
		{"a/#", "a/$SYS/x", true},
		{"+/$x", "a/$x", true},
		// Empty levels count.
		{"a/+/b", "a//b", true},
		{"a//b", "a//b", true},
		{"a//b", "a/b", false},
		{"a/b", "a//b", false},
		{"+/+", "/x", true},
		{"+/+", "a/", true},
		{"+/+", "/", true},
		{"+", "/", false},
		{"+", "a", true},
		{"/+", "/", true},
		{"/#", "/", true},
		{"/#", "/a/b", true},
		{"/#", "a", false},
		// "/a" is not "a".
		{"/a", "a", false},
		{"a", "/a", false},
		{"/a", "/a", true},
		{"a/", "a", false},
		{"a", "a/", false},
		// '+' is exactly one level.
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/", true},
		{"+/b", "a/b", true},
		{"+/b", "a/c", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"+/#", "a", true},
		{"+/#", "a/b/c", true},
		{"+/+/#", "a", false},
		{"+/+/#", "a/b", true},
		// Literal levels are compared byte for byte.
		{"a/b", "a/b", true},
		{"a/b", "a/B", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"ä/+", "ä/ö", true},
		{"a b/c", "a b/c", true},
	}
	for _, tc := range tests {
		t.Run(tc.filter+" "+tc.topic, func(t *testing.T) {
			tr := New()
			if _, err := tr.Add(tc.filter); err != nil {
				t.Fatalf("Add(%q): %v", tc.filter, err)
			}
			if err := ValidateTopic(tc.topic); err != nil {
				t.Fatalf("bad test topic: %v", err)
			}
			if got := tr.Match(tc.topic); got != tc.want {
				t.Errorf("Match(%q) with filter %q = %v, want %v", tc.topic, tc.filter, got, tc.want)
			}
			if got := refMatch(tc.filter, tc.topic); got != tc.want {
				t.Errorf("reference matcher disagrees with the table: refMatch(%q, %q) = %v", tc.filter, tc.topic, got)
			}
			var want []string
			if tc.want {
				want = []string{tc.filter}
			}
			assertStrings(t, "MatchingFilters("+tc.topic+")", tr.MatchingFilters(tc.topic), want)
		})
	}
}

func TestMatchEmptyTopic(t *testing.T) {
	tr := New()
	for _, f := range []string{"#", "+", "/#"} {
		mustAdd(t, tr, f)
	}
	if tr.Match("") {
		t.Error(`Match("") = true, want false`)
	}
	assertStrings(t, `MatchingFilters("")`, tr.MatchingFilters(""), nil)
}

func TestMatchingFiltersSeveral(t *testing.T) {
	tr := New()
	for _, f := range []string{"#", "+/#", "a/#", "a/+", "a/b", "a/b/#", "+/b", "a/c", "$SYS/#", "b/#", "a/b/c", "/#"} {
		mustAdd(t, tr, f)
	}
	tests := []struct {
		topic string
		want  []string
	}{
		{"a/b", []string{"#", "+/#", "+/b", "a/#", "a/+", "a/b", "a/b/#"}},
		{"a", []string{"#", "+/#", "a/#"}},
		{"a/b/c", []string{"#", "+/#", "a/#", "a/b/#", "a/b/c"}},
		{"$SYS/b", []string{"$SYS/#"}},
		{"/b", []string{"#", "+/#", "+/b", "/#"}},
		{"c", []string{"#", "+/#"}},
	}
	for _, tc := range tests {
		t.Run(tc.topic, func(t *testing.T) {
			assertStrings(t, "MatchingFilters", tr.MatchingFilters(tc.topic), tc.want)
			if !tr.Match(tc.topic) {
				t.Errorf("Match(%q) = false", tc.topic)
			}
		})
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		filter string
		rule   string // "" when valid; otherwise a fragment of the error
	}{
		{"a", ""},
		{"#", ""},
		{"+", ""},
		{"/", ""},
		{"//", ""},
		{"a/#", ""},
		{"/#", ""},
		{"+/+/#", ""},
		{"$SYS/#", ""},
		{"$share/g/a/+", ""}, // not special here
		{"ä/ö", ""},
		{strings.Repeat("a", maxLen), ""},
		{"", "[MQTT-4.7.3-1]"},
		{strings.Repeat("a", maxLen+1), "[MQTT-4.7.3-3]"},
		{"a\x00b", "[MQTT-4.7.3-2]"},
		{"a/\xff", "[MQTT-1.5.3-1]"},
		{"a/\xed\xa0\x80", "[MQTT-1.5.3-1]"}, // an encoded surrogate
		{"a/#/b", "'#' must be the last level [MQTT-4.7.1-2]"},
		{"#/", "'#' must be the last level [MQTT-4.7.1-2]"},
		{"a/b#", "'#' must be alone in its level [MQTT-4.7.1-2]"},
		{"a#", "'#' must be alone in its level [MQTT-4.7.1-2]"},
		{"##", "'#' must be the last level [MQTT-4.7.1-2]"},
		{"a/+b", "'+' must be alone in its level [MQTT-4.7.1-3]"},
		{"a+/b", "'+' must be alone in its level [MQTT-4.7.1-3]"},
		{"++", "'+' must be alone in its level [MQTT-4.7.1-3]"},
		{"+#", "'+' must be alone in its level [MQTT-4.7.1-3]"},
	}
	for _, tc := range tests {
		name := tc.filter
		if len(name) > 20 {
			name = fmt.Sprintf("%.10s...%d bytes", name, len(name))
		}
		t.Run(name, func(t *testing.T) {
			err := ValidateFilter(tc.filter)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("ValidateFilter: %v", err)
				}
				tr := New()
				if first, err := tr.Add(tc.filter); !first || err != nil {
					t.Fatalf("Add = %v, %v; want true, nil", first, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidFilter) {
				t.Fatalf("ValidateFilter = %v, want an error wrapping ErrInvalidFilter", err)
			}
			if !strings.Contains(err.Error(), tc.rule) {
				t.Errorf("error %q does not name the rule %q", err, tc.rule)
			}
			if len(err.Error()) > 200 {
				t.Errorf("error is %d bytes long, want the filter cut short", len(err.Error()))
			}
			tr := New()
			if first, err := tr.Add(tc.filter); first || !errors.Is(err, ErrInvalidFilter) {
				t.Errorf("Add = %v, %v; want false and ErrInvalidFilter", first, err)
			}
			if tr.Len() != 0 || tr.nodeCount() != 1 {
				t.Errorf("a rejected Add left Len %d, %d nodes", tr.Len(), tr.nodeCount())
			}
			if tr.Remove(tc.filter) {
				t.Error("Remove of an invalid filter returned true")
			}
			if n := tr.Count(tc.filter); n != 0 {
				t.Errorf("Count = %d, want 0", n)
			}
		})
	}
}

func TestValidateTopic(t *testing.T) {
	tests := []struct {
		topic string
		rule  string
	}{
		{"a", ""},
		{"/", ""},
		{"a//b", ""},
		{"$SYS/broker", ""},
		{"ä", ""},
		{"", "[MQTT-4.7.3-1]"},
		{strings.Repeat("/", maxLen+1), "[MQTT-4.7.3-3]"},
		{"a\x00", "[MQTT-4.7.3-2]"},
		{"\xc3", "[MQTT-1.5.3-1]"},
		{"a/+", "[MQTT-4.7.1-1]"},
		{"a/#", "[MQTT-4.7.1-1]"},
		{"a#b", "[MQTT-4.7.1-1]"},
	}
	for _, tc := range tests {
		name := tc.topic
		if len(name) > 20 {
			name = fmt.Sprintf("%.10s...%d bytes", name, len(name))
		}
		t.Run(name, func(t *testing.T) {
			err := ValidateTopic(tc.topic)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("ValidateTopic: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidTopic) || errors.Is(err, ErrInvalidFilter) {
				t.Fatalf("ValidateTopic = %v, want an error wrapping ErrInvalidTopic only", err)
			}
			if !strings.Contains(err.Error(), tc.rule) {
				t.Errorf("error %q does not name the rule %q", err, tc.rule)
			}
		})
	}
}

func TestAddRemoveReferences(t *testing.T) {
	for _, f := range []string{"a/b", "a/#", "#", "+", "+/#", "/", "/#", "a/+/c", "$SYS/#"} {
		t.Run(f, func(t *testing.T) {
			tr := New()
			topic := strings.NewReplacer("+", "x", "#", "y").Replace(f)
			if strings.HasPrefix(f, "+") || strings.HasPrefix(f, "#") {
				topic = "z" + topic[1:]
			}
			if first := mustAdd(t, tr, f); !first {
				t.Fatal("first Add: first = false")
			}
			if first := mustAdd(t, tr, f); first {
				t.Fatal("second Add: first = true")
			}
			if got := tr.Count(f); got != 2 {
				t.Fatalf("Count = %d, want 2", got)
			}
			if tr.Len() != 1 {
				t.Fatalf("Len = %d, want 1", tr.Len())
			}
			if last := tr.Remove(f); last {
				t.Fatal("first Remove: last = true with a reference left")
			}
			if !tr.Match(topic) {
				t.Fatalf("Match(%q) = false with one reference left", topic)
			}
			if got := tr.Count(f); got != 1 {
				t.Fatalf("Count = %d, want 1", got)
			}
			if last := tr.Remove(f); !last {
				t.Fatal("second Remove: last = false")
			}
			if tr.Match(topic) {
				t.Fatalf("Match(%q) = true after the last Remove", topic)
			}
			if last := tr.Remove(f); last {
				t.Fatal("Remove of an absent filter returned true")
			}
			if tr.Len() != 0 || tr.Count(f) != 0 {
				t.Fatalf("Len = %d, Count = %d; want 0, 0", tr.Len(), tr.Count(f))
			}
			if n := tr.nodeCount(); n != 1 {
				t.Fatalf("%d nodes left, want the root only", n)
			}
		})
	}
}

// TestRemoveKeepsNeighbours checks that pruning stops at nodes still in use
// and that Remove of a filter sharing a path with others does not touch them.
func TestRemoveKeepsNeighbours(t *testing.T) {
	tr := New()
	filters := []string{"a", "a/b", "a/b/c", "a/#", "a/+/c", "a/b/#", "+", "#", "/", "//", "/#"}
	for _, f := range filters {
		mustAdd(t, tr, f)
	}
	// Unknown filters that share prefixes with stored ones.
	for _, f := range []string{"a/b/c/d", "a/c", "a/+", "a/+/#", "+/#", "b", "///", "a/b/+"} {
		if tr.Remove(f) {
			t.Errorf("Remove(%q) of an absent filter returned true", f)
		}
	}
	assertStrings(t, "Filters", tr.Filters(), sorted(filters))
	before := tr.nodeCount()
	for i, f := range filters {
		if !tr.Remove(f) {
			t.Fatalf("Remove(%q) = false", f)
		}
		rest := sorted(filters[i+1:])
		assertStrings(t, "Filters after Remove("+f+")", tr.Filters(), rest)
		if err := checkTree(tr); err != nil {
			t.Fatalf("after Remove(%q): %v", f, err)
		}
		for _, g := range rest {
			if tr.Count(g) != 1 {
				t.Fatalf("after Remove(%q): Count(%q) = %d", f, g, tr.Count(g))
			}
		}
	}
	if before <= 1 || tr.nodeCount() != 1 {
		t.Fatalf("nodes: %d before, %d after removing everything; want >1 and 1", before, tr.nodeCount())
	}
}

// TestManyChildren crosses the slice/map limit of a node both ways.
func TestManyChildren(t *testing.T) {
	tr := New()
	model := map[string]int{}
	var filters []string
	for i := range 5 * indexAbove {
		filters = append(filters, fmt.Sprintf("k/%d", i), fmt.Sprintf("k/%d/#", i), fmt.Sprintf("+/%d", i), fmt.Sprintf("%d", i))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(filters), func(i, j int) { filters[i], filters[j] = filters[j], filters[i] })
	topics := []string{"k/3", "k/3/x", "k/40", "k/79/a/b", "k/80", "x/17", "17", "k", "$k/3"}
	for _, f := range filters {
		mustAdd(t, tr, f)
		model[f]++
	}
	compareWithModel(t, tr, model, topics)
	if err := checkTree(tr); err != nil {
		t.Fatal(err)
	}
	rng.Shuffle(len(filters), func(i, j int) { filters[i], filters[j] = filters[j], filters[i] })
	for i, f := range filters {
		if !tr.Remove(f) {
			t.Fatalf("Remove(%q) = false", f)
		}
		delete(model, f)
		if i%7 == 0 {
			compareWithModel(t, tr, model, topics)
			if err := checkTree(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if tr.nodeCount() != 1 {
		t.Fatalf("%d nodes left", tr.nodeCount())
	}
}

func TestReset(t *testing.T) {
	tr := New()
	for _, f := range []string{"a/b", "#", "+/x"} {
		mustAdd(t, tr, f)
	}
	tr.Reset()
	if tr.Len() != 0 || tr.nodeCount() != 1 || tr.Match("a/b") || len(tr.Filters()) != 0 {
		t.Fatalf("after Reset: Len %d, %d nodes, Filters %q", tr.Len(), tr.nodeCount(), tr.Filters())
	}
	if first := mustAdd(t, tr, "a/b"); !first {
		t.Fatal("Add after Reset: first = false")
	}
}

func TestZeroValue(t *testing.T) {
	var tr Tree
	if tr.Match("a") || tr.Len() != 0 || tr.Filters() == nil {
		t.Fatal("zero Tree is not empty")
	}
	if first, err := tr.Add("a/#"); !first || err != nil {
		t.Fatalf("Add = %v, %v", first, err)
	}
	if !tr.Match("a") {
		t.Fatal("Match(a) = false")
	}
}

func TestTooManyReferences(t *testing.T) {
	tr := New()
	for _, f := range []string{"a/b", "a/#", "#"} {
		mustAdd(t, tr, f)
	}
	// Reaching the limit through Add would take four billion calls.
	tr.root.hashRefs = math.MaxUint32
	tr.root.kids[0].hashRefs = math.MaxUint32
	tr.root.kids[0].kids[0].refs = math.MaxUint32
	for _, f := range []string{"a/b", "a/#", "#"} {
		if first, err := tr.Add(f); first || !errors.Is(err, ErrTooManyReferences) {
			t.Errorf("Add(%q) at the limit = %v, %v; want ErrTooManyReferences", f, first, err)
		}
		if got := tr.Count(f); got != math.MaxUint32 {
			t.Errorf("Count(%q) = %d after a refused Add", f, got)
		}
	}
}

// TestAddCopiesFilter checks that the tree keeps its own copy of a filter,
// not the caller's memory (which may be a slice of a reused buffer).
func TestAddCopiesFilter(t *testing.T) {
	tr := New()
	mustAdd(t, tr, "a/x")
	buf := []byte("a/b/c")
	mustAdd(t, tr, unsafe.String(&buf[0], len(buf)))
	copy(buf, "q/r/s")
	assertStrings(t, "Filters", tr.Filters(), []string{"a/b/c", "a/x"})
	if !tr.Match("a/b/c") {
		t.Error("Match(a/b/c) = false after the caller reused its buffer")
	}
}

// TestRemoveFreesNodes checks that a pruned node is not kept reachable, for
// instance from the spare capacity of its parent's child slice.
func TestRemoveFreesNodes(t *testing.T) {
	tr := New()
	for i := range 4 {
		mustAdd(t, tr, fmt.Sprintf("k/%d", i))
	}
	for _, f := range []string{"k/3", "k/0"} {
		w := func() weak.Pointer[node] {
			tr.mu.RLock()
			defer tr.mu.RUnlock()
			return weak.Make(tr.root.kids[0].child(f[2:]))
		}()
		if w.Value() == nil {
			t.Fatalf("no node for %q", f)
		}
		tr.Remove(f)
		runtime.GC()
		if w.Value() != nil {
			t.Errorf("the node of %q is still reachable after Remove", f)
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	tr := New()
	for i := range 100 {
		mustAdd(t, tr, fmt.Sprintf("site/%d/dev/%d/temp", i, i%7))
		mustAdd(t, tr, fmt.Sprintf("site/+/dev/%d/temp", i))
		mustAdd(t, tr, fmt.Sprintf("site/%d/#", i+1000))
	}
	for _, topic := range []string{"site/5/dev/5/temp", "site/99/dev/1/temp", "site/1005/x/y", "site/5/dev/5/hum", "other", "$SYS/x", "site//dev//temp"} {
		allocs := testing.AllocsPerRun(200, func() { tr.Match(topic) })
		if allocs != 0 {
			t.Errorf("Match(%q): %v allocs, want 0", topic, allocs)
		}
	}
}

// TestConcurrentMatch runs readers against a writer; run it with -race. The
// readers check what the writer never changes: a stable filter always
// matches, and no filter ever matches a topic outside the churned ones.
func TestConcurrentMatch(t *testing.T) {
	tr := New()
	mustAdd(t, tr, "stable/#")
	mustAdd(t, tr, "$SYS/stable")
	var churn []string
	for i := range 200 {
		churn = append(churn,
			fmt.Sprintf("churn/%d", i),
			fmt.Sprintf("churn/+/%d", i),
			fmt.Sprintf("churn/%d/#", i),
			fmt.Sprintf("+/churn%d", i))
	}
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		failures atomic.Int64
		reads    atomic.Int64
	)
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 5 {
			t.Errorf(format, args...)
		}
	}
	for r := range 3 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				reads.Add(1)
				if !tr.Match(fmt.Sprintf("stable/%d", i)) || !tr.Match("$SYS/stable") {
					fail("reader %d: stable filter did not match", r)
				}
				if tr.Match("never/x") || tr.Match("$SYS/never") {
					fail("reader %d: matched a topic no filter covers", r)
				}
				tr.Match(fmt.Sprintf("churn/%d/%d", i%200, i%13))
				if i%50 == 0 {
					if m := tr.MatchingFilters("stable/x"); !slices.Contains(m, "stable/#") {
						fail("reader %d: MatchingFilters(stable/x) = %q", r, m)
					}
					if f := tr.Filters(); !slices.Contains(f, "stable/#") {
						fail("reader %d: Filters lacks stable/#", r)
					}
				}
			}
		})
	}
	rng := rand.New(rand.NewPCG(3, 4))
	deadline := time.Now().Add(300 * time.Millisecond)
	for ops := 0; time.Now().Before(deadline) || ops < 2000; ops++ {
		f := churn[rng.IntN(len(churn))]
		if rng.IntN(2) == 0 {
			mustAdd(t, tr, f)
		} else {
			tr.Remove(f)
		}
	}
	stop.Store(true)
	wg.Wait()
	if reads.Load() == 0 {
		t.Fatal("readers never ran")
	}
	for _, f := range churn {
		for tr.Count(f) > 0 {
			tr.Remove(f)
		}
	}
	if tr.Len() != 2 {
		t.Fatalf("Len = %d, want 2", tr.Len())
	}
	if err := checkTree(tr); err != nil {
		t.Fatal(err)
	}
}

func mustAdd(t *testing.T, tr *Tree, f string) bool {
	t.Helper()
	first, err := tr.Add(f)
	if err != nil {
		t.Fatalf("Add(%q): %v", f, err)
	}
	return first
}

func assertStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if got == nil {
		t.Errorf("%s = nil, want a non-nil slice", what)
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// checkTree checks the structure: no empty node below the root (pruning),
// children where they belong, keys that are literal levels, and Len.
func checkTree(tr *Tree) error {
	tr.mu.RLock()
	defer tr.mu.RUnlock()
	if tr.root.refs != 0 {
		return fmt.Errorf("root has %d references", tr.root.refs)
	}
	distinct := 0
	var walk func(n *node, path string) error
	walk = func(n *node, path string) error {
		if n != &tr.root && n.empty() {
			return fmt.Errorf("node %q is empty but was not pruned", path)
		}
		if n.refs > 0 {
			distinct++
		}
		if n.hashRefs > 0 {
			distinct++
		}
		if n.index != nil && n.kids != nil {
			return fmt.Errorf("node %q has both a slice and a map of children", path)
		}
		if len(n.kids) > indexAbove {
			return fmt.Errorf("node %q has %d children in its slice", path, len(n.kids))
		}
		if n.index != nil && len(n.index) <= indexAbove/2 {
			return fmt.Errorf("node %q keeps a map of only %d children", path, len(n.index))
		}
		if n.plus != nil {
			if n.plus.key != "" {
				return fmt.Errorf("'+' child of %q has key %q", path, n.plus.key)
			}
			if err := walk(n.plus, path+"/+"); err != nil {
				return err
			}
		}
		seen := map[string]bool{}
		kids := slices.Clone(n.kids)
		for k, c := range n.index {
			if k != c.key {
				return fmt.Errorf("node %q: map key %q for child %q", path, k, c.key)
			}
			kids = append(kids, c)
		}
		for _, c := range kids {
			if strings.ContainsAny(c.key, "+#/") {
				return fmt.Errorf("node %q has child key %q", path, c.key)
			}
			if seen[c.key] {
				return fmt.Errorf("node %q has child %q twice", path, c.key)
			}
			seen[c.key] = true
			if err := walk(c, path+"/"+c.key); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(&tr.root, ""); err != nil {
		return err
	}
	if distinct != tr.n {
		return fmt.Errorf("Len is %d but %d filters are stored", tr.n, distinct)
	}
	return nil
}
