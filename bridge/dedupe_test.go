package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"mosquitto-ha/bridge/mqttconn"
	"mosquitto-ha/sysparse/mosqtest"
)

func dedupeConn(t testing.TB, b *mosqtest.Broker) *mqttconn.Conn {
	t.Helper()
	c, _, err := mqttconn.Dial(context.Background(), b.Addr, mqttconn.ConnectOptions{ClientID: "dd", Protocol: 4,
		CleanSession: true, Keepalive: 5 * time.Second}, func(*mqttconn.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func kinds(steps []dedupeStep) []int {
	var k []int
	for _, s := range steps {
		k = append(k, s.kind)
	}
	return k
}

func wantKinds(t *testing.T, what string, steps []dedupeStep, want ...int) {
	t.Helper()
	if got := kinds(steps); len(got) != len(want) || func() bool {
		for i := range got {
			if got[i] != want[i] {
				return true
			}
		}
		return false
	}() {
		t.Fatalf("%s: steps %v, want %v", what, got, want)
	}
}

// The window decides by identity and state, and what it wrote survives the agent (a new dedupe
// reading the same files, as after a kill -9: nothing closed).
func TestDedupeWindowDecisions(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	base := filepath.Join(t.TempDir(), "b2.json")
	log := slog.New(slog.DiscardHandler)
	d := newDedupe(base, 8, log)
	if err := d.load(); err != nil {
		t.Fatal(err)
	}
	c := dedupeConn(t, b)
	d.connected(c, true)
	src := relaySource{origin: "b1", epoch: 5}
	batch := []batchEntry{
		{Topic: "t", Payload: []byte("two"), QoS: 2, MID: 1},
		{Topic: "t", Payload: []byte("one"), QoS: 1, MID: 2},
		{Topic: "t", Payload: []byte("zero")},
	}
	acks := 0
	ack := func() { acks++ }
	first := d.admit(c, src, false, batch, ack)
	wantKinds(t, "first copy", first, dedupePublish, dedupePublish, dedupePlain)
	if first[0].lid == 0 || first[1].lid != 0 {
		t.Fatalf("local ids %d, %d: want one held for QoS 2 only", first[0].lid, first[1].lid)
	}
	if d.admit(dedupeConn(t, b), src, true, batch, ack) != nil {
		t.Fatal("a connection that is not the current one got steps")
	}
	// Repeats while the first copies are in flight wait for them.
	wantKinds(t, "repeat in flight", d.admit(c, src, true, batch, ack), dedupeWait, dedupeWait, dedupePlain)
	d.received(first[0].ref) // PUBREC of the QoS 2 republish
	d.finish(first[1].ref, nil)
	if acks != 1 {
		t.Fatalf("%d waiting repeats acknowledged, want the QoS 1 one", acks)
	}
	d.finish(first[0].ref, mqttconn.ErrConnLost) // PUBCOMP never came
	// A repeat of a QoS 2 relay the broker holds is released, not published; a QoS 1 one that
	// was acknowledged is dropped; the same identity not marked repeat is a new message.
	steps := d.admit(c, src, false, []batchEntry{{Topic: "t", Payload: []byte("two"), QoS: 2, MID: 1, Repeat: true},
		{Topic: "t", Payload: []byte("one"), QoS: 1, MID: 2, Repeat: true},
		{Topic: "t", Payload: []byte("one"), QoS: 1, MID: 3, Repeat: true},
		{Topic: "t", Payload: []byte("one"), QoS: 1, MID: 2}}, ack)
	wantKinds(t, "repeats", steps, dedupeRelease, dedupeDrop, dedupePublish, dedupePublish)
	if steps[0].lid != first[0].lid {
		t.Fatalf("released id %d, want %d", steps[0].lid, first[0].lid)
	}
	// Another epoch or origin is another identity.
	wantKinds(t, "other epoch", d.admit(c, relaySource{origin: "b1", epoch: 6}, true, batch[:1], ack), dedupePublish)
	wantKinds(t, "other origin", d.admit(c, relaySource{origin: "b3", epoch: 5}, true, batch[:1], ack), dedupePublish)
	// The agent is killed: nothing closed. A new one reads the window and resumes the session:
	// the QoS 2 republish the broker acknowledged is released at once.
	pending := d.admit(c, src, false, []batchEntry{{Topic: "u", Payload: []byte("x"), QoS: 2, MID: 9}}, ack)
	d2 := newDedupe(base, 8, log)
	if err := d2.load(); err != nil {
		t.Fatal(err)
	}
	c2 := dedupeConn(t, b)
	d2.connected(c2, true)
	if c2.Hold(pending[0].lid) {
		t.Fatalf("id %d of a republish the broker may hold is free on the resumed session", pending[0].lid)
	}
	wantKinds(t, "after restart", d2.admit(c2, src, true, []batchEntry{
		{Topic: "u", Payload: []byte("x"), QoS: 2, MID: 9},
		{Topic: "t", Payload: []byte("two"), QoS: 2, MID: 1},
		{Topic: "t", Payload: []byte("other payload"), QoS: 2, MID: 1},
	}, ack), dedupeResend, dedupeWait, dedupePublish)
	// A torn record counts as empty.
	f, err := os.OpenFile(base+".seen.6231", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, seenRecord)
	for i := 1; i <= 8; i++ {
		f.ReadAt(buf, int64(i*seenRecord))
		buf[10] ^= 0xff
		f.WriteAt(buf, int64(i*seenRecord))
	}
	f.Close()
	d3 := newDedupe(base, 8, log)
	if err := d3.load(); err != nil {
		t.Fatal(err)
	}
	c3 := dedupeConn(t, b)
	d3.connected(c3, true)
	wantKinds(t, "torn", d3.admit(c3, src, true, batch[:1], ack), dedupePublish)
	// A new local session holds nothing: a QoS 2 republish not acknowledged is forgotten.
	d3.connected(c3, false)
	wantKinds(t, "new session", d3.admit(c3, src, true, batch[:1], ack), dedupePublish)
}

// The window is bounded: past its size the oldest identities are forgotten (a repeat of one
// is republished, a duplicate but never a loss).
func TestDedupeWindowBound(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	d := newDedupe("", 4, slog.New(slog.DiscardHandler))
	c := dedupeConn(t, b)
	d.connected(c, true)
	src := relaySource{origin: "b1", epoch: 1}
	var refs []seenRef
	for mid := uint16(1); mid <= 5; mid++ {
		st := d.admit(c, src, false, []batchEntry{{Topic: "t", Payload: []byte("p"), QoS: 1, MID: mid}}, func() {})
		refs = append(refs, st[0].ref)
	}
	for _, r := range refs {
		d.finish(r, nil)
	}
	st := d.admit(c, src, true, []batchEntry{{Topic: "t", Payload: []byte("p"), QoS: 1, MID: 1},
		{Topic: "t", Payload: []byte("p"), QoS: 1, MID: 5}}, func() {})
	wantKinds(t, "evicted and kept", st, dedupePublish, dedupeDrop)
	if n := d.windows["b1"].index.len(); n > 4 {
		t.Fatalf("index holds %d identities, want at most 4", n)
	}
}

// BenchmarkDedupeAdmit is the receiving agent's cost per relay of recognising repeats: the
// hash, the window, one file write per batch of 256 (and for QoS 2 one per PUBREC), and the
// completion.
func BenchmarkDedupeAdmit(b *testing.B) {
	for _, qos := range []byte{1, 2} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			br := mosqtest.Start(b, mosqtest.Options{})
			d := newDedupe(filepath.Join(b.TempDir(), "s.json"), DefaultDedupeWindow, slog.New(slog.DiscardHandler))
			c, _, err := mqttconn.Dial(context.Background(), br.Addr, mqttconn.ConnectOptions{ClientID: "bench", Protocol: 4,
				CleanSession: true, Keepalive: 5 * time.Second}, func(*mqttconn.Message) {})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			d.connected(c, true)
			batch := make([]batchEntry, 256)
			payload := make([]byte, 100)
			for i := range batch {
				batch[i] = batchEntry{Topic: fmt.Sprintf("test_1/%d", i), Payload: payload, QoS: qos}
			}
			src := relaySource{origin: "b1", epoch: 1}
			b.ReportAllocs()
			b.SetBytes(int64(len(batch) * len(payload)))
			mid := 0
			for n := 0; n < b.N; n++ {
				for i := range batch {
					mid = mid%65535 + 1
					batch[i].MID = uint16(mid)
				}
				steps := d.admit(c, src, false, batch, func() {})
				for _, st := range steps {
					if qos == 2 {
						d.received(st.ref)
					}
					d.finish(st.ref, nil)
					if st.lid != 0 {
						c.Free(st.lid)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/relay")
		})
	}
}
