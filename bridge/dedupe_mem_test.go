// dedupe_mem_test.go measures the memory a full dedupe window costs per remembered relay.

package bridge

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"testing"

	"mosquitto-ha/sysparse/mosqtest"
)

// dedupeMaxEntryBytes is the promised memory per window entry, index included (options.go).
const dedupeMaxEntryBytes = 48

// A window filled to DefaultDedupeWindow distinct identities through admit and finish costs at
// most dedupeMaxEntryBytes per entry: one origin at the bound stays within 1.5 MiB.
func TestDedupeWindowMemory(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	c := dedupeConn(t, b)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	d := newDedupe("", DefaultDedupeWindow, slog.New(slog.DiscardHandler))
	d.connected(c, true)
	src := relaySource{origin: "b1", epoch: 1}
	batch := make([]batchEntry, 256)
	payload := []byte("payload")
	for i := range batch {
		batch[i] = batchEntry{Topic: fmt.Sprintf("t/%d", i), Payload: payload, QoS: 1}
	}
	ack := func() {}
	mid := 0
	for n := 0; n < DefaultDedupeWindow/len(batch); n++ {
		for i := range batch {
			mid++
			batch[i].MID = uint16(mid)
		}
		for _, st := range d.admit(c, src, false, batch, ack) {
			if st.kind != dedupePublish {
				t.Fatalf("relay %d: step %d, want a publish", mid, st.kind)
			}
			d.finish(st.ref, nil)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	w := d.windows["b1"]
	if len(w.slots) != DefaultDedupeWindow {
		t.Fatalf("window holds %d entries, want %d", len(w.slots), DefaultDedupeWindow)
	}
	per := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / DefaultDedupeWindow
	t.Logf("%.1f bytes per entry, %.2f MiB per origin at the bound of %d", per,
		per*DefaultDedupeWindow/(1<<20), DefaultDedupeWindow)
	// Every identity is still recognised: a repeat of the first batch is dropped.
	for i := range batch {
		batch[i].MID = uint16(i + 1)
	}
	for i, st := range d.admit(c, src, true, batch, ack) {
		if st.kind != dedupeDrop {
			t.Fatalf("repeat %d: step %d, want a drop", i, st.kind)
		}
	}
	runtime.KeepAlive(d)
	if per > dedupeMaxEntryBytes {
		t.Fatalf("%.1f bytes per window entry, want at most %d", per, dedupeMaxEntryBytes)
	}
}

// The index finds what a map would, through puts, replacements and removals that wrap around
// its table (few cells, colliding identities).
func TestDedupeIndexMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	slots := make([]seenEntry, 64)
	var x seenIndex
	x.reset(len(slots))
	want := map[relayID]int32{}
	for step := 0; step < 200000; step++ {
		i := int32(rng.IntN(len(slots)))
		old := slots[i]
		if old.seq != 0 {
			x.remove(slots, old.id, i)
			if want[old.id] == i {
				delete(want, old.id)
			}
		}
		id := relayID{epoch: uint64(rng.IntN(2)), mid: uint16(rng.IntN(40)), hash: 7}
		slots[i] = seenEntry{id: id, seq: uint32(step + 1)}
		x.put(slots, id, i)
		want[id] = i
		if x.len() != len(want) {
			t.Fatalf("step %d: %d identities, want %d", step, x.len(), len(want))
		}
		for k := 0; k < 3; k++ {
			q := relayID{epoch: uint64(rng.IntN(2)), mid: uint16(rng.IntN(40)), hash: 7}
			got, ok := x.find(slots, q)
			w, wok := want[q]
			if ok != wok || got != w {
				t.Fatalf("step %d: %v at %d %v, want %d %v", step, q, got, ok, w, wok)
			}
		}
	}
}

// BenchmarkDedupeWindow is the window's own cost per relay, without the file and the broker
// (BenchmarkDedupeAdmit has both): admit and finish of QoS 1 relays into a full window of
// DefaultDedupeWindow, then a repeat of each, dropped.
func BenchmarkDedupeWindow(b *testing.B) {
	br := mosqtest.Start(b, mosqtest.Options{})
	c := dedupeConn(b, br)
	d := newDedupe("", DefaultDedupeWindow, slog.New(slog.DiscardHandler))
	d.connected(c, true)
	src := relaySource{origin: "b1", epoch: 1}
	batch := make([]batchEntry, 256)
	payload := make([]byte, 100)
	for i := range batch {
		batch[i] = batchEntry{Topic: fmt.Sprintf("test_1/%d", i), Payload: payload, QoS: 1}
	}
	ack := func() {}
	mid := 0
	b.ReportAllocs()
	for n := 0; n < b.N; n++ {
		for i := range batch {
			mid = mid%65535 + 1
			batch[i].MID = uint16(mid)
		}
		for _, st := range d.admit(c, src, false, batch, ack) {
			d.finish(st.ref, nil)
		}
		for _, st := range d.admit(c, src, true, batch, ack) {
			if st.kind != dedupeDrop {
				b.Fatalf("repeat: step %d, want a drop", st.kind)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N*len(batch)), "ns/relay")
}
