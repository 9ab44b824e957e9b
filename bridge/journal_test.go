package bridge

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

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

func modelState(l *localInterest) []string { return l.tree.Filters() }

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
	n, err := replayJournal(state+".journal", restored)
	if err != nil || n != len(evs)+1 {
		t.Fatalf("replayed %d entries, err %v", n, err)
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
	if _, err := replayJournal(state+".journal", again); err != nil {
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
