package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

func FuzzDecodeBatch(f *testing.F) {
	f.Add(appendBatch(nil, 7, []*relay{{topic: "a/b", payload: []byte("x"), qos: 1, mid: 300, repeat: true},
		{topic: "c", retain: true, stamp: 1 << 60}}, false))
	f.Add([]byte("MHB2\x01\x01\x00\x00\x01a\x00"))
	f.Add([]byte("MHB1\x01\x00\x01a\x00"))
	f.Fuzz(func(t *testing.T, p []byte) {
		epoch, es, err := decodeBatch(p, 1<<20)
		if err != nil || string(p[:4]) != batchMagic {
			return
		}
		// What decodes re-encodes to the same bytes (when its varints were minimal).
		rs := make([]*relay, len(es))
		for i, e := range es {
			rs[i] = &relay{topic: e.Topic, payload: e.Payload, qos: e.QoS, retain: e.Retain,
				mid: e.MID, repeat: e.Repeat, stamp: e.Stamp}
		}
		again := appendBatch(nil, epoch, rs, false)
		if len(again) == len(p) && !bytes.Equal(again, p) {
			t.Fatalf("re-encoded batch differs")
		}
		if e2, es2, err := decodeBatch(again, 1<<20); err != nil || e2 != epoch || !reflect.DeepEqual(es2, es) {
			t.Fatalf("re-encoded batch decodes differently: %v", err)
		}
	})
}

// Hostile batches: each is refused with ErrBadMessage, and none allocates for a count it does
// not carry.
func TestDecodeBatchRefuses(t *testing.T) {
	good := appendBatch(nil, 1, []*relay{{topic: "a", payload: []byte("x"), qos: 1, mid: 1}}, false)
	huge := binary.AppendUvarint([]byte("MHB2\x01"), 1<<62)
	for name, p := range map[string][]byte{
		"no magic":           []byte("XXXX\x01"),
		"short":              []byte("MH"),
		"zero count":         []byte("MHB2\x01\x00"),
		"huge count":         append(huge, 0, 0, 1, 'a', 0),
		"count past the end": []byte("MHB2\x01\x05\x01\x01\x01a\x00"),
		"no epoch":           []byte("MHB2"),
		"QoS 3":              []byte("MHB2\x01\x01\x03\x00\x01a\x00"),
		"unknown flag":       []byte("MHB2\x01\x01\x21\x00\x01a\x00"),
		"v1 with v2 flag":    []byte("MHB1\x01\x09\x01a\x00"),
		"mid over 16 bits":   []byte("MHB2\x01\x01\x01\x80\x80\x04\x01a\x00"),
		"truncated stamp":    []byte("MHB2\x01\x01\x10\x00\x00\x00\x01"),
		"zero stamp":         []byte("MHB2\x01\x01\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01a\x00"),
		"wildcard topic":     []byte("MHB2\x01\x01\x01\x01\x01#\x00"),
		"empty topic":        []byte("MHB2\x01\x01\x01\x01\x00\x00"),
		"payload too big":    appendBatch(nil, 1, []*relay{{topic: "a", payload: make([]byte, 100)}}, false),
		"payload past end":   []byte("MHB2\x01\x01\x01\x01\x01a\x05xx"),
		"truncated":          good[:len(good)-1],
		"trailing":           append(bytes.Clone(good), 0),
	} {
		if _, _, err := decodeBatch(p, 50); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v, want ErrBadMessage", name, err)
		}
	}
}

// Version 1 batches, from agents of the previous release during an upgrade, still decode: no
// epoch, no identity.
func TestDecodeBatchVersion1(t *testing.T) {
	epoch, es, err := decodeBatch([]byte("MHB1\x02\x01\x01a\x01x\x04\x01b\x00"), 50)
	want := []batchEntry{{Topic: "a", Payload: []byte("x"), QoS: 1}, {Topic: "b", Payload: []byte{}, Retain: true}}
	if err != nil || epoch != 0 || !reflect.DeepEqual(es, want) {
		t.Fatalf("got %d %+v %v, want %+v", epoch, es, err, want)
	}
}

