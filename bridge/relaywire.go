// relaywire.go owns the relay wire format, both ways: the forward topics a relay travels on, the
// batch layout, the signature, the encoder the peer senders use and the decoder the local
// dispatcher uses (doc.go describes the format).

package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Batching bounds: one forward publish carries at most this many relays or about this many
// payload bytes.
const (
	maxBatchItems = 512
	maxBatchBytes = 256 << 10
)

// Batch is the topic batches from node travel on.
func (t Topics) Batch(node string) string { return t.forwardBatch + node }

// IsBatch recognises a batch topic.
func (t Topics) IsBatch(topic string) bool { return strings.HasPrefix(topic, t.forwardBatch) }

// Forward is the topic a relay of topic travels on.
func (t Topics) Forward(topic string, retained bool) string {
	if retained {
		return t.forwardRetain + topic
	}
	return t.forward + topic
}

// ForwardFilters are the filters the local connection subscribes to for relays addressed to it.
func (t Topics) ForwardFilters() []string {
	return []string{t.forward + "#", t.forwardRetain + "#", t.forwardBatch + "#"}
}

// Unforward recognises a relayed topic and returns the original topic and retain flag.
func (t Topics) Unforward(topic string) (orig string, retained, ok bool) {
	if s, found := strings.CutPrefix(topic, t.forward); found && s != "" {
		return s, false, true
	}
	if s, found := strings.CutPrefix(topic, t.forwardRetain); found && s != "" {
		return s, true, true
	}
	return "", false, false
}

// relayWire encodes the relays node sends and decodes the relays it receives.
type relayWire struct {
	topics Topics
	node   string
	signer *signer // nil: a cluster without a secret
}

// encode builds the forward publish for relays to one peer: the plain forward topic for one
// relay, a batch otherwise, signed when the cluster has a secret.
func (w relayWire) encode(rs []*relay) (topic string, payload []byte, qos byte, batch bool) {
	// A retained value must reach the peer even when published at QoS 0 (contract 5): it travels
	// in a batch, which keeps its own QoS for the republish, acknowledged at QoS 1.
	// A stamp travels only in a batch.
	if len(rs) == 1 && !(rs[0].retain && rs[0].qos == 0) && rs[0].stamp == 0 {
		r := rs[0]
		topic = w.topics.Forward(r.topic, r.retain)
		return topic, w.signer.seal(topic, r.payload), r.qos, false
	}
	size := 16
	for _, r := range rs {
		size += len(r.topic) + len(r.payload) + 8
		qos = max(qos, r.qos)
		if r.retain {
			qos = max(qos, 1)
		}
	}
	if w.signer != nil {
		size += tagSize
	}
	topic = w.topics.Batch(w.node)
	payload = appendBatch(make([]byte, 0, size), rs)
	if w.signer != nil {
		payload = w.signer.tag(payload, topic, payload)
	}
	return topic, payload, qos, true
}

// errOversized marks a relay whose payload exceeds Limits.MaxPayloadBytes.
var errOversized = errors.New("bridge: relay over the payload limit")

// decode recognises a relay addressed to this node, received on topic at qos, and returns the
// publishes it carries (payloads alias payload). isRelay is false for any other topic. The error
// wraps ErrForged (signature), errOversized (a single relay over maxPayload) or ErrBadMessage
// (a batch that does not decode or holds a payload over maxPayload).
func (w relayWire) decode(topic string, qos byte, payload []byte, maxPayload int) (entries []batchEntry, isRelay bool, err error) {
	if w.topics.IsBatch(topic) {
		p, err := w.signer.open(topic, payload)
		if err != nil {
			return nil, true, err
		}
		entries, err = decodeBatch(p, maxPayload)
		return entries, true, err
	}
	orig, retained, ok := w.topics.Unforward(topic)
	if !ok {
		return nil, false, nil
	}
	p, err := w.signer.open(topic, payload)
	if err != nil {
		return nil, true, err
	}
	if len(p) > maxPayload {
		return nil, true, fmt.Errorf("%w: %d bytes", errOversized, len(p))
	}
	return []batchEntry{{Topic: orig, Payload: p, QoS: qos, Retain: retained}}, true, nil
}

// batchMagic starts a batch of relays; batchMagicV1 the earlier layout, still decoded.
const (
	batchMagic   = "MHB2"
	batchMagicV1 = "MHB1"
)

