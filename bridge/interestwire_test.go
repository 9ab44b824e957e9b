package bridge

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"mosquitto-ha/topictree"
)

func TestInterestRoundTrip(t *testing.T) {
	filters := []string{"a/#", "+/b", "$share/g/x", "ünï/cødé", "a b/c d"}
	m, err := decodeInterest(encodeSnapshot(7, 9, true, filters), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Snapshot || m.Epoch != 7 || m.Seq != 9 || !m.All || !reflect.DeepEqual(m.Filters, filters) {
		t.Errorf("snapshot round trip: %+v", m)
	}
	changes := []Change{{Add: true, Filter: "a/#"}, {Add: false, Filter: "b"}}
	m, err = decodeInterest(encodeDelta(1, 2, false, changes, 0), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Snapshot || m.Epoch != 1 || m.Seq != 2 || m.All || !reflect.DeepEqual(m.Changes, changes) {
		t.Errorf("delta round trip: %+v", m)
	}
}

// Version 3: a delta carries the time its agent read the first subscription it adds; its
// entries are laid out as in version 2. Written only with a stamp, so clusters whose peers do
// not all read it keep sending version 1 and 2.
func TestInterestStampedDelta(t *testing.T) {
	changes := []Change{{Add: true, Filter: "reply/#"}, {Filter: "j/#", Group: "g"}}
	p := encodeDelta(4, 5, false, changes, 1796130738123456789)
	if string(p[:4]) != "MHA3" {
		t.Fatalf("a stamped delta starts %q, want MHA3", p[:4])
	}
	m, err := decodeInterest(p, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Stamp != 1796130738123456789 || m.Epoch != 4 || m.Seq != 5 || !reflect.DeepEqual(m.Changes, changes) {
		t.Errorf("stamped delta round trip: %+v", m)
	}
	if interestWantsAll(p) || !interestWantsAll(encodeDelta(4, 6, true, nil, 1)) {
		t.Error("interestWantsAll misreads the flags of a stamped delta")
	}
	if got := encodeDelta(4, 5, false, []Change{{Add: true, Filter: "a"}}, 0); string(got[:4]) != "MHA1" {
		t.Errorf("an unstamped delta without shares starts %q, want MHA1", got[:4])
	}
	// A stamp on a snapshot is refused: snapshots are never stamped.
	if _, err := decodeInterest([]byte("MHA3S\x01\x01\x05\x00\x00"), Limits{}); !errors.Is(err, ErrBadMessage) {
		t.Errorf("stamped snapshot: %v, want ErrBadMessage", err)
	}
}

func TestDecodeInterestRefuses(t *testing.T) {
	cases := map[string][]byte{
		"empty":              nil,
		"wrong magic":        []byte("XXXXS"),
		"unknown kind":       []byte("MHA1Q\x00\x00\x00\x00"),
		"truncated header":   []byte("MHA1S\x01"),
		"count beyond bytes": []byte("MHA1S\x01\x01\x00\x7f"),
		"empty filter":       []byte("MHA1S\x01\x01\x00\x01\x00"),
		"NUL in filter":      []byte("MHA1S\x01\x01\x00\x01\x03a\x00b"),
		"invalid UTF-8":      []byte("MHA1S\x01\x01\x00\x01\x02\xff\xfe"),
		"unknown op":         []byte("MHA1D\x01\x01\x00\x01*\x01a"),
		"trailing bytes":     append(encodeSnapshot(1, 1, false, []string{"a"}), 'x'),
		"over filter limit":  encodeSnapshot(1, 1, false, []string{"a", "b", "c"}),
		"over length limit":  encodeSnapshot(1, 1, false, []string{string(bytes.Repeat([]byte("x"), 300))}),
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := decodeInterest(p, Limits{MaxFilters: 2, MaxFilterBytes: 256})
			if !errors.Is(err, ErrBadMessage) {
				t.Errorf("decodeInterest = %v, want ErrBadMessage", err)
			}
		})
	}
}

func TestSignerRefusesForgeries(t *testing.T) {
	s := newSigner([]byte("k"))
	sealed := s.seal("$forward/a", []byte("payload"))
	if p, err := s.open("$forward/a", sealed); err != nil || string(p) != "payload" {
		t.Fatalf("open(seal) = %q, %v", p, err)
	}
	for name, tc := range map[string]struct {
		topic string
		msg   []byte
	}{
		"other topic":        {"$forward/b", sealed},
		"flipped bit":        {"$forward/a", append([]byte{sealed[0] ^ 1}, sealed[1:]...)},
		"unsigned":           {"$forward/a", []byte("payload")},
		"shorter than a tag": {"$forward/a", []byte("x")},
		"other key":          {"$forward/a", newSigner([]byte("k2")).seal("$forward/a", []byte("payload"))},
	} {
		if _, err := s.open(tc.topic, tc.msg); !errors.Is(err, ErrForged) {
			t.Errorf("%s: open = %v, want ErrForged", name, err)
		}
	}
	var none *signer
	if p, err := none.open("t", []byte("x")); err != nil || string(p) != "x" {
		t.Errorf("nil signer must pass payloads through: %q %v", p, err)
	}
}

func TestRemoteInterestGapsWidenNeverNarrow(t *testing.T) {
	r := newRemoteInterest()
	r.setSynced(true)
	if !r.Wants("x") {
		t.Fatal("before any snapshot a peer must get everything")
	}
	r.apply(interestMsg{Snapshot: true, Epoch: 5, Seq: 3, Filters: []string{"a/#"}}, 0)
	if r.Wants("b") || !r.Wants("a/1") {
		t.Fatal("after a snapshot the interest is exact")
	}
	if r.apply(interestMsg{Epoch: 5, Seq: 5, Changes: []Change{{Add: true, Filter: "c"}}}, 0) {
		t.Fatal("a delta after a gap must report it")
	}
	if !r.Wants("b") {
		t.Fatal("after a gap the peer must get everything")
	}
	// The missing delta never comes; the next snapshot includes it and the pending one applies.
	r.apply(interestMsg{Snapshot: true, Epoch: 5, Seq: 4, Filters: []string{"a/#", "d"}}, 0)
	if r.Wants("b") || !r.Wants("c") || !r.Wants("d") {
		t.Fatal("a snapshot then the pending delta restore the exact interest")
	}
	// An earlier run's retained delta is ignored; a later run's starts a gap.
	if !r.apply(interestMsg{Epoch: 4, Seq: 99, Changes: []Change{{Add: false, Filter: "a/#"}}}, 0) || !r.Wants("a/x") {
		t.Fatal("an older epoch's delta must not change anything")
	}
	r.apply(interestMsg{Epoch: 6, Seq: 1}, 0)
	if !r.Wants("zzz") {
		t.Fatal("a newer epoch without its snapshot means everything")
	}
	// Over the filter limit: everything.
	r2 := newRemoteInterest()
	r2.setSynced(true)
	if r2.apply(interestMsg{Snapshot: true, Epoch: 1, Filters: []string{"a", "b", "c"}}, 2) || !r2.Wants("zzz") {
		t.Fatal("a peer over the filter limit must get everything")
	}
	// Not synced: everything, whatever the snapshot says.
	r2.apply(interestMsg{Snapshot: true, Epoch: 2, Filters: []string{"a"}}, 0)
	r2.setSynced(false)
	if !r2.Wants("zzz") {
		t.Fatal("before the marker returns the peer must get everything")
	}
}

func FuzzDecodeInterest(f *testing.F) {
	f.Add(encodeSnapshot(1, 2, false, []string{"a/#", "b"}))
	f.Add(encodeDelta(1, 3, true, []Change{{Add: true, Filter: "x"}, {Filter: "y"}}, 0))
	f.Add([]byte("MHA1S\x01\x01\x00\x7f"))
	f.Add(encodeSnapshot(1, 2, false, []string{"a"}, topictree.Share{Group: "g", Filter: "j/#"}))
	f.Add(encodeDelta(1, 3, false, []Change{{Add: true, Filter: "j/#", Group: "g"}, {Filter: "y"}}, 0))
	f.Add(encodeDelta(1, 3, false, []Change{{Add: true, Filter: "j/#"}, {Filter: "y", Group: "g"}}, 1796130738000000000))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := decodeInterest(p, Limits{MaxFilters: 1000, MaxFilterBytes: 1000})
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		var again []byte
		if m.Snapshot {
			again = encodeSnapshot(m.Epoch, m.Seq, m.All, m.Filters, m.Shares...)
		} else {
			again = encodeDelta(m.Epoch, m.Seq, m.All, m.Changes, m.Stamp)
		}
		m2, err := decodeInterest(again, Limits{MaxFilters: 1000, MaxFilterBytes: 1000})
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoded message differs: %+v vs %+v (%v)", m, m2, err)
		}
		r := newRemoteInterest()
		r.setSynced(true)
		r.apply(m, 1000) // never panics
	})
}

func FuzzSignerOpen(f *testing.F) {
	s := newSigner([]byte("fuzz key"))
	f.Add("$forward/a", s.seal("$forward/a", []byte("p")))
	f.Add("t", []byte{})
	f.Fuzz(func(t *testing.T, topic string, msg []byte) {
		p, err := s.open(topic, msg)
		if err != nil {
			return
		}
		// Only what seal produced opens.
		if !bytes.Equal(s.seal(topic, p), msg) {
			t.Fatalf("opened a message seal did not make")
		}
	})
}
