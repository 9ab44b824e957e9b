// relaywire.go owns the relay wire format, both ways: the forward topics a relay travels on, the
// batch layout, the signature, the encoder the peer senders use and the decoder the local
// dispatcher uses (doc.go describes the format).

package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"mosquitto-ha/bridge/mqttconn"
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

// encode builds the forward publish for relays to one peer: the plain forward topic for a
// single QoS 0 relay that is neither retained nor stamped and has no MQTT 5 property to carry,
// a batch otherwise (a QoS 1/2 relay needs its identity, see doc.go), signed when the cluster
// has a secret. Every relay of rs carries the same epoch (the sender splits batches where it
// changes). withProps: the peer reads version 3, and relays keep their MQTT 5 properties
// ("MHB3" when one has some); otherwise they are dropped ("MHB2").
func (w relayWire) encode(rs []*relay, withProps bool) (topic string, payload []byte, qos byte, batch bool) {
	if len(rs) == 1 && rs[0].qos == 0 && !rs[0].retain && rs[0].stamp == 0 && (rs[0].props == nil || !withProps) {
		r := rs[0]
		topic = w.topics.Forward(r.topic, false)
		return topic, w.signer.seal(topic, r.payload), 0, false
	}
	size := 16 + binary.MaxVarintLen64
	for _, r := range rs {
		size += len(r.topic) + len(r.payload) + 12
		if r.stamp != 0 {
			size += 8
		}
		if r.props != nil {
			size += len(r.props.Raw) + 10
		}
		qos = max(qos, r.qos)
		// A retained value must reach the peer even when published at QoS 0 (contract 5): the
		// batch keeps each relay's own QoS for the republish, and is acknowledged at QoS 1.
		if r.retain {
			qos = max(qos, 1)
		}
	}
	if w.signer != nil {
		size += tagSize
	}
	topic = w.topics.Batch(w.node)
	payload = appendBatch(make([]byte, 0, size), rs[0].epoch, rs, withProps)
	if w.signer != nil {
		payload = w.signer.tag(payload, topic, payload)
	}
	return topic, payload, qos, true
}

// largeRelay is the payload size from which a relay alone in its batch is not copied into it
// (encodeLarge): a copy of a large message costs its size in memory for as long as it is in
// flight.
const largeRelay = 64 << 10

// encodeLarge is encode for a single relay with a large payload, without copying it: the forward
// publish's payload is head, r.payload, tail (the tag, or nil).
func (w relayWire) encodeLarge(r *relay, withProps bool) (topic string, head, tail []byte, qos byte) {
	qos = r.qos
	if r.retain {
		qos = max(qos, 1)
	}
	head = appendBatch(make([]byte, 0, 40+len(r.topic)), r.epoch, []*relay{{topic: r.topic, qos: r.qos,
		retain: r.retain, mid: r.mid, repeat: r.repeat, stamp: r.stamp, props: r.props}}, withProps)
	head = head[:len(head)-1] // the empty payload's length: replaced by the real one
	head = binary.AppendUvarint(head, uint64(len(r.payload)))
	topic = w.topics.Batch(w.node)
	if w.signer != nil {
		tail = w.signer.tagParts(nil, topic, head, r.payload)
	}
	return topic, head, tail, qos
}

// relayWireVersion is the batch version this agent reads and announces in its status
// (relay_wire); it reads versions 1 to 3, and writes to each peer what that peer announced.
const relayWireVersion = 3

// encodeV1 is encode for a peer whose agent reads version 1 only (an earlier release, during a
// rolling upgrade): the plain forward topics for one relay (`$forward-r/T` for a retained one at
// QoS 1 or 2), an "MHB1" batch otherwise. Its relays carry no identity and no stamp.
func (w relayWire) encodeV1(rs []*relay) (topic string, payload []byte, qos byte, batch bool) {
	if len(rs) == 1 && !(rs[0].retain && rs[0].qos == 0) {
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
	b := append(make([]byte, 0, size), batchMagicV1...)
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		flags := r.qos & flagQoS
		if r.retain {
			flags |= flagRetain
		}
		b = append(b, flags)
		b = appendString(b, r.topic)
		b = binary.AppendUvarint(b, uint64(len(r.payload)))
		b = append(b, r.payload...)
	}
	topic = w.topics.Batch(w.node)
	if w.signer != nil {
		b = w.signer.tag(b, topic, b)
	}
	return topic, b, qos, true
}

