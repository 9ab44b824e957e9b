package bridge

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"mosquitto-ha/bridge/mqttconn"
	"mosquitto-ha/sysparse/mosqtest"
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

// The verifier, against a real broker: when the broker holds the value the agent republished
// last (the loser) while the register holds a newer local write, it publishes the newer one
// again; when the broker holds anything else (a write the agent has yet to see), it leaves it.
func TestRetainedVerifierRepairsOnlyTheLoser(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	conn := connSettings{keepalive: 10 * time.Second}
	topics := NewTopics("c", "$forward/")
	link := &mqttconn.Link{Addr: b.Addr, Options: conn.options(topics.LocalID("b1"), 0x84, true, nil), Log: log,
		OnPublish: func(m *message) { m.Ack() },
		Up:        func(context.Context, *mqttconn.Conn, bool) error { return nil }}
	go link.Run(ctx)
	in := &relayIn{local: link, qos1: make(chan struct{}, 8), qos2: make(chan struct{}, 8), log: log}
	r := newRetainedState("b1", topics, newRetainReg(100, time.Hour), in, log)
	r.dialer = localDialer{addr: b.Addr, conn: conn, clientID: topics.ReaderID("b1", "verify")}
	go r.verifyLoop(ctx)
	for link.Conn() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	pub := func(topic, v string) {
		done := make(chan error, 1)
		link.Conn().Publish(topic, 1, true, []byte(v), func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	check := func(topic, loser, winner string) {
		s := r.clock.now()
		r.reg.set(topic, s, valueHash(1, []byte(winner)))
		r.verify(verification{topic: topic, loser: valueHash(1, []byte(loser)), stamp: s,
			hash: valueHash(1, []byte(winner)), qos: 1, payload: []byte(winner)})
	}
	pub("t/loser", "v1") // the broker holds the agent's older republish
	pub("t/other", "v3") // the broker holds a write the agent has not seen yet
	check("t/loser", "v1", "v2")
	check("t/other", "v1", "v2")
	check("t/deleted", "", "v2") // the agent republished a deletion: nothing stored
	deadline := time.Now().Add(5 * time.Second)
	for r.verified.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if v, rp := r.verified.Load(), r.repaired.Load(); v != 3 || rp != 2 {
		t.Fatalf("verified %d, repaired %d; want 3 and 2", v, rp)
	}
	rd, err := r.dialReader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]string{"t/loser": "v2", "t/other": "v3", "t/deleted": "v2"} {
		h, ok, err := rd.read(ctx, topic)
		if err != nil || !ok || h != valueHash(1, []byte(want)) {
			t.Errorf("%s: stored hash %x (present %v, %v), want %q", topic, h, ok, err, want)
		}
	}
}
