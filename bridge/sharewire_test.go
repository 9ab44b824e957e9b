package bridge

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"mosquitto-ha/sysparse"
	"mosquitto-ha/topictree"
)

// Version 2 of the interest messages carries shared subscriptions apart from plain filters.
func TestInterestSharesRoundTrip(t *testing.T) {
	filters := []string{"a/#", "$share/x"} // "$share/x" is no shared subscription: a literal filter
	shares := []topictree.Share{{Group: "g", Filter: "jobs/#"}, {Group: "h h", Filter: "+/b"}}
	p := encodeSnapshot(7, 9, false, filters, shares...)
	if !strings.HasPrefix(string(p), "MHA2S") {
		t.Fatalf("a snapshot with shares is not version 2: %q", p[:5])
	}
	m, err := decodeInterest(p, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Filters, filters) || !reflect.DeepEqual(m.Shares, shares) || m.Epoch != 7 || m.Seq != 9 {
		t.Fatalf("snapshot round trip: %+v", m)
	}
	changes := []Change{{Add: true, Filter: "jobs/#", Group: "g"}, {Filter: "b"}, {Filter: "+/b", Group: "h h"}}
	p = encodeDelta(1, 2, true, changes, 0)
	if !strings.HasPrefix(string(p), "MHA2D") {
		t.Fatalf("a delta with shares is not version 2: %q", p[:5])
	}
	if m, err = decodeInterest(p, Limits{}); err != nil || !reflect.DeepEqual(m.Changes, changes) || !m.All {
		t.Fatalf("delta round trip: %+v, %v", m, err)
	}
}

// A message without shared subscriptions stays version 1, byte for byte what an agent before
// version 2 writes and reads, so a cluster without $share keeps working while agents are
// upgraded one at a time; a version 1 message from such an agent is understood.
func TestInterestWithoutSharesStaysVersion1(t *testing.T) {
	// Written by hand after the version 1 layout (doc.go): snapshot epoch 1, seq 2, flags 0,
	// two filters; delta epoch 1, seq 3, "+a/#", "-b".
	v1Snapshot := []byte("MHA1S\x01\x02\x00\x02\x03a/#\x01b")
	v1Delta := []byte("MHA1D\x01\x03\x00\x02+\x03a/#-\x01b")
	if got := encodeSnapshot(1, 2, false, []string{"a/#", "b"}); string(got) != string(v1Snapshot) {
		t.Fatalf("snapshot without shares = %q, want version 1 %q", got, v1Snapshot)
	}
	if got := encodeDelta(1, 3, false, []Change{{Add: true, Filter: "a/#"}, {Filter: "b"}}, 0); string(got) != string(v1Delta) {
		t.Fatalf("delta without shares = %q, want version 1 %q", got, v1Delta)
	}
	m, err := decodeInterest(v1Snapshot, Limits{})
	if err != nil || !reflect.DeepEqual(m.Filters, []string{"a/#", "b"}) || m.Shares != nil {
		t.Fatalf("version 1 snapshot: %+v, %v", m, err)
	}
	// An old agent's interest names a shared subscription's filter without its group (it
	// stripped "$share/<group>/"): taken as a plain filter, relayed as before.
	r := newRemoteInterest()
	r.setSynced(true)
	r.apply(m, 0)
	if !r.Wants("a/x") || r.shares.Load().Len() != 0 {
		t.Fatal("version 1 interest not applied as plain filters")
	}
}

// What a version 1 agent does with a version 2 message: its decoder checks the magic "MHA1"
// first, so it refuses the message as ErrBadMessage and relays everything to the sender (see
// peer.interestMessage): more traffic, never less delivery. This decoder refuses versions it
// does not know the same way.
func TestInterestUnknownVersionRefused(t *testing.T) {
	p := encodeSnapshot(1, 1, false, nil, topictree.Share{Group: "g", Filter: "a"})
	p[3] = '4'
	_, err := decodeInterest(p, Limits{})
	if !errors.Is(err, ErrBadMessage) || !strings.Contains(err.Error(), `no "MHA1", "MHA2" or "MHA3" header`) {
		t.Fatalf("version 4 = %v, want a refusal that names the versions", err)
	}
	for name, p := range map[string][]byte{
		"share name with '/'": []byte("MHA2S\x01\x01\x00\x01\x03g/h\x01a"),
		"share name with '+'": []byte("MHA2D\x01\x01\x00\x01+\x01+\x01a"),
		"share name NUL":      []byte("MHA2S\x01\x01\x00\x01\x01\x00\x01a"),
		"no filter":           []byte("MHA2S\x01\x01\x00\x01\x01g\x00"),
		"truncated group":     []byte("MHA2S\x01\x01\x00\x01\x05g"),
	} {
		if _, err := decodeInterest(p, Limits{}); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v, want ErrBadMessage", name, err)
		}
	}
}

