package bridge

import (
	"context"
	"testing"
)

// Over its bounds the queue keeps every relay the local broker waits for and drops only the
// ones nobody waits for, oldest first (issue 10, finding 2).
func TestRelayQueueNeverDropsUnsettled(t *testing.T) {
	q := newRelayQueue(4, 100)
	waited := func(n int) *relay {
		g := &ackGroup{msg: &message{QoS: 1}}
		g.left.Store(1)
		return &relay{topic: "w", payload: make([]byte, n), qos: 1, group: g}
	}
	free := func(n int) *relay { return &relay{topic: "f", payload: make([]byte, n)} }
	for i := 0; i < 3; i++ {
		if d := q.push(waited(60)); d != 0 {
			t.Fatalf("dropped %d relays the broker waits for", d)
		}
	}
	if q.Len() != 3 || q.bytes != 180 {
		t.Fatalf("len %d bytes %d, want 3 and 180 (over the byte bound, kept)", q.Len(), q.bytes)
	}
	if d := q.push(free(10)); d != 1 || q.Len() != 3 {
		t.Errorf("a QoS 0 relay pushed onto a full queue of waited relays: dropped %d, len %d", d, q.Len())
	}
	// Parked: everything is settled, so the oldest go first again.
	q.setParked(true)
	if d := q.push(free(10)); d == 0 {
		t.Error("a parked queue over its bounds dropped nothing")
	}
	q.setParked(false)

	// A QoS 0 relay between waited ones is the one dropped; the order of the rest is kept.
	q = newRelayQueue(3, 1000)
	a, b, c := waited(1), free(1), waited(1)
	q.push(a)
	q.push(b)
	q.push(c)
	d := waited(1)
	if n := q.push(d); n != 1 {
		t.Fatalf("dropped %d, want the QoS 0 relay", n)
	}
	got, _ := q.popBatch(context.Background(), nil, 10, 1<<20)
	if len(got) != 3 || got[0] != a || got[1] != c || got[2] != d {
		t.Errorf("order after the drop: %v", got)
	}
}
