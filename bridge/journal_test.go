package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mosquitto-ha/sysparse"
)

func events() []sysparse.Event {
	return []sysparse.Event{
		{Kind: sysparse.Connected, ClientID: "p", CleanSession: false},
		{Kind: sysparse.Subscribed, ClientID: "p", Filter: "a/#", QoS: 1},
		{Kind: sysparse.Connected, ClientID: "c", CleanSession: true},
		{Kind: sysparse.Subscribed, ClientID: "c", Filter: "$share/g/b/+", QoS: 0},
		{Kind: sysparse.Subscribed, ClientID: "c", Filter: "x"},
		{Kind: sysparse.Unsubscribed, ClientID: "c", Filter: "x"},
		{Kind: sysparse.Subscribed, ClientID: "c", Filter: "x"},
		{Kind: sysparse.Disconnected, ClientID: "p"},
		{Kind: sysparse.Subscribed, ClientID: "amb", Readings: []sysparse.Reading{{ClientID: "amb", Filter: "1 y"}, {ClientID: "amb 1", Filter: "y"}}},
		{Kind: sysparse.Connected, ClientID: "c", CleanSession: true}, // a clean reconnect ends c's session
		{Kind: sysparse.Subscribed, ClientID: "c", Filter: "z"},
	}
}

func modelState(l *localInterest) []string {
	out := l.tree.Filters()
	for _, s := range l.shareList() {
		out = append(out, s.String())
	}
	return out
}

// The journal restores the same model, and replaying it over a base that already includes part
// of it changes nothing.
func TestJournalReplay(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "n.json")
	live := newLocalInterest(func(string) bool { return false })
	j, err := openJournal(state)
	if err != nil {
		t.Fatal(err)
	}
	evs := events()
	for i, ev := range evs {
		live.Apply(ev)
		j.add(journalEntry{Event: &evs[i]})
		if i == 4 { // a base in the middle, the journal keeps everything
			if err := live.save(state, "n"); err != nil {
				t.Fatal(err)
			}
		}
	}
	j.add(journalEntry{Op: "malformed"})
	live.MalformedSubscribe()
	if err := j.flush(); err != nil {
		t.Fatal(err)
	}
	j.close()

	restored := newLocalInterest(func(string) bool { return false })
	if _, err := restored.restore(state, "n"); err != nil {
		t.Fatal(err)
	}
	n, skipped, err := replayJournal(state+".journal", restored)
	if err != nil || n != len(evs)+1 || skipped != 0 {
		t.Fatalf("replayed %d entries, skipped %d, err %v", n, skipped, err)
	}
	if got, want := modelState(restored), modelState(live); !reflect.DeepEqual(got, want) {
		t.Errorf("restored filters %v, want %v", got, want)
	}
	if !reflect.DeepEqual(restored.clients["c"].Subs, map[string]byte{"z": 0}) {
		t.Errorf("client c after a clean reconnect: %v", restored.clients["c"].Subs)
	}

	// A crash in the middle of a write leaves a cut last line: the replay stops there.
	f, _ := os.OpenFile(state+".journal", os.O_APPEND|os.O_WRONLY, 0o600)
	f.WriteString(`{"ev":{"Kind":2,"ClientID":"c","Fil`)
	f.Close()
	again := newLocalInterest(func(string) bool { return false })
	if _, _, err := replayJournal(state+".journal", again); err != nil {
		t.Errorf("a cut last line must not fail the replay: %v", err)
	}
}

// A fresh install has no state directory yet: the agent makes it.
func TestJournalCreatesStateDirectory(t *testing.T) {
	state := filepath.Join(t.TempDir(), "not", "yet", "there", "n.json")
	j, err := openJournal(state)
	if err != nil {
		t.Fatalf("openJournal in a missing directory: %v", err)
	}
	j.close()
}