// errOversized marks a relay whose payload exceeds Limits.MaxPayloadBytes.
var errOversized = errors.New("bridge: relay over the payload limit")

// relaySource is where the relays of one forward publish come from: the origin node (from the
// batch topic) and the epoch of its local session; both empty for a single plain relay, which
// has no identity.
type relaySource struct {
	origin string
	epoch  uint64
}

// decode recognises a relay addressed to this node, received on topic at qos, and returns the
// publishes it carries (payloads alias payload) and their source. isRelay is false for any other
// topic. The error wraps ErrForged (signature), errOversized (a single relay over maxPayload) or
// ErrBadMessage (a batch that does not decode). A batch's relays over maxPayload are returned
// with the others: the caller drops those alone (withinLimit).
func (w relayWire) decode(topic string, qos byte, payload []byte, maxPayload int) (entries []batchEntry, src relaySource, isRelay bool, err error) {
	if w.topics.IsBatch(topic) {
		p, err := w.signer.open(topic, payload)
		if err != nil {
			return nil, src, true, err
		}
		src.origin = topic[len(w.topics.forwardBatch):]
		src.epoch, entries, err = decodeBatch(p, 0)
		return entries, src, true, err
	}
	orig, retained, ok := w.topics.Unforward(topic)
	if !ok {
		return nil, src, false, nil
	}
	p, err := w.signer.open(topic, payload)
	if err != nil {
		return nil, src, true, err
	}
	if len(p) > maxPayload {
		return nil, src, true, fmt.Errorf("%w: %d bytes", errOversized, len(p))
	}
	return []batchEntry{{Topic: orig, Payload: p, QoS: qos, Retain: retained}}, src, true, nil
}

// withinLimit returns the entries whose payload is at most maxPayload bytes (0: no limit), in
// place, and how many it left out: one oversized publish in a batch costs that publish alone.
func withinLimit(entries []batchEntry, maxPayload int) ([]batchEntry, int) {
	if maxPayload <= 0 {
		return entries, 0
	}
	kept := entries[:0]
	for _, e := range entries {
		if len(e.Payload) <= maxPayload {
			kept = append(kept, e)
		}
	}
	return kept, len(entries) - len(kept)
}

// Batch magics: version 3 is version 2 with MQTT 5 properties (flag bit 5), written only for
// a batch that carries some, to a peer that reads it; version 2 otherwise; version 1 (no epoch,
// mid or stamp) is still read, from agents of an earlier release during a rolling upgrade.
const (
	batchMagicV3 = "MHB3"
	batchMagic   = "MHB2"
	batchMagicV1 = "MHB1"
)

// Batch entry flag bits.
const (
	flagQoS     = 3
	flagRetain  = 1 << 2
	flagRepeat  = 1 << 3 // may have been sent before: dedupe may drop it
	flagStamp   = 1 << 4 // an 8-byte retained stamp follows the mid
	flagProps   = 1 << 5 // version 3: MQTT 5 properties follow the stamp
	flagsKnown3 = flagQoS | flagRetain | flagRepeat | flagStamp | flagProps
	flagsKnown  = flagQoS | flagRetain | flagRepeat | flagStamp
	flagsKnown1 = flagQoS | flagRetain // version 1
)

// relayProps are the MQTT 5 properties of a relayed message and when its agent read it: the
// Message Expiry Interval counts down from then.
type relayProps struct {
	mqttconn.Props
	received int64 // Unix nanoseconds
}

