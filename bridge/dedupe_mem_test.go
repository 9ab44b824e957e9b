// dedupe_mem_test.go measures the memory a full dedupe window costs per remembered relay.

package bridge

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"

	"mosquitto-ha/sysparse/mosqtest"
)

// dedupeMaxEntryBytes is the promised memory per window entry, index included (options.go).
const dedupeMaxEntryBytes = 48

// A window filled to DefaultDedupeWindow distinct identities through admit and finish costs at
// most dedupeMaxEntryBytes per entry: one origin at the bound stays near 1.5 MiB.
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
