package topictree

import (
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The reference: a matcher and validators written the obvious way, with
// strings.Split, straight from MQTT 3.1.1 section 4.7. They share no code with
// the tree.

func refMatch(filter, topic string) bool {
	f := strings.Split(filter, "/")
	tp := strings.Split(topic, "/")
	// [MQTT-4.7.2-1]
	if strings.HasPrefix(topic, "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, level := range f {
		if level == "#" {
			return true // also when the topic has no level i: "a/#" matches "a"
		}
		if i >= len(tp) {
			return false
		}
		if level != "+" && level != tp[i] {
			return false
		}
	}
	return len(f) == len(tp)
}

func refValidString(s string) bool {
	return len(s) >= 1 && len(s) <= 65535 && !strings.ContainsRune(s, 0) && utf8.ValidString(s)
}

func refValidFilter(filter string) bool {
	if !refValidString(filter) {
		return false
	}
	levels := strings.Split(filter, "/")
	for i, level := range levels {
		if strings.Contains(level, "#") && (level != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(level, "+") && level != "+" {
			return false
		}
	}
	return true
}

func refValidTopic(topic string) bool {
	return refValidString(topic) && !strings.ContainsAny(topic, "+#")
}

// refMatching returns the filters of model that match topic, sorted.
func refMatching(model map[string]int, topic string) []string {
	out := []string{}
	for f := range model {
		if refMatch(f, topic) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// compareWithModel checks tr against model (filter -> references): the
// whole set, and every valid topic in topics.
func compareWithModel(t *testing.T, tr *Tree, model map[string]int, topics []string) {
	t.Helper()
	compareSet(t, tr, model)
	for _, topic := range topics {
		compareTopic(t, tr, model, topic)
	}
}

// compareSet checks Len, Filters and Count against model.
func compareSet(t *testing.T, tr *Tree, model map[string]int) {
	t.Helper()
	if tr.Len() != len(model) {
		t.Fatalf("Len = %d, want %d", tr.Len(), len(model))
	}
	if got, want := tr.Filters(), slices.Sorted(maps.Keys(model)); !slices.Equal(got, want) {
		t.Fatalf("Filters = %q, want %q", got, want)
	}
	for f, n := range model {
		if got := tr.Count(f); got != n {
			t.Fatalf("Count(%q) = %d, want %d", f, got, n)
		}
	}
}

// compareTopic checks Match and MatchingFilters for topic against model, if
// topic is valid.
func compareTopic(t *testing.T, tr *Tree, model map[string]int, topic string) {
	t.Helper()
	if !refValidTopic(topic) {
		return
	}
	want := refMatching(model, topic)
	if got := tr.Match(topic); got != (len(want) > 0) {
		t.Fatalf("Match(%q) = %v, want %v (matching filters %q)", topic, got, !got, want)
	}
	if got := tr.MatchingFilters(topic); !slices.Equal(got, want) {
		t.Fatalf("MatchingFilters(%q) = %q, want %q", topic, got, want)
	}
}

// Small alphabets, so that random filters and topics meet often.
var (
	filterLevels = []string{"", "$SYS", "$", "a", "b", "+", "#"}
	topicLevels  = []string{"", "$SYS", "$", "a", "b", "ab"}
)

// allTopics returns every topic of 1 to depth levels from topicLevels.
func allTopics(depth int) []string {
	var out []string
	prev := []string{""}
	for d := 1; d <= depth; d++ {
		var next []string
		for _, p := range prev {
			for _, l := range topicLevels {
				if d == 1 {
					next = append(next, l)
				} else {
					next = append(next, p+"/"+l)
				}
			}
		}
		out = append(out, next...)
		prev = next
	}
	return out
}

func randomName(rng *rand.Rand, alphabet []string) string {
	levels := make([]string, 1+rng.IntN(4))
	for i := range levels {
		levels[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return strings.Join(levels, "/")
}

// TestAgainstReference runs random Add/Remove sequences and compares the tree
// with the reference after every step.
func TestAgainstReference(t *testing.T) {
	everyTopic := allTopics(4)
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		tr := New()
		model := map[string]int{}
		for step := range 1500 {
			f := randomName(rng, filterLevels)
			if rng.IntN(5) < 2 {
				if len(model) > 0 && rng.IntN(4) > 0 {
					keys := slices.Sorted(maps.Keys(model))
					f = keys[rng.IntN(len(keys))]
				}
				last := tr.Remove(f)
				wantLast := model[f] == 1
				if model[f] > 0 {
					model[f]--
					if model[f] == 0 {
						delete(model, f)
					}
				}
				if last != wantLast {
					t.Fatalf("seed %d step %d: Remove(%q) = %v, want %v", seed, step, f, last, wantLast)
				}
			} else {
				first, err := tr.Add(f)
				if valid := refValidFilter(f); valid != (err == nil) || (!valid && !errors.Is(err, ErrInvalidFilter)) {
					t.Fatalf("seed %d step %d: Add(%q) error %v, reference says valid=%v", seed, step, f, err, valid)
				}
				if err == nil {
					if first != (model[f] == 0) {
						t.Fatalf("seed %d step %d: Add(%q) first = %v with %d references before", seed, step, f, first, model[f])
					}
					model[f]++
				}
			}
			topics := make([]string, 8)
			for i := range topics {
				topics[i] = randomName(rng, topicLevels)
			}
			if step%300 == 0 {
				topics = everyTopic
			}
			compareWithModel(t, tr, model, topics)
		}
		compareWithModel(t, tr, model, everyTopic)
		if err := checkTree(tr); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for f, n := range model {
			for i := range n {
				if last := tr.Remove(f); last != (i == n-1) {
					t.Fatalf("seed %d: draining Remove(%q) #%d = %v", seed, f, i, last)
				}
			}
		}
		if tr.Len() != 0 || tr.nodeCount() != 1 {
			t.Fatalf("seed %d: drained tree has Len %d and %d nodes", seed, tr.Len(), tr.nodeCount())
		}
	}
}

// FuzzTree decodes up to 100 operations from the input and checks each
// against the reference, and the whole tree at the end. Operations (first
// byte mod 5): 0, 1 add and 2 remove a filter from the small alphabet, 3
// match a topic from it, 4 take up to 15 raw bytes as a filter and a topic
// (validation, and matching of whatever it is). Each step checks only what it
// touched, so that an execution stays cheap.
func FuzzTree(f *testing.F) {
	f.Add([]byte{0, 1, 3, 3, 1, 2})
	f.Add([]byte{0, 2, 3, 6, 3, 2, 1, 2, 2, 3, 6})
	f.Add([]byte("\x04\x05a/#/b\x04\x03a/#\x03\x01\x03"))
	f.Add([]byte("\x04\x05$SYS/\x00\x01\x05\x02\x01\x05"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := New()
		model := map[string]int{}
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		name := func(alphabet []string) string {
			levels := make([]string, 1+int(next())%4)
			for i := range levels {
				levels[i] = alphabet[int(next())%len(alphabet)]
			}
			return strings.Join(levels, "/")
		}
		add := func(f string) {
			first, err := tr.Add(f)
			if valid := refValidFilter(f); valid != (err == nil) || (!valid && !errors.Is(err, ErrInvalidFilter)) {
				t.Fatalf("Add(%q) error %v, reference says valid=%v", f, err, valid)
			}
			if err == nil {
				if first != (model[f] == 0) {
					t.Fatalf("Add(%q) first = %v with %d references before", f, first, model[f])
				}
				model[f]++
			}
			if got := tr.Count(f); got != model[f] {
				t.Fatalf("Count(%q) = %d after Add, want %d", f, got, model[f])
			}
		}
		for ops := 0; len(data) > 0 && ops < 100; ops++ {
			switch next() % 5 {
			case 0, 1:
				add(name(filterLevels))
			case 2:
				f := name(filterLevels)
				wantLast := model[f] == 1
				if last := tr.Remove(f); last != wantLast {
					t.Fatalf("Remove(%q) = %v, want %v", f, last, wantLast)
				}
				if model[f] > 0 {
					if model[f]--; model[f] == 0 {
						delete(model, f)
					}
				}
				if got := tr.Count(f); got != model[f] {
					t.Fatalf("Count(%q) = %d after Remove, want %d", f, got, model[f])
				}
			case 3:
				compareTopic(t, tr, model, name(topicLevels))
			case 4:
				n := int(next()) % 16
				n = min(n, len(data))
				raw := string(data[:n])
				data = data[n:]
				if (ValidateTopic(raw) == nil) != refValidTopic(raw) {
					t.Fatalf("ValidateTopic(%q) = %v, reference says valid=%v", raw, ValidateTopic(raw), refValidTopic(raw))
				}
				if err := ValidateTopic(raw); err != nil && !errors.Is(err, ErrInvalidTopic) {
					t.Fatalf("ValidateTopic(%q) = %v, not ErrInvalidTopic", raw, err)
				}
				add(raw)
				tr.Match(raw) // whatever it is, it must not panic
				tr.MatchingFilters(raw)
				compareTopic(t, tr, model, raw)
			}
			if tr.Len() != len(model) {
				t.Fatalf("Len = %d, want %d", tr.Len(), len(model))
			}
		}
		compareWithModel(t, tr, model, allTopics(2))
		if err := checkTree(tr); err != nil {
			t.Fatal(err)
		}
		for f, n := range model {
			for range n {
				tr.Remove(f)
			}
		}
		if tr.Len() != 0 || tr.nodeCount() != 1 {
			t.Fatalf("drained tree has Len %d and %d nodes", tr.Len(), tr.nodeCount())
		}
	})
}