// A peer's shared subscriptions follow its snapshots and deltas with set semantics, apart from
// its plain filters.
func TestRemoteSharesApply(t *testing.T) {
	r := newRemoteInterest()
	r.setSynced(true)
	g := topictree.Share{Group: "g", Filter: "jobs/#"}
	r.apply(interestMsg{Snapshot: true, Epoch: 1, Seq: 1, Shares: []topictree.Share{g}}, 0)
	if r.Wants("jobs/1") {
		t.Fatal("a shared subscription made the peer want every publish on its filter")
	}
	if r.shares.Load().Count(g) != 1 || r.Len() != 1 {
		t.Fatalf("shares %d, Len %d", r.shares.Load().Count(g), r.Len())
	}
	r.apply(interestMsg{Epoch: 1, Seq: 2, Changes: []Change{{Add: true, Filter: "jobs/#", Group: "g"}, {Add: true, Filter: "jobs/#"}}}, 0)
	if r.shares.Load().Count(g) != 1 || !r.Wants("jobs/1") {
		t.Fatal("a repeated share add counted twice, or the plain filter was not added")
	}
	r.apply(interestMsg{Epoch: 1, Seq: 3, Changes: []Change{{Filter: "jobs/#", Group: "g"}}}, 0)
	if r.shares.Load().Count(g) != 0 || !r.Wants("jobs/1") {
		t.Fatal("removing the share removed the plain filter, or kept the share")
	}
	r.apply(interestMsg{Epoch: 1, Seq: 4, Changes: []Change{{Add: true, Filter: "$app/x", Group: "g"}}}, 0)
	if !reflect.DeepEqual(r.DollarFilters(), []string{"$app/x"}) {
		t.Fatalf("a shared '$' filter is not subscribed locally: %v", r.DollarFilters())
	}
}

// The local model keeps a shared subscription as its (group, filter) pair, never as its plain
// filter, and announces it with its group.
func TestLocalInterestShares(t *testing.T) {
	l := newLocalInterest(func(string) bool { return false })
	l.Apply(sysparse.Event{Kind: sysparse.Connected, ClientID: "w1", CleanSession: true})
	l.Apply(sysparse.Event{Kind: sysparse.Connected, ClientID: "w2", CleanSession: true})
	l.Apply(sysparse.Event{Kind: sysparse.Subscribed, ClientID: "w1", Filter: "$share/g/jobs/#", QoS: 1})
	l.Apply(sysparse.Event{Kind: sysparse.Subscribed, ClientID: "w2", Filter: "$share/g/jobs/#", QoS: 1})
	l.Apply(sysparse.Event{Kind: sysparse.Subscribed, ClientID: "w2", Filter: "$share//bad", QoS: 1}) // not a share: literal
	if got := l.Drain(); !reflect.DeepEqual(got, []Change{{Add: true, Filter: "jobs/#", Group: "g"}, {Add: true, Filter: "$share//bad"}}) {
		t.Fatalf("changes %+v", got)
	}
	if l.tree.Count("jobs/#") != 0 || l.shares.Count(topictree.Share{Group: "g", Filter: "jobs/#"}) != 2 || l.filterCount() != 2 {
		t.Fatalf("tree %v, shares %v", l.filters(), l.shareList())
	}
	l.Apply(sysparse.Event{Kind: sysparse.Disconnected, ClientID: "w1"})
	if got := l.Drain(); len(got) != 0 {
		t.Fatalf("one member of two left: %+v", got)
	}
	l.Apply(sysparse.Event{Kind: sysparse.Unsubscribed, ClientID: "w2", Filter: "$share/g/jobs/#"})
	if got := l.Drain(); !reflect.DeepEqual(got, []Change{{Filter: "jobs/#", Group: "g"}}) {
		t.Fatalf("last member left: %+v", got)
	}
}