// propsOf is m's properties for a relay, nil when it has none.
func propsOf(m *message) *relayProps {
	p := m.Props()
	if p.Empty() {
		return nil
	}
	return &relayProps{Props: p, received: m.Received}
}

// remaining is p as it stands at now: the Message Expiry Interval less the whole seconds since
// the message was read, as Mosquitto counts a stored message's expiry in whole seconds; false
// when it has expired (a message that expires on the way is not delivered).
func remaining(p mqttconn.Props, received, now int64) (mqttconn.Props, bool) {
	if p.Expiry == 0 {
		return p, true
	}
	gone := (now - received) / int64(time.Second)
	if gone < 0 {
		gone = 0
	}
	if gone >= int64(p.Expiry) {
		return p, false
	}
	p.Expiry -= uint32(gone)
	return p, true
}

// batchEntry is one relay inside a batch.
type batchEntry struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// MID is the packet id the origin broker delivered the publish with to its agent (0 for
	// QoS 0); Repeat says the relay may have been sent before; Stamp is a retained write's
	// clock (0: none).
	MID    uint16
	Repeat bool
	Stamp  uint64
	// props are its MQTT 5 properties (version 3), the expiry as it stood when sent; nil: none
	// (a pointer keeps the entries of a batch without properties as small as before).
	props *mqttconn.Props
}

// Props are the entry's MQTT 5 properties.
func (e *batchEntry) Props() mqttconn.Props {
	if e.props == nil {
		return mqttconn.Props{}
	}
	return *e.props
}

// appendBatch lays out relays as one batch payload (version 2, or 3 when withProps and a relay
// has MQTT 5 properties):
//
//	"MHB2" or "MHB3", epoch uvarint, count uvarint, then per relay: flags byte (bits 0-1 QoS,
//	bit 2 retain, bit 3 repeat, bit 4 stamp, bit 5 props), mid uvarint, [stamp 8 bytes big
//	endian when bit 4], [props length uvarint and the MQTT 5 properties when bit 5], topic
//	length uvarint, topic, payload length uvarint, payload
func appendBatch(b []byte, epoch uint64, rs []*relay, withProps bool) []byte {
	magic, now := batchMagic, int64(0)
	if withProps {
		for _, r := range rs {
			if r.props != nil {
				magic, now = batchMagicV3, time.Now().UnixNano()
				break
			}
		}
	}
	b = append(b, magic...)
	b = binary.AppendUvarint(b, epoch)
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		flags := r.qos & flagQoS
		if r.retain {
			flags |= flagRetain
		}
		if r.repeat {
			flags |= flagRepeat
		}
		if r.stamp != 0 {
			flags |= flagStamp
		}
		withThese := now != 0 && r.props != nil
		if withThese {
			flags |= flagProps
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(r.mid))
		if r.stamp != 0 {
			b = binary.BigEndian.AppendUint64(b, r.stamp)
		}
		if withThese {
			p, ok := remaining(r.props.Props, r.props.received, now)
			if !ok {
				p.Expiry = 1 // expired since the sender's check: the last second
			}
			b = mqttconn.AppendProps(b, p) // its length is a Variable Byte Integer: a uvarint
		}
		b = appendString(b, r.topic)
		b = binary.AppendUvarint(b, uint64(len(r.payload)))
		b = append(b, r.payload...)
	}
	return b
}