// A torn record in the middle of the journal (a write cut short, then the next records) costs
// that record only: replay skips it and applies the rest (issue 10, finding 3).
func TestJournalSkipsTornRecord(t *testing.T) {
	state := filepath.Join(t.TempDir(), "n.json")
	j, err := openJournal(state)
	if err != nil {
		t.Fatal(err)
	}
	sub := func(id, f string) journalEntry {
		return journalEntry{Event: &sysparse.Event{Kind: sysparse.Subscribed, ClientID: id, Filter: f}}
	}
	j.add(sub("a", "one"))
	if err := j.flush(); err != nil {
		t.Fatal(err)
	}
	// A fragment of a record, glued to the next one as a retried write used to leave it,
	// and a record with a flipped byte.
	rec := appendRecord(nil, []byte(`{"ev":{"Kind":2,"ClientID":"a","Filter":"two"}}`))
	bad := append([]byte(nil), rec...)
	bad[20] ^= 1
	f, _ := os.OpenFile(state+".journal", os.O_APPEND|os.O_WRONLY, 0o600)
	f.Write(rec[:15])
	f.Write(bad)
	f.Close()
	j.size += int64(15 + len(bad))
	j.add(sub("a", "three"))
	if err := j.flush(); err != nil {
		t.Fatal(err)
	}
	j.close()
	l := newLocalInterest(func(string) bool { return false })
	n, skipped, err := replayJournal(state+".journal", l)
	if err != nil || n != 2 || skipped != 1 {
		t.Fatalf("applied %d, skipped %d, err %v; want 2 applied, 1 skipped", n, skipped, err)
	}
	if got := modelState(l); !reflect.DeepEqual(got, []string{"one", "three"}) {
		t.Errorf("filters %v, want the records around the bad one", got)
	}
}

// fullDisk is a journal file on a disk that takes at most room more bytes: a write past it is
// cut short with ENOSPC, as write(2) does.
type fullDisk struct {
	*os.File
	room int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if len(p) <= d.room {
		d.room -= len(p)
		return d.File.Write(p)
	}
	n, _ := d.File.Write(p[:d.room])
	d.room -= n
	return n, syscall.ENOSPC
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for m, c := range h.msgs {
		if strings.HasPrefix(m, prefix) {
			n += c
		}
	}
	return n
}

// A full disk: the failure is reported once, the waiting entries stay bounded, nothing torn is
// left in the journal, and once the disk takes writes again the files hold the whole model.
func TestJournalDiskFull(t *testing.T) {
	logs := &countingHandler{msgs: map[string]int{}}
	state := filepath.Join(t.TempDir(), "n.json")
	a, err := New(Options{Cluster: "t", Node: "n", Local: "127.0.0.1:1", StatePath: state, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.restoreState(); err != nil {
		t.Fatal(err)
	}
	disk := &fullDisk{File: a.journal.f.(*os.File), room: 300}
	a.journal.f = disk
	a.journal.writeBase = func(path string, data []byte) error {
		if len(data) > disk.room {
			return syscall.ENOSPC
		}
		return writeFileAtomic(path, data)
	}
	batch := func(i int) {
		ev := sysparse.Event{Kind: sysparse.Subscribed, ClientID: "c", Filter: fmt.Sprintf("f/%d/%s", i, strings.Repeat("x", 100))}
		a.model.Apply(ev)
		a.record(journalEntry{Event: &ev})
		a.persistState()
	}
	for i := 0; i < 20000; i++ { // ~2.7 MB of entries, past maxJournalBuffer
		batch(i)
		if i%2000 == 0 {
			a.journal.failedAt = time.Time{} // let the retry interval pass
		}
		if len(a.journal.buf) > maxJournalBuffer {
			t.Fatalf("entry %d: %d bytes waiting, over the bound %d", i, len(a.journal.buf), maxJournalBuffer)
		}
	}
	if n := logs.count("state file cannot be written"); n != 1 {
		t.Errorf("the full disk was reported %d times, want once", n)
	}
	if !a.journal.lost {
		t.Error("entries over the bound were dropped without marking the journal lost")
	}
	// What reached the disk is whole records only.
	l := newLocalInterest(func(string) bool { return false })
	if _, skipped, err := replayJournal(state+".journal", l); err != nil || skipped != 0 {
		t.Errorf("journal after the full disk: %d bad records, err %v", skipped, err)
	}
	// The disk takes writes again: a new base with every subscription.
	disk.room = 1 << 30
	a.journal.failedAt = time.Time{}
	batch(20000)
	if n := logs.count("state file written again"); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
	a.journal.close()
	back := newLocalInterest(func(string) bool { return false })
	if _, err := back.restore(state, "n"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := replayJournal(state+".journal", back); err != nil {
		t.Fatal(err)
	}
	if got, want := back.tree.Len(), a.model.tree.Len(); got != want || want != 20001 {
		t.Errorf("restored %d filters, want %d (20001)", got, want)
	}
}