// What the sender encodes, the receiver decodes: the same publishes with their identity (origin,
// epoch, mid, repeat) and stamp, whether they travel alone or in a batch, and a tag moved to
// another topic or a payload changed on the way is refused.
func TestRelayWireRoundTrip(t *testing.T) {
	topics := NewTopics("c", "$forward/")
	send := relayWire{topics: topics, node: "a", signer: newSigner([]byte("secret"))}
	recv := relayWire{topics: topics, node: "b", signer: newSigner([]byte("secret"))}
	for name, c := range map[string]struct {
		rs        []*relay
		wantTopic string
		wantQoS   byte
		wantBatch bool
	}{
		"one QoS 0 relay":          {[]*relay{{topic: "t/1", payload: []byte("x"), epoch: 9}}, "$forward/t/1", 0, false},
		"one QoS 2 relay":          {[]*relay{{topic: "t/1", payload: []byte("x"), qos: 2, mid: 65535, epoch: 9}}, "$forward-b/a", 2, true},
		"one repeated QoS 1 relay": {[]*relay{{topic: "t/1", payload: []byte("x"), qos: 1, mid: 1, epoch: 1 << 63, repeat: true}}, "$forward-b/a", 1, true},
		"one retained relay":       {[]*relay{{topic: "t/1", payload: []byte("x"), qos: 1, retain: true, mid: 3, epoch: 9}}, "$forward-b/a", 1, true},
		"one retained QoS 0 relay": {[]*relay{{topic: "t/1", payload: []byte("x"), retain: true, epoch: 9}}, "$forward-b/a", 1, true},
		"one stamped QoS 0 relay":  {[]*relay{{topic: "t/1", payload: []byte("x"), stamp: 42, epoch: 9}}, "$forward-b/a", 0, true},
		"two relays, highest QoS":  {[]*relay{{topic: "t/1", epoch: 9}, {topic: "t/2", payload: []byte("y"), qos: 2, mid: 7, epoch: 9}}, "$forward-b/a", 2, true},
		"a deletion among QoS 0":   {[]*relay{{topic: "t/1", epoch: 9}, {topic: "t/2", retain: true, stamp: 5, epoch: 9}}, "$forward-b/a", 1, true},
	} {
		topic, payload, qos, batch := send.encode(c.rs, true)
		if topic != c.wantTopic || qos != c.wantQoS || batch != c.wantBatch {
			t.Errorf("%s: encoded on %q QoS %d batch %v, want %q QoS %d batch %v", name, topic, qos, batch, c.wantTopic, c.wantQoS, c.wantBatch)
			continue
		}
		es, src, isRelay, err := recv.decode(topic, qos, payload, DefaultMaxPayloadBytes)
		if !isRelay || err != nil {
			t.Errorf("%s: decode: relay %v, %v", name, isRelay, err)
			continue
		}
		if batch && (src.origin != "a" || src.epoch != c.rs[0].epoch) {
			t.Errorf("%s: source %+v, want origin a epoch %d", name, src, c.rs[0].epoch)
		}
		var got []*relay
		for _, e := range es {
			got = append(got, &relay{topic: e.Topic, payload: e.Payload, qos: e.QoS, retain: e.Retain,
				mid: e.MID, repeat: e.Repeat, stamp: e.Stamp, epoch: src.epoch})
		}
		want := c.rs
		for _, r := range append(want, got...) {
			if r.payload == nil {
				r.payload = []byte{}
			}
			if !batch {
				r.epoch = 0 // a single plain relay has no identity
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded %+v, want %+v", name, got, want)
		}
		if _, _, _, err := recv.decode(topic+"x", qos, payload, DefaultMaxPayloadBytes); !errors.Is(err, ErrForged) {
			t.Errorf("%s: tag on another topic: %v, want ErrForged", name, err)
		}
		bad := bytes.Clone(payload)
		bad[0] ^= 1
		if _, _, _, err := recv.decode(topic, qos, bad, DefaultMaxPayloadBytes); !errors.Is(err, ErrForged) {
			t.Errorf("%s: changed payload: %v, want ErrForged", name, err)
		}
	}
	if _, _, isRelay, _ := recv.decode("t/1", 0, nil, DefaultMaxPayloadBytes); isRelay {
		t.Error("an ordinary topic decoded as a relay")
	}
	_, payload, _, _ := send.encode([]*relay{{topic: "t", payload: make([]byte, 100)}}, true)
	if _, _, _, err := recv.decode("$forward/t", 0, payload, 50); !errors.Is(err, errOversized) {
		t.Errorf("oversized relay: %v, want errOversized", err)
	}
}

// The identity costs a few bytes per relay: the mid as a uvarint, the epoch once per batch.
func TestBatchOverhead(t *testing.T) {
	rs := make([]*relay, 100)
	for i := range rs {
		rs[i] = &relay{topic: "t", payload: []byte("x"), qos: 2, mid: uint16(60000 + i), epoch: 1<<64 - 1}
	}
	v2 := len(appendBatch(nil, rs[0].epoch, rs, false))
	v1 := 4 + 1 + len(rs)*(1+1+1+1+1) // "MHB1", count, then flags, topic, payload
	if per := float64(v2-v1-10) / float64(len(rs)); per > 3 {
		t.Errorf("version 2 costs %.1f bytes more per relay, want at most 3 (the mid)", per)
	}
}

// For a peer agent of the previous release (its status has no relay_wire), relays are encoded
// in version 1, which that release decodes: the plain topics for one relay, "MHB1" otherwise.
func TestRelayWireVersion1ForOldPeers(t *testing.T) {
	topics := NewTopics("c", "$forward/")
	send := relayWire{topics: topics, node: "a"}
	for name, c := range map[string]struct {
		rs        []*relay
		wantTopic string
		wantQoS   byte
	}{
		"one QoS 2 relay":          {[]*relay{{topic: "t/1", payload: []byte("x"), qos: 2, mid: 4, epoch: 9}}, "$forward/t/1", 2},
		"one retained relay":       {[]*relay{{topic: "t/1", payload: []byte("x"), qos: 1, retain: true}}, "$forward-r/t/1", 1},
		"one retained QoS 0 relay": {[]*relay{{topic: "t/1", payload: []byte("x"), retain: true}}, "$forward-b/a", 1},
		"two relays":               {[]*relay{{topic: "t/1", qos: 1, mid: 1, repeat: true}, {topic: "t/2", payload: []byte("y"), stamp: 3}}, "$forward-b/a", 1},
	} {
		topic, payload, qos, batch := send.encodeV1(c.rs)
		if topic != c.wantTopic || qos != c.wantQoS {
			t.Errorf("%s: encoded on %q QoS %d, want %q QoS %d", name, topic, qos, c.wantTopic, c.wantQoS)
			continue
		}
		if !batch {
			continue
		}
		if string(payload[:4]) != batchMagicV1 {
			t.Errorf("%s: magic %q, want %q", name, payload[:4], batchMagicV1)
		}
		epoch, es, err := decodeBatch(payload, 50)
		if err != nil || epoch != 0 || len(es) != len(c.rs) {
			t.Fatalf("%s: decoded %d %+v %v", name, epoch, es, err)
		}
		for i, e := range es {
			r := c.rs[i]
			if e.Topic != r.topic || e.QoS != r.qos || e.Retain != r.retain || e.MID != 0 || e.Repeat || e.Stamp != 0 {
				t.Errorf("%s: entry %d %+v, want %+v without identity", name, i, e, r)
			}
		}
	}
}

// A large relay alone is sent without copying its payload: head, payload and tail together are
// exactly the batch encode builds, signed or not.
func TestEncodeLargeIsEncode(t *testing.T) {
	topics := NewTopics("c", "$forward/")
	big := bytes.Repeat([]byte("p"), largeRelay+3)
	for _, s := range []*signer{nil, newSigner([]byte("secret"))} {
		w := relayWire{topics: topics, node: "a", signer: s}
		for _, r := range []*relay{
			{topic: "t/1", payload: big, qos: 2, mid: 300, epoch: 1 << 40, repeat: true},
			{topic: "t/2", payload: big, retain: true, stamp: 77},
		} {
			topic, payload, qos, _ := w.encode([]*relay{r}, true)
			lt, head, tail, lqos := w.encodeLarge(r, true)
			joined := append(append(append([]byte(nil), head...), r.payload...), tail...)
			if lt != topic || lqos != qos || !bytes.Equal(joined, payload) {
				t.Errorf("signed %v, %q: encodeLarge differs from encode", s != nil, r.topic)
			}
		}
	}
}

// The forward prefixes, their parent level (the probe's round trip) and the control topics are
// the cluster's: never relayed, never written by a relay.
func TestTopicsReserved(t *testing.T) {
	tp := NewTopics("c", "$forward/")
	for _, topic := range []string{"$forward", "$forward/a", "$forward-r", "$forward-r/a", "$forward-b",
		"$forward-b/b1", "$HA/c/b1/interest", "$SYS/broker/log/N"} {
		if !tp.IsReserved(topic) {
			t.Errorf("%q not reserved", topic)
		}
	}
	for _, topic := range []string{"$forwarded", "$forward-x", "forward", "a/$forward", "$HA/other/x", "$share"} {
		if tp.IsReserved(topic) {
			t.Errorf("%q reserved", topic)
		}
	}
}

// MQTT 5 properties travel in version 3 ("MHB3", flag bit 5) with the expiry counted down by
// the whole seconds since the message was read; without them a batch stays "MHB2" byte for
// byte; a single QoS 0 relay with properties goes in a batch; to a peer of version 2 the
// properties are dropped and the batch is "MHB2", which that peer decodes.
func TestRelayWireProps(t *testing.T) {
	send := relayWire{topics: NewTopics("c", "$forward/"), node: "a"}
	var raw []byte
	raw = append(raw, mqttconn.PropUserProperty, 0, 1, 'k', 0, 2, 'v', '1')
	raw = append(raw, mqttconn.PropUserProperty, 0, 1, 'k', 0, 2, 'v', '2')
	raw = append(raw, mqttconn.PropContentType, 0, 1, 'j')
	read := time.Now().Add(-2500 * time.Millisecond).UnixNano()
	props := &relayProps{Props: mqttconn.Props{Raw: raw, Expiry: 60}, received: read}
	one := []*relay{{topic: "t/1", payload: []byte("x"), props: props}}

	topic, payload, qos, batch := send.encode(one, true)
	if !batch || topic != "$forward-b/a" || qos != 0 || string(payload[:4]) != batchMagicV3 {
		t.Fatalf("a QoS 0 relay with properties: topic %q batch %v magic %q, want an MHB3 batch", topic, batch, payload[:4])
	}
	_, es, err := decodeBatch(payload, 100)
	if err != nil || len(es) != 1 {
		t.Fatal(es, err)
	}
	if !bytes.Equal(es[0].Props().Raw, raw) || es[0].Props().Expiry != 58 {
		t.Errorf("decoded props %+v, want the same raw properties and expiry 58", es[0].Props())
	}

	topic, payload, _, batch = send.encode(one, false)
	if batch || topic != "$forward/t/1" || string(payload) != "x" {
		t.Errorf("to a version 2 peer: %q %q batch %v, want the plain forward without properties", topic, payload, batch)
	}
	two := append(one, &relay{topic: "t/2", qos: 1, mid: 3, props: props})
	_, payload, _, _ = send.encode(two, false)
	if string(payload[:4]) != batchMagic {
		t.Fatalf("to a version 2 peer: magic %q", payload[:4])
	}
	if _, es, err = decodeBatch(payload, 100); err != nil || !es[0].Props().Empty() || !es[1].Props().Empty() {
		t.Errorf("to a version 2 peer: %+v %v, want no properties", es, err)
	}
	plain := []*relay{{topic: "t/1", qos: 1, mid: 1}, {topic: "t/2", qos: 1, mid: 2}}
	_, withProps, _, _ := send.encode(plain, true)
	_, without, _, _ := send.encode(plain, false)
	if !bytes.Equal(withProps, without) || string(withProps[:4]) != batchMagic {
		t.Errorf("relays without properties: %q to version 3, %q to version 2: want the same MHB2 bytes", withProps, without)
	}

	// An MHB2 batch with bit 5 is refused (what a version 2 agent does with it), and so is a
	// property a PUBLISH may not carry.
	bad := bytes.Clone(send.encodeOrFail(t, one))
	copy(bad, batchMagic)
	if _, _, err := decodeBatch(bad, 100); !errors.Is(err, ErrBadMessage) {
		t.Errorf("MHB2 with properties: %v, want ErrBadMessage", err)
	}
	session := &relayProps{Props: mqttconn.Props{Raw: []byte{mqttconn.PropSessionExpiry, 0, 0, 0, 1}}}
	if _, _, err := decodeBatch(send.encodeOrFail(t, []*relay{{topic: "t", props: session}}), 100); !errors.Is(err, ErrBadMessage) {
		t.Errorf("a session expiry in a PUBLISH: %v, want ErrBadMessage", err)
	}
}

func (w relayWire) encodeOrFail(t *testing.T, rs []*relay) []byte {
	t.Helper()
	_, p, _, batch := w.encode(rs, true)
	if !batch {
		t.Fatal("not a batch")
	}
	return p
}

// A message that expires on the way is not delivered: the sender settles it without sending,
// the receiver drops it; the time left counts whole seconds, as Mosquitto does.
func TestRelayExpiry(t *testing.T) {
	now := time.Now().UnixNano()
	p := mqttconn.Props{Expiry: 3}
	for _, c := range []struct {
		ago  time.Duration
		left uint32
		ok   bool
	}{{0, 3, true}, {999 * time.Millisecond, 3, true}, {2500 * time.Millisecond, 1, true}, {3 * time.Second, 0, false}, {-time.Hour, 3, true}} {
		got, ok := remaining(p, now-int64(c.ago), now)
		if ok != c.ok || (ok && got.Expiry != c.left) {
			t.Errorf("expiry 3 s, read %v ago: %d %v, want %d %v", c.ago, got.Expiry, ok, c.left, c.ok)
		}
	}
	if got, ok := remaining(mqttconn.Props{Raw: []byte{1, 1}}, 0, now); !ok || got.Expiry != 0 {
		t.Errorf("no expiry: %+v %v, want never expired", got, ok)
	}

	m := &message{QoS: 1}
	g := &ackGroup{msg: m}
	g.left.Store(2)
	old := &relayProps{Props: mqttconn.Props{Expiry: 1}, received: now - int64(2*time.Second)}
	fresh := &relayProps{Props: mqttconn.Props{Expiry: 60}, received: now}
	gone := &relay{topic: "gone", props: old, group: g}
	p2 := &peer{}
	kept := p2.dropExpired([]*relay{gone, {topic: "kept", props: fresh, group: g}})
	if len(kept) != 1 || kept[0].topic != "kept" || p2.expired.Load() != 1 || !gone.settled || g.left.Load() != 1 {
		t.Errorf("dropExpired kept %d relays, expired %d, settled the expired one: %v", len(kept), p2.expired.Load(), gone.settled)
	}
}
