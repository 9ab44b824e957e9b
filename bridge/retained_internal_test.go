package bridge

import (
	"context"
	"log/slog"
	"testing"
)

// Only local retained writes that local() will stamp are noted: $SYS, control and relay
// topics (retained $SYS counters arrive every tick) never are, so nothing accumulates.
func TestRetainedArrivalsOnlyForWrites(t *testing.T) {
	topics := NewTopics("c", "$forward/")
	r := newRetainedState("b1", topics, newRetainReg(10, 0), nil, slog.New(slog.DiscardHandler))
	for _, topic := range []string{"$SYS/broker/uptime", "$HA/c/b2/status", "$forward-b/b2", "$forward-r/x"} {
		r.arrived(&message{Topic: topic, Retain: true, QoS: 1})
	}
	r.arrived(&message{Topic: "a", QoS: 1}) // not retained
	if len(r.arrival) != 0 {
		t.Fatalf("noted %d arrivals that are not local retained writes", len(r.arrival))
	}
	m := &message{Topic: "a", Retain: true}
	r.arrived(m)
	if s, relay := r.local(context.Background(), m); s == 0 || !relay || len(r.arrival) != 0 {
		t.Fatalf("stamp %x, %d arrivals left after local()", s, len(r.arrival))
	}
}

// The republishes remembered for the race rule are bounded: completed ones that no waiting
// local write can have raced are forgotten.
func TestRetainedInflightPurged(t *testing.T) {
	r := newRetainedState("b1", NewTopics("c", "$forward/"), newRetainReg(10, 0), nil, slog.New(slog.DiscardHandler))
	waiting := &message{Topic: "w", Retain: true}
	r.mu.Lock()
	r.inflight["done-before"] = &republished{doneSeq: 1}
	r.seq = 1
	r.mu.Unlock()
	r.arrived(waiting) // seq 2
	r.mu.Lock()
	r.inflight["done-after"] = &republished{doneSeq: 3}
	r.inflight["pending"] = &republished{}
	r.seq = 3
	r.purgeLocked()
	_, before := r.inflight["done-before"]
	_, after := r.inflight["done-after"]
	_, pending := r.inflight["pending"]
	r.mu.Unlock()
	if before || !after || !pending {
		t.Fatalf("kept done-before=%v done-after=%v pending=%v, want false true true", before, after, pending)
	}
}