// batchEntry is one relay inside a batch.
type batchEntry struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	MID     uint16
	Repeat  bool
	Stamp   uint64
}

// appendBatch lays out relays as one batch payload:
//
//	"MHB2", epoch uvarint, count uvarint, then per relay: flags byte (bits 0-1 QoS, bit 2
//	retain, bit 3 repeat, bit 4 has stamp), mid uvarint, [stamp 8 bytes big endian], topic
//	length uvarint, topic, payload length uvarint, payload
func appendBatch(b []byte, rs []*relay) []byte {
	b = append(b, batchMagic...)
	b = binary.AppendUvarint(b, 0) // epoch: set by the dedupe work
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		flags := r.qos & 3
		if r.retain {
			flags |= 4
		}
		if r.repeat {
			flags |= 8
		}
		if r.stamp != 0 {
			flags |= 16
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(r.mid))
		if r.stamp != 0 {
			b = binary.BigEndian.AppendUint64(b, r.stamp)
		}
		b = appendString(b, r.topic)
		b = binary.AppendUvarint(b, uint64(len(r.payload)))
		b = append(b, r.payload...)
	}
	return b
}

// decodeBatch parses a batch; payloads alias p.
func decodeBatch(p []byte, maxPayload int) ([]batchEntry, error) {
	if len(p) < len(batchMagic) || (string(p[:len(batchMagic)]) != batchMagic && string(p[:len(batchMagic)]) != batchMagicV1) {
		return nil, fmt.Errorf("%w: no %q header", ErrBadMessage, batchMagic)
	}
	v2 := string(p[:len(batchMagic)]) == batchMagic
	p = p[len(batchMagic):]
	var err error
	if v2 {
		if _, p, err = uvarint(p, "epoch"); err != nil {
			return nil, err
		}
	}
	count, p, err := uvarint(p, "count")
	if err != nil {
		return nil, err
	}
	if count == 0 || count > uint64(len(p)) {
		return nil, fmt.Errorf("%w: batch count %d", ErrBadMessage, count)
	}
	out := make([]batchEntry, 0, count)
	for i := uint64(0); i < count; i++ {
		if len(p) < 1 {
			return nil, fmt.Errorf("%w: batch truncated at entry %d", ErrBadMessage, i)
		}
		flags := p[0]
		e := batchEntry{QoS: flags & 3, Retain: flags&4 != 0, Repeat: flags&8 != 0}
		known := byte(7)
		if v2 {
			known = 31
		}
		if flags&^known != 0 || e.QoS == 3 {
			return nil, fmt.Errorf("%w: batch entry %d: bad flags %#x", ErrBadMessage, i, flags)
		}
		p = p[1:]
		var n uint64
		if v2 {
			if n, p, err = uvarint(p, "mid"); err != nil {
				return nil, err
			}
			if n > 65535 {
				return nil, fmt.Errorf("%w: batch entry %d: mid %d", ErrBadMessage, i, n)
			}
			e.MID = uint16(n)
			if flags&16 != 0 {
				if len(p) < 8 {
					return nil, fmt.Errorf("%w: batch entry %d: stamp truncated", ErrBadMessage, i)
				}
				e.Stamp, p = binary.BigEndian.Uint64(p), p[8:]
			}
		}
		if n, p, err = uvarint(p, "topic length"); err != nil {
			return nil, err
		}
		if n == 0 || n > maxFilterBytes || n > uint64(len(p)) {
			return nil, fmt.Errorf("%w: batch entry %d: topic length %d", ErrBadMessage, i, n)
		}
		e.Topic = string(p[:n])
		p = p[n:]
		if !utf8.ValidString(e.Topic) || strings.ContainsAny(e.Topic, "+#\x00") {
			return nil, fmt.Errorf("%w: batch entry %d: invalid topic", ErrBadMessage, i)
		}
		if n, p, err = uvarint(p, "payload length"); err != nil {
			return nil, err
		}
		if n > uint64(len(p)) || (maxPayload > 0 && n > uint64(maxPayload)) {
			return nil, fmt.Errorf("%w: batch entry %d: payload length %d", ErrBadMessage, i, n)
		}
		e.Payload = p[:n:n]
		p = p[n:]
		out = append(out, e)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after the batch", ErrBadMessage, len(p))
	}
	return out, nil
}
