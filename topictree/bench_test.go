package topictree

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// The benchmark mix, by filter number i: 7 in 10 literal
// ("site/<i/100>/dev/<i%100>/temp"), 2 in 10 with '+'
// ("site/+/dev/<i>/temp"), 1 in 10 ending in '#' ("site/<i>/#"). All are
// distinct, so a tree of n filters has Len n.
func benchFilter(i int) string {
	b := make([]byte, 0, 32)
	b = append(b, "site/"...)
	switch i % 10 {
	case 7, 8:
		b = append(b, "+/dev/"...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, "/temp"...)
	case 9:
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, "/#"...)
	default:
		b = strconv.AppendInt(b, int64(i/100), 10)
		b = append(b, "/dev/"...)
		b = strconv.AppendInt(b, int64(i%100), 10)
		b = append(b, "/temp"...)
	}
	return string(b)
}

var benchSizes = []int{1_000, 100_000, 1_000_000}

type benchSet struct {
	filters []string
	tree    *Tree
	hit     []string // topics that some filter matches
	miss    []string // topics that none matches, after a walk as deep as a hit
	extra   []string // filters not in the tree, same mix, for Add and Remove
}

var (
	benchMu   sync.Mutex
	benchSets = map[int]*benchSet{}
)

// getBenchSet builds the tree of n filters once and shares it between
// benchmarks, which leave it as they found it.
func getBenchSet(b *testing.B, n int) *benchSet {
	benchMu.Lock()
	defer benchMu.Unlock()
	if s, ok := benchSets[n]; ok {
		return s
	}
	s := &benchSet{filters: make([]string, n), tree: New()}
	for i := range s.filters {
		s.filters[i] = benchFilter(i)
	}
	for _, f := range s.filters {
		if _, err := s.tree.Add(f); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	for len(s.hit) < 1024 {
		i := rng.IntN(n)
		switch i % 10 {
		case 7, 8: // through '+' only: no site has this many devices
			s.hit = append(s.hit, fmt.Sprintf("site/%d/dev/%d/temp", rng.IntN(n/100+1), i))
		case 9: // through '#'
			s.hit = append(s.hit, fmt.Sprintf("site/%d/status/%d", i, rng.IntN(10)))
		default: // the literal filter itself
			s.hit = append(s.hit, s.filters[i])
		}
	}
	for len(s.miss) < 1024 {
		// A literal site and device, walked down both the literal and the '+'
		// branch, and a last level that no filter has. Sites whose number
		// ends in 9 are skipped: "site/<i>/#" exists for those.
		site := rng.IntN(n/100 + 1)
		if site%10 == 9 {
			continue
		}
		s.miss = append(s.miss, fmt.Sprintf("site/%d/dev/%d/humidity", site, rng.IntN(100)))
	}
	for i := range 1024 {
		s.extra = append(s.extra, benchFilter(n+i))
	}
	for _, topic := range s.hit {
		if !s.tree.Match(topic) {
			b.Fatalf("hit topic %q does not match", topic)
		}
	}
	for _, topic := range s.miss {
		if s.tree.Match(topic) {
			b.Fatalf("miss topic %q matches %q", topic, s.tree.MatchingFilters(topic))
		}
	}
	benchSets[n] = s
	return s
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range benchSizes {
		s := getBenchSet(b, n)
		for _, kind := range []struct {
			name   string
			topics []string
			want   bool
		}{{"hit", s.hit, true}, {"miss", s.miss, false}} {
			b.Run(fmt.Sprintf("filters=%d/%s", n, kind.name), func(b *testing.B) {
				b.ReportAllocs()
				topics := kind.topics
				i := 0
				for b.Loop() {
					if s.tree.Match(topics[i&1023]) != kind.want {
						b.Fatalf("Match(%q) != %v", topics[i&1023], kind.want)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkAdd adds new filters to a tree of n: 1024 at a time, removed
// again with the timer stopped.
func BenchmarkAdd(b *testing.B) {
	for _, n := range benchSizes {
		s := getBenchSet(b, n)
		b.Run(fmt.Sprintf("filters=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if first, err := s.tree.Add(s.extra[i]); !first || err != nil {
					b.Fatalf("Add(%q) = %v, %v", s.extra[i], first, err)
				}
				if i++; i == len(s.extra) {
					b.StopTimer()
					for _, f := range s.extra {
						s.tree.Remove(f)
					}
					b.StartTimer()
					i = 0
				}
			}
			b.StopTimer()
			for _, f := range s.extra[:i] {
				s.tree.Remove(f)
			}
			if s.tree.Len() != n {
				b.Fatalf("Len = %d after the benchmark, want %d", s.tree.Len(), n)
			}
		})
	}
}

// BenchmarkRemove removes filters from a tree of n: 1024 at a time, added
// beforehand with the timer stopped.
func BenchmarkRemove(b *testing.B) {
	for _, n := range benchSizes {
		s := getBenchSet(b, n)
		b.Run(fmt.Sprintf("filters=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := len(s.extra)
			for b.Loop() {
				if i == len(s.extra) {
					b.StopTimer()
					for _, f := range s.extra {
						s.tree.Add(f)
					}
					b.StartTimer()
					i = 0
				}
				if !s.tree.Remove(s.extra[i]) {
					b.Fatalf("Remove(%q) = false", s.extra[i])
				}
				i++
			}
			b.StopTimer()
			for _, f := range s.extra[i:] {
				s.tree.Remove(f)
			}
			if s.tree.Len() != n {
				b.Fatalf("Len = %d after the benchmark, want %d", s.tree.Len(), n)
			}
		})
	}
}

// BenchmarkBuild builds a tree of n filters from nothing. An op is one whole
// build, so it also reports ns/add and allocs/add. B/filter is the heap the
// tree holds per filter, measured once per size with runtime.MemStats after a
// GC, the filter strings themselves not included.
func BenchmarkBuild(b *testing.B) {
	// Drop the trees the other benchmarks share, so that the GC work here
	// is for the tree being built only.
	benchMu.Lock()
	clear(benchSets)
	benchMu.Unlock()
	for _, n := range benchSizes {
		filters := make([]string, n)
		for i := range filters {
			filters[i] = benchFilter(i)
		}
		build := func() *Tree {
			tr := New()
			for _, f := range filters {
				tr.Add(f)
			}
			return tr
		}
		b.Run(fmt.Sprintf("filters=%d", n), func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			tr := build()
			runtime.GC()
			runtime.ReadMemStats(&after)
			if tr.Len() != n {
				b.Fatalf("Len = %d, want %d", tr.Len(), n)
			}
			runtime.KeepAlive(tr)
			tr = nil
			perFilter := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
			allocs := float64(after.Mallocs-before.Mallocs) / float64(n)

			b.ReportAllocs()
			for b.Loop() {
				build()
			}
			b.ReportMetric(perFilter, "B/filter")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/add")
			b.ReportMetric(allocs, "allocs/add")
		})
	}
}