// decodeBatch parses a batch of version 2 or 1 and returns its epoch (0 for version 1) and
// entries; payloads alias p.
func decodeBatch(p []byte, maxPayload int) (epoch uint64, out []batchEntry, err error) {
	if len(p) < len(batchMagic) {
		return 0, nil, fmt.Errorf("%w: no %q header", ErrBadMessage, batchMagic)
	}
	magic := string(p[:len(batchMagic)])
	v2 := magic == batchMagic || magic == batchMagicV3
	if !v2 && magic != batchMagicV1 {
		return 0, nil, fmt.Errorf("%w: no %q header", ErrBadMessage, batchMagic)
	}
	p = p[len(batchMagic):]
	known := byte(flagsKnown1)
	if v2 {
		known = flagsKnown
		if magic == batchMagicV3 {
			known = flagsKnown3
		}
		if epoch, p, err = uvarint(p, "epoch"); err != nil {
			return 0, nil, err
		}
	}
	count, p, err := uvarint(p, "count")
	if err != nil {
		return 0, nil, err
	}
	// Each entry takes at least 3 bytes: a huge count cannot make a huge allocation.
	if count == 0 || count > uint64(len(p)/3) {
		return 0, nil, fmt.Errorf("%w: batch count %d", ErrBadMessage, count)
	}
	out = make([]batchEntry, 0, count)
	for i := uint64(0); i < count; i++ {
		if len(p) < 1 {
			return 0, nil, fmt.Errorf("%w: batch truncated at entry %d", ErrBadMessage, i)
		}
		flags := p[0]
		e := batchEntry{QoS: flags & flagQoS, Retain: flags&flagRetain != 0, Repeat: flags&flagRepeat != 0}
		if flags&^known != 0 || e.QoS == 3 {
			return 0, nil, fmt.Errorf("%w: batch entry %d: bad flags %#x", ErrBadMessage, i, flags)
		}
		p = p[1:]
		var n uint64
		if v2 {
			if n, p, err = uvarint(p, "mid"); err != nil {
				return 0, nil, err
			}
			if n > 65535 { // [MQTT-2.3.1] a packet id is 16 bits
				return 0, nil, fmt.Errorf("%w: batch entry %d: mid %d", ErrBadMessage, i, n)
			}
			e.MID = uint16(n)
			if flags&flagStamp != 0 {
				if len(p) < 8 {
					return 0, nil, fmt.Errorf("%w: batch entry %d: truncated stamp", ErrBadMessage, i)
				}
				e.Stamp = binary.BigEndian.Uint64(p)
				if e.Stamp == 0 {
					return 0, nil, fmt.Errorf("%w: batch entry %d: zero stamp", ErrBadMessage, i)
				}
				p = p[8:]
			}
		}
		if flags&flagProps != 0 {
			if n, p, err = uvarint(p, "props length"); err != nil {
				return 0, nil, err
			}
			if n == 0 || n > uint64(len(p)) {
				return 0, nil, fmt.Errorf("%w: batch entry %d: props length %d", ErrBadMessage, i, n)
			}
			// Checked here: a property the local broker refuses would end its connection.
			pr, err := mqttconn.SplitPublishProps(p[:n:n])
			if err != nil {
				return 0, nil, fmt.Errorf("%w: batch entry %d: %w", ErrBadMessage, i, err)
			}
			if !pr.Empty() {
				e.props = &pr
			}
			p = p[n:]
		}
		if n, p, err = uvarint(p, "topic length"); err != nil {
			return 0, nil, err
		}
		if n == 0 || n > maxFilterBytes || n > uint64(len(p)) {
			return 0, nil, fmt.Errorf("%w: batch entry %d: topic length %d", ErrBadMessage, i, n)
		}
		e.Topic = string(p[:n])
		p = p[n:]
		if !utf8.ValidString(e.Topic) || strings.ContainsAny(e.Topic, "+#\x00") {
			return 0, nil, fmt.Errorf("%w: batch entry %d: invalid topic", ErrBadMessage, i)
		}
		if n, p, err = uvarint(p, "payload length"); err != nil {
			return 0, nil, err
		}
		if n > uint64(len(p)) || (maxPayload > 0 && n > uint64(maxPayload)) {
			return 0, nil, fmt.Errorf("%w: batch entry %d: payload length %d", ErrBadMessage, i, n)
		}
		e.Payload = p[:n:n]
		p = p[n:]
		out = append(out, e)
	}
	if len(p) != 0 {
		return 0, nil, fmt.Errorf("%w: %d trailing bytes after the batch", ErrBadMessage, len(p))
	}
	return epoch, out, nil
}
