package bridge

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func FuzzDecodeBatch(f *testing.F) {
	f.Add(appendBatch(nil, []*relay{{topic: "a/b", payload: []byte("x"), qos: 1}, {topic: "c", retain: true}}))
	f.Add([]byte("MHB1\x01\x00\x01a\x00"))
	f.Add(appendBatch(nil, []*relay{{topic: "r", payload: []byte("v"), qos: 1, retain: true, stamp: 1 << 40, mid: 7}}))
	f.Fuzz(func(t *testing.T, p []byte) {
		es, err := decodeBatch(p, 1<<20)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		rs := make([]*relay, len(es))
		for i, e := range es {
			rs[i] = &relay{topic: e.Topic, payload: e.Payload, qos: e.QoS, retain: e.Retain,
				mid: e.MID, repeat: e.Repeat, stamp: e.Stamp}
		}
		if string(p[:4]) == batchMagicV1 || p[4] != 0 {
			return // an earlier layout, or an epoch this encoder does not write
		}
		if again := appendBatch(nil, rs); !bytes.Equal(again, p) {
			t.Fatalf("re-encoded batch differs")
		}
	})
}

func TestDecodeBatchRefuses(t *testing.T) {
	good := appendBatch(nil, []*relay{{topic: "a", payload: []byte("x"), qos: 1}})
	for name, p := range map[string][]byte{
		"no magic":        []byte("XXXX\x01"),
		"zero count":      []byte("MHB1\x00"),
		"QoS 3":           []byte("MHB1\x01\x03\x01a\x00"),
		"wildcard topic":  []byte("MHB1\x01\x01\x01#\x00"),
		"payload too big": appendBatch(nil, []*relay{{topic: "a", payload: make([]byte, 100)}}),
		"trailing":        append(good, 0),
	} {
		if _, err := decodeBatch(p, 50); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v, want ErrBadMessage", name, err)
		}
	}
}

// What the sender encodes, the receiver decodes: the same publishes, whether they travel alone
// or in a batch, and a tag moved to another topic or a payload changed on the way is refused.
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
		"one relay":                   {[]*relay{{topic: "t/1", payload: []byte("x"), qos: 2}}, "$forward/t/1", 2, false},
		"one retained relay":          {[]*relay{{topic: "t/1", payload: []byte("x"), qos: 1, retain: true}}, "$forward-r/t/1", 1, false},
		"one retained QoS 0 relay":    {[]*relay{{topic: "t/1", payload: []byte("x"), retain: true}}, "$forward-b/a", 1, true},
		"two relays, highest QoS":     {[]*relay{{topic: "t/1", qos: 0}, {topic: "t/2", payload: []byte("y"), qos: 2}}, "$forward-b/a", 2, true},
		"a deletion among QoS 0 ones": {[]*relay{{topic: "t/1"}, {topic: "t/2", retain: true}}, "$forward-b/a", 1, true},
	} {
		topic, payload, qos, batch := send.encode(c.rs)
		if topic != c.wantTopic || qos != c.wantQoS || batch != c.wantBatch {
			t.Errorf("%s: encoded on %q QoS %d batch %v, want %q QoS %d batch %v", name, topic, qos, batch, c.wantTopic, c.wantQoS, c.wantBatch)
			continue
		}
		es, isRelay, err := recv.decode(topic, qos, payload, DefaultMaxPayloadBytes)
		if !isRelay || err != nil {
			t.Errorf("%s: decode: relay %v, %v", name, isRelay, err)
			continue
		}
		var got []*relay
		for _, e := range es {
			got = append(got, &relay{topic: e.Topic, payload: e.Payload, qos: e.QoS, retain: e.Retain})
		}
		want := c.rs
		for _, r := range want {
			if r.payload == nil {
				r.payload = []byte{}
			}
		}
		for _, r := range got {
			if r.payload == nil {
				r.payload = []byte{}
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded %+v, want %+v", name, got, want)
		}
		if _, _, err := recv.decode(topic+"x", qos, payload, DefaultMaxPayloadBytes); !errors.Is(err, ErrForged) {
			t.Errorf("%s: tag on another topic: %v, want ErrForged", name, err)
		}
		bad := bytes.Clone(payload)
		bad[0] ^= 1
		if _, _, err := recv.decode(topic, qos, bad, DefaultMaxPayloadBytes); !errors.Is(err, ErrForged) {
			t.Errorf("%s: changed payload: %v, want ErrForged", name, err)
		}
	}
	if _, isRelay, _ := recv.decode("t/1", 0, nil, DefaultMaxPayloadBytes); isRelay {
		t.Error("an ordinary topic decoded as a relay")
	}
	_, payload, _, _ := send.encode([]*relay{{topic: "t", payload: make([]byte, 100), qos: 1}})
	if _, _, err := recv.decode("$forward/t", 1, payload, 50); !errors.Is(err, errOversized) {
		t.Errorf("oversized relay: %v, want errOversized", err)
	}
}
