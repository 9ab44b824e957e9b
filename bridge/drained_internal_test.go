// Tests of the drained log and its filters (drained.go): no message that was drained is ever
// missing from a filter, false positives stay near the designed 0.02%, and a window the ring no
// longer covers yields no filter at all (the hand-over then forwards everything).

package bridge

import (
	"fmt"
	"testing"
	"time"
)

func TestDrainedFilterHoldsEveryDrainedMessage(t *testing.T) {
	for _, n := range []int{0, 1, 20, 500, 5000, 50000} {
		f := newDrainedFilter(n)
		for i := range n {
			f.add(messageHash(&message{Topic: "t/x", Payload: []byte(fmt.Sprint(i))}))
		}
		for i := range n {
			if !f.has(messageHash(&message{Topic: "t/x", Payload: []byte(fmt.Sprint(i))})) {
				t.Fatalf("n=%d: message %d drained but not in the filter: a hand-over would miss it", n, i)
			}
		}
		if n == 0 || n > 6000 {
			continue // empty; or over drainedMaxBytes, where false positives may grow (duplicates, never losses)
		}
		fp := 0
		const probes = 20000
		for i := range probes {
			if f.has(messageHash(&message{Topic: "t/y", Payload: []byte(fmt.Sprint(i))})) {
				fp++
			}
		}
		// Small filters do worse than the design (their probes, by double hashing modulo a
		// small size, collide more): about 0.3% at 20 messages, 0.05% at 500, 0.02% at 5,000
		// (`go test -v -run TestDrainedFilterHoldsEveryDrainedMessage ./bridge` prints them).
		limit := 0.001
		if n < 500 {
			limit = 0.01
		}
		rate := float64(fp) / probes
		t.Logf("n=%d: %d bytes, %.3f%% false positives", n, len(f), 100*rate) // the figures drained.go cites (go test -v)
		if rate > limit {
			t.Errorf("n=%d: %.2f%% false positives, designed for about 0.02%% (limit %.1f%%)", n, 100*rate, 100*limit)
		}
	}
}

func TestDrainedHashSeparatesTopicAndPayload(t *testing.T) {
	a := messageHash(&message{Topic: "a", Payload: []byte("bc")})
	b := messageHash(&message{Topic: "ab", Payload: []byte("c")})
	if a == b {
		t.Fatal("topic a payload bc hashes like topic ab payload c")
	}
}

func TestDrainedLogWindowAndWrap(t *testing.T) {
	l := &drainedLog{}
	m := func(i int) *message { return &message{Topic: "w", Payload: []byte(fmt.Sprint(i))} }
	for i := range 100 {
		l.note("c1", m(i))
	}
	l.note("c2", m(1000))
	now := time.Now()
	fs := l.filters(map[string]time.Time{"c1": now, "c3": now})
	if fs["c1"] == nil || fs["c3"] == nil {
		t.Fatalf("filters: %v, want one for c1 and an empty one for c3 (nothing drained: known)", fs)
	}
	for i := range 100 {
		if !fs["c1"].has(messageHash(m(i))) {
			t.Fatalf("message %d of c1 missing", i)
		}
	}
	if fs["c1"].has(messageHash(m(1000))) && fs["c3"].has(messageHash(m(1000))) {
		t.Error("c2's message in every filter")
	}
	// A connect long ago: outside the window, nothing drained since counts.
	if f := l.filters(map[string]time.Time{"c1": now.Add(-2 * drainedWindow)}); f["c1"] == nil || f["c1"].has(messageHash(m(5))) {
		t.Errorf("a connect 2 windows ago got %v: want an empty filter (drained after it)", f["c1"])
	}
	// The ring wraps within the window: no filter, so that nothing drained is missed.
	for i := range drainedLogSize {
		l.note("c4", m(i))
	}
	l.mu.Lock()
	for i := range l.at {
		l.at[i] = time.Now().UnixMilli() // all within the window
	}
	l.mu.Unlock()
	if f := l.filters(map[string]time.Time{"c1": time.Now()}); f["c1"] != nil {
		t.Errorf("the ring wrapped within the window but c1 got a filter of %d bytes", len(f["c1"]))
	}
}
