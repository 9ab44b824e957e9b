package bridge

import (
	"testing"

	"mosquitto-ha/sysparse"
)

// Only an unambiguous connect line seen on this log subscription makes a client accounted for;
// nothing that may have ended its session keeps it so (issue 10, finding 1).
func TestAccountedByIdentity(t *testing.T) {
	ignore := func(id string) bool { return id == "haproxy-hc" }
	conn := func(id string, clean bool, proto int) sysparse.Event {
		return sysparse.Event{Kind: sysparse.Connected, ClientID: id, CleanSession: clean, Protocol: proto}
	}
	sub := func(id, f string) sysparse.Event {
		return sysparse.Event{Kind: sysparse.Subscribed, ClientID: id, Filter: f, QoS: 1}
	}
	disc := func(id string) sysparse.Event { return sysparse.Event{Kind: sysparse.Disconnected, ClientID: id} }
	for _, tc := range []struct {
		name string
		evs  []sysparse.Event
		want int
	}{
		{"connected clean", []sysparse.Event{conn("c", true, 4), sub("c", "x")}, 1},
		{"first seen subscribing", []sysparse.Event{sub("e", "later/x")}, 0},
		{"ambiguous readings add no client", []sysparse.Event{conn("a", true, 4), conn("a 1 b", true, 4),
			{Kind: sysparse.Subscribed, ClientID: "a", Readings: []sysparse.Reading{
				{ClientID: "a", QoS: 1, Filter: "b 1 c 1 d"}, {ClientID: "a 1 b", QoS: 1, Filter: "c 1 d"},
				{ClientID: "a 1 b 1 c", QoS: 1, Filter: "d"}}}}, 2},
		{"ambiguous connect adds no client", []sysparse.Event{{Kind: sysparse.Connected, ClientID: "x",
			Readings: []sysparse.Reading{{ClientID: "x"}, {ClientID: "x y"}}}}, 0},
		{"truncated connect adds no client", []sysparse.Event{{Kind: sysparse.Connected, ClientID: "long", Truncated: true}}, 0},
		{"clean disconnect", []sysparse.Event{conn("c", true, 4), disc("c")}, 0},
		{"persistent disconnect stays", []sysparse.Event{conn("p", false, 4), disc("p")}, 1},
		{"MQTT 5 session end unknown", []sysparse.Event{conn("p5", false, 5), disc("p5")}, 0},
		{"ambiguous disconnect", []sysparse.Event{conn("c", true, 4), {Kind: sysparse.Disconnected, ClientID: "c",
			Readings: []sysparse.Reading{{ClientID: "c"}, {ClientID: "c d"}}}}, 0},
		{"health check while connected", []sysparse.Event{conn("haproxy-hc", true, 4)}, 1},
		{"health check gone", []sysparse.Event{conn("haproxy-hc", true, 4), disc("haproxy-hc")}, 0},
		{"health check subscriptions never count", []sysparse.Event{sub("haproxy-hc", "#")}, 1},
	} {
		l := newLocalInterest(ignore)
		for _, ev := range tc.evs {
			l.Apply(ev)
		}
		if got := l.KnownClients(); got != tc.want {
			t.Errorf("%s: %d clients accounted for, want %d", tc.name, got, tc.want)
		}
	}

	// A restored client, or one seen before a gap in the log, is not accounted for until it
	// connects again; a persistent one that resumes may hold subscriptions made in the gap.
	l := newLocalInterest(ignore)
	l.Apply(conn("p", false, 4))
	l.Apply(sub("p", "a"))
	l.Apply(conn("c", true, 4))
	l.logGap()
	l.Apply(sub("c", "b"))
	if n := l.KnownClients(); n != 0 {
		t.Errorf("after a gap: %d clients accounted for, want 0", n)
	}
	l.Apply(conn("p", false, 4))
	if n := l.KnownClients(); n != 0 || !l.clients["p"].SubsUnknown || l.clients["p"].Subs["a"] != 1 {
		t.Errorf("persistent session resumed after a gap: accounted %d, %+v", n, l.clients["p"])
	}
	// When the broker's count at a tick matched (here: c left while the agent was away and the
	// broker holds nobody else), what the model did not account for then and no line named
	// since is not in the broker: dropped. A persistent session that began after the tick is
	// a new one, known after all.
	l = newLocalInterest(ignore)
	l.Apply(conn("c", true, 4))
	l.Apply(sub("c", "a"))
	l.logGap()
	l.uncertain = true
	tick := l.line
	l.Apply(conn("n", false, 4))
	if !l.clients["n"].SubsUnknown {
		t.Fatal("a persistent session appearing while uncertain must be unknown")
	}
	l.settle(tick)
	if _, ok := l.clients["c"]; ok || l.tree.Len() != 0 {
		t.Error("c, unaccounted for at the matching tick and silent since, was kept")
	}
	if l.clients["n"] == nil || l.clients["n"].SubsUnknown || l.KnownClients() != 1 {
		t.Errorf("n began after the matching tick: %+v", l.clients["n"])
	}
	// Exact from here on: an MQTT 5 client that left and resumes its session is followed.
	l.uncertain = false
	l.Apply(conn("m", false, 5))
	l.Apply(sub("m", "m/#"))
	l.Apply(disc("m"))
	l.Apply(conn("m", false, 5))
	if !l.accounted("m", l.clients["m"]) || l.clients["m"].Subs["m/#"] != 1 {
		t.Errorf("an MQTT 5 session followed since it began and resumed: %+v", l.clients["m"])
	}
}

// A connection the agent made with a client's id (a drain holding its connection) closes with
// the agent's process. A restarted agent that restored it as connected, from the state file or
// the journal, would count one connection more than the broker at every tick, and prove no
// restored connection of a real client until that id connected again.
func TestOwnConnectionsClosedWithTheAgent(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/state.json"
	connect := func(id string) sysparse.Event {
		return sysparse.Event{Kind: sysparse.Connected, ClientID: id, Protocol: sysparse.ProtocolMQTT311}
	}
	l := newLocalInterest(func(string) bool { return false })
	for _, ev := range []sysparse.Event{connect("client"), connect("drained")} {
		l.Apply(ev)
		l.markOwn(ev, ev.ClientID == "drained")
	}
	if err := l.save(path, "b1"); err != nil {
		t.Fatal(err)
	}
	// One more own connect, only in the journal.
	j, err := openJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	ev := connect("drained2")
	j.add(journalEntry{Event: &ev, Own: true})
	if err := j.flush(); err != nil {
		t.Fatal(err)
	}
	j.close()

	r := newLocalInterest(func(string) bool { return false })
	if _, err := r.restore(path, "b1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := replayJournal(path+".journal", r); err != nil {
		t.Fatal(err)
	}
	if !r.clients["drained"].Connected || !r.clients["drained2"].Connected {
		t.Fatal("the restored model lost the own connections before ownConnsClosed: the test proves nothing")
	}
	r.ownConnsClosed()
	for id, want := range map[string]bool{"client": true, "drained": false, "drained2": false} {
		if c := r.clients[id]; c == nil || c.Connected != want {
			t.Errorf("%s: connected %v after a restart, want %v", id, c != nil && c.Connected, want)
		}
	}
}
