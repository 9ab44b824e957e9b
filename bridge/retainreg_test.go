package bridge

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The register file keeps the last write per topic across a reopen; a torn or corrupt line is
// skipped and the records after it still count.
func TestRetainRegSurvivesReopenAndSkipsTornLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.json.retained")
	r, err := openRetainReg(path, 100, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := stampOf(uint64(time.Now().UnixMilli()), 0)
	for _, w := range []struct {
		topic string
		stamp uint64
		hash  uint64
	}{{"a", now, 7}, {"b", now + 1, 8}, {"a", now + 2, 9}, {"gone", now + 3, 0}} {
		if err := r.set(w.topic, w.stamp, w.hash); err != nil {
			t.Fatal(err)
		}
		if err := r.persist(w.topic); err != nil {
			t.Fatal(err)
		}
	}
	r.close() // no compaction: what a kill -9 leaves
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("0badc0de {\"t\":\"b\",\"s\":1}\n{torn")
	f.Close()
	f, _ = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(appendRecord([]byte("\n"), []byte(`{"t":"c","s":5,"h":3}`)))
	f.Close()

	r, err = openRetainReg(path, 100, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]retainEntry{"a": {stamp: now + 2, hash: 9}, "b": {stamp: now + 1, hash: 8},
		"gone": {stamp: now + 3}, "c": {stamp: 5, hash: 3}} {
		if e, ok, held := r.get(topic); !ok || !held || e.stamp != want.stamp || e.hash != want.hash {
			t.Errorf("%s: %+v ok=%v held=%v, want %+v", topic, e, ok, held, want)
		}
	}
	if r.maxSeen != now+3 {
		t.Errorf("maxSeen %x, want %x", r.maxSeen, now+3)
	}
	r.newGeneration()
	if _, ok, held := r.get("a"); !ok || held {
		t.Errorf("after a new broker generation: ok=%v held=%v, want known but not held", ok, held)
	}
}

// The register is bounded: past max topics a new topic is refused (counted) until an expired
// tombstone makes room; a tombstone older than the ttl is forgotten on reopen.
func TestRetainRegBounds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r")
	r, err := openRetainReg(path, 2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	old := stampOf(uint64(time.Now().Add(-2*time.Hour).UnixMilli()), 0)
	now := stampOf(uint64(time.Now().UnixMilli()), 0)
	r.set("live", now, 5)
	r.set("old-tombstone", old, 0)
	if err := r.set("third", now, 6); err != nil {
		t.Fatalf("an expired tombstone should make room: %v", err)
	}
	if err := r.set("fourth", now, 6); err == nil {
		t.Fatal("a fourth topic fit in a register of 2")
	}
	if r.untracked != 1 {
		t.Errorf("untracked %d, want 1", r.untracked)
	}
	r.set("live", now+1, 0) // deleted now: a fresh tombstone stays
	r.persist("live")
	r.close()
	r, _ = openRetainReg(path, 2, time.Hour)
	if e, ok, _ := r.get("live"); !ok || !e.deleted() {
		t.Errorf("fresh tombstone: %+v ok=%v", e, ok)
	}
}

// Concurrent writes to one topic are ordered by stamp, then by value hash, the same on every
// node; a deletion has hash 0 whatever its QoS.
func TestRetainOrder(t *testing.T) {
	e := retainEntry{stamp: 10, hash: 50}
	for _, c := range []struct {
		stamp, hash uint64
		newer       bool
	}{{11, 1, true}, {9, 99, false}, {10, 51, true}, {10, 50, false}, {10, 49, false}} {
		if got := newerThan(c.stamp, c.hash, e); got != c.newer {
			t.Errorf("(%d,%d) newer than (10,50): %v", c.stamp, c.hash, got)
		}
	}
	if valueHash(0, nil) != 0 || valueHash(2, []byte{}) != 0 || valueHash(1, []byte("x")) == 0 {
		t.Error("deletions must hash to 0, values never")
	}
	if valueHash(0, []byte("x")) == valueHash(1, []byte("x")) {
		t.Error("the QoS is part of a retained value")
	}
}

// A line longer than any record (a corrupt file) is skipped and the records after it still
// load; the load keeps the register's bound (counted as untracked), and the rewrite after it
// keeps what was loaded.
func TestRetainRegLoadSkipsOverlongLineAndKeepsBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.json.retained")
	var data []byte
	data = appendRecord(data, []byte(`{"t":"a","s":5,"h":1}`))
	data = append(data, make([]byte, 2<<20)...) // 2 MiB of zeros, then the newline
	data = append(data, '\n')
	for _, rec := range []string{`{"t":"b","s":6,"h":2}`, `{"t":"c","s":7,"h":3}`, `{"t":"d","s":8,"h":4}`, `{"t":"a","s":9,"h":5}`} {
		data = appendRecord(data, []byte(rec))
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := openRetainReg(path, 3, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	check := func(r *retainReg) {
		t.Helper()
		for topic, want := range map[string]retainEntry{"a": {stamp: 9, hash: 5}, "b": {stamp: 6, hash: 2}, "c": {stamp: 7, hash: 3}} {
			if e, ok, _ := r.get(topic); !ok || e.stamp != want.stamp || e.hash != want.hash {
				t.Errorf("%s: %+v ok=%v, want %+v", topic, e, ok, want)
			}
		}
		if _, ok, _ := r.get("d"); ok || r.size() != 3 {
			t.Errorf("a register of 3 loaded %d topics (d present: %v)", r.size(), ok)
		}
	}
	check(r)
	if r.untracked != 1 {
		t.Errorf("untracked %d, want 1 (d)", r.untracked)
	}
	r.close()
	r, err = openRetainReg(path, 3, time.Hour) // the rewrite kept them
	if err != nil {
		t.Fatal(err)
	}
	check(r)
	r.close()
}
