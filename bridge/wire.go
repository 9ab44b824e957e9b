package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrBadMessage marks a control payload that does not decode; it is wrapped with detail.
var ErrBadMessage = errors.New("bridge: bad control message")

const (
	magic          = "MHA1"
	kindSnapshot   = 'S'
	kindDelta      = 'D'
	flagAll        = 1
	opAdd          = '+'
	opRemove       = '-'
	maxFilterBytes = 65535 // [MQTT-4.7.3-3] topic names and filters are at most 65535 bytes
)

// Change is one change of a node's interest: a filter gained (Add) or lost.
type Change struct {
	Add    bool
	Filter string
}

// interestMsg is a decoded snapshot or delta.
type interestMsg struct {
	Snapshot bool
	Epoch    uint64
	Seq      uint64
	All      bool
	Filters  []string // snapshot
	Changes  []Change // delta
}

func appendHeader(b []byte, kind byte, epoch, seq uint64, all bool, count int) []byte {
	b = append(b, magic...)
	b = append(b, kind)
	b = binary.AppendUvarint(b, epoch)
	b = binary.AppendUvarint(b, seq)
	var flags byte
	if all {
		flags |= flagAll
	}
	b = append(b, flags)
	return binary.AppendUvarint(b, uint64(count))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encodeSnapshot lays out a snapshot message.
func encodeSnapshot(epoch, seq uint64, all bool, filters []string) []byte {
	n := 16
	for _, f := range filters {
		n += len(f) + 3
	}
	b := appendHeader(make([]byte, 0, n), kindSnapshot, epoch, seq, all, len(filters))
	for _, f := range filters {
		b = appendString(b, f)
	}
	return b
}

// encodeDelta lays out a delta message.
func encodeDelta(epoch, seq uint64, all bool, changes []Change) []byte {
	n := 16
	for _, c := range changes {
		n += len(c.Filter) + 4
	}
	b := appendHeader(make([]byte, 0, n), kindDelta, epoch, seq, all, len(changes))
	for _, c := range changes {
		op := byte(opRemove)
		if c.Add {
			op = opAdd
		}
		b = append(b, op)
		b = appendString(b, c.Filter)
	}
	return b
}

// Limits bound what peers may send. Whatever exceeds them is refused, logged and counted, and
// the agent keeps running; a peer whose interest was refused is sent everything (never less).
type Limits struct {
	// MaxFilters is the most filters a peer may hold (default 1,048,576).
	MaxFilters int
	// MaxFilterBytes is the longest filter accepted (default 65535, the MQTT limit).
	MaxFilterBytes int
	// MaxInterestBytes is the largest interest message accepted (default 64 MiB).
	MaxInterestBytes int
	// MaxPayloadBytes is the largest relayed payload republished (default 268435455, the MQTT
	// limit).
	MaxPayloadBytes int
}

// decodeInterest parses a snapshot or delta, refusing anything malformed or over the limits.
func decodeInterest(p []byte, lim Limits) (interestMsg, error) {
	var m interestMsg
	if len(p) < len(magic)+1 || string(p[:len(magic)]) != magic {
		return m, fmt.Errorf("%w: no %q header", ErrBadMessage, magic)
	}
	kind := p[len(magic)]
	p = p[len(magic)+1:]
	switch kind {
	case kindSnapshot:
		m.Snapshot = true
	case kindDelta:
	default:
		return m, fmt.Errorf("%w: unknown kind %q", ErrBadMessage, kind)
	}
	var err error
	if m.Epoch, p, err = uvarint(p, "epoch"); err != nil {
		return m, err
	}
	if m.Seq, p, err = uvarint(p, "seq"); err != nil {
		return m, err
	}
	if len(p) < 1 {
		return m, fmt.Errorf("%w: truncated before flags", ErrBadMessage)
	}
	m.All = p[0]&flagAll != 0
	p = p[1:]
	count, p, err := uvarint(p, "count")
	if err != nil {
		return m, err
	}
	if lim.MaxFilters > 0 && count > uint64(lim.MaxFilters) {
		return m, fmt.Errorf("%w: %d entries exceed the limit of %d", ErrBadMessage, count, lim.MaxFilters)
	}
	// Every entry takes at least 2 bytes: a count larger than that is a lie.
	if count > uint64(len(p)) {
		return m, fmt.Errorf("%w: count %d exceeds payload", ErrBadMessage, count)
	}
	maxLen := maxFilterBytes
	if lim.MaxFilterBytes > 0 && lim.MaxFilterBytes < maxLen {
		maxLen = lim.MaxFilterBytes
	}
	if m.Snapshot {
		m.Filters = make([]string, 0, count)
	} else {
		m.Changes = make([]Change, 0, count)
	}
	for i := uint64(0); i < count; i++ {
		var c Change
		if !m.Snapshot {
			if len(p) < 1 {
				return m, fmt.Errorf("%w: truncated at entry %d", ErrBadMessage, i)
			}
			switch p[0] {
			case opAdd:
				c.Add = true
			case opRemove:
			default:
				return m, fmt.Errorf("%w: entry %d: unknown op %q", ErrBadMessage, i, p[0])
			}
			p = p[1:]
		}
		var n uint64
		if n, p, err = uvarint(p, "filter length"); err != nil {
			return m, err
		}
		if n == 0 || n > uint64(maxLen) || n > uint64(len(p)) {
			return m, fmt.Errorf("%w: entry %d: filter length %d (limit %d, %d bytes left)", ErrBadMessage, i, n, maxLen, len(p))
		}
		f := string(p[:n])
		p = p[n:]
		if !utf8.ValidString(f) || strings.IndexByte(f, 0) >= 0 {
			return m, fmt.Errorf("%w: entry %d: filter is not valid UTF-8 without NUL", ErrBadMessage, i)
		}
		if m.Snapshot {
			m.Filters = append(m.Filters, f)
		} else {
			c.Filter = f
			m.Changes = append(m.Changes, c)
		}
	}
	if len(p) != 0 {
		return m, fmt.Errorf("%w: %d trailing bytes", ErrBadMessage, len(p))
	}
	return m, nil
}

// peekSnapshot reads the epoch, sequence and "all" flag of a snapshot without decoding its
// filters.
func peekSnapshot(p []byte) (epoch, seq uint64, all, ok bool) {
	if len(p) < len(magic)+1 || string(p[:len(magic)]) != magic || p[len(magic)] != kindSnapshot {
		return 0, 0, false, false
	}
	p = p[len(magic)+1:]
	var err error
	if epoch, p, err = uvarint(p, "epoch"); err != nil {
		return 0, 0, false, false
	}
	if seq, p, err = uvarint(p, "seq"); err != nil || len(p) < 1 {
		return 0, 0, false, false
	}
	return epoch, seq, p[0]&flagAll != 0, true
}

func uvarint(p []byte, what string) (uint64, []byte, error) {
	v, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, p, fmt.Errorf("%w: bad %s", ErrBadMessage, what)
	}
	return v, p[n:], nil
}

// batchMagic starts a batch of relays.
const batchMagic = "MHB1"

// batchEntry is one relay inside a batch.
type batchEntry struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// appendBatch lays out relays as one batch payload:
//
//	"MHB1", count uvarint, then per relay: flags byte (bits 0-1 QoS, bit 2 retain),
//	topic length uvarint, topic, payload length uvarint, payload
func appendBatch(b []byte, rs []*relay) []byte {
	b = append(b, batchMagic...)
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		flags := r.qos & 3
		if r.retain {
			flags |= 4
		}
		b = append(b, flags)
		b = appendString(b, r.topic)
		b = binary.AppendUvarint(b, uint64(len(r.payload)))
		b = append(b, r.payload...)
	}
	return b
}

// decodeBatch parses a batch; payloads alias p.
func decodeBatch(p []byte, maxPayload int) ([]batchEntry, error) {
	if len(p) < len(batchMagic) || string(p[:len(batchMagic)]) != batchMagic {
		return nil, fmt.Errorf("%w: no %q header", ErrBadMessage, batchMagic)
	}
	p = p[len(batchMagic):]
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
		e := batchEntry{QoS: p[0] & 3, Retain: p[0]&4 != 0}
		if p[0]&^7 != 0 || e.QoS == 3 {
			return nil, fmt.Errorf("%w: batch entry %d: bad flags %#x", ErrBadMessage, i, p[0])
		}
		p = p[1:]
		var n uint64
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

// Topics are the control and forward topic names of one cluster.
type Topics struct {
	cluster       string
	forward       string // prefix of non-retained relays
	forwardRetain string // prefix of retained relays and deletions
	forwardBatch  string // topic prefix of batches of relays
}

// NewTopics derives the topic names from the cluster name and forward prefix ("$forward/").
func NewTopics(cluster, forwardPrefix string) Topics {
	base := strings.TrimSuffix(forwardPrefix, "/")
	return Topics{
		cluster:       cluster,
		forward:       forwardPrefix,
		forwardRetain: base + "-r/",
		forwardBatch:  base + "-b/",
	}
}

// Batch is the topic batches from node travel on.
func (t Topics) Batch(node string) string { return t.forwardBatch + node }

// IsBatch recognises a batch topic.
func (t Topics) IsBatch(topic string) bool { return strings.HasPrefix(topic, t.forwardBatch) }

// Interest is the retained snapshot topic of node.
func (t Topics) Interest(node string) string { return "$HA/" + t.cluster + "/" + node + "/interest" }

// InterestDelta is the delta topic of node.
func (t Topics) InterestDelta(node string) string { return t.Interest(node) + "/delta" }

// InterestFilter matches both interest topics of node ("a/#" matches "a").
func (t Topics) InterestFilter(node string) string { return t.Interest(node) + "/#" }

// Status is the retained health message of node's agent.
func (t Topics) Status(node string) string { return "$HA/" + t.cluster + "/" + node + "/status" }

// StatusFilter matches the status of every agent of the cluster.
func (t Topics) StatusFilter() string { return "$HA/" + t.cluster + "/+/status" }

// Control is the prefix of every control topic of the cluster.
func (t Topics) Control() string { return "$HA/" + t.cluster + "/" }

// ClientPrefix starts the client id of every agent connection of the cluster.
func (t Topics) ClientPrefix() string { return "mha-" + t.cluster + "-" }

// The client ids of the agents' connections. Each broker sees, besides its own agent's local
// connection, a link and retained pulls from every peer agent, and its own agent's readers.

// LocalID is node's agent's connection to its own broker.
func (t Topics) LocalID(node string) string { return t.ClientPrefix() + node + "-local" }

// LinkID is from's agent's connection to to's broker.
func (t Topics) LinkID(from, to string) string { return t.ClientPrefix() + from + "-to-" + to }

// PullID is from's agent's retained pull on to's broker.
func (t Topics) PullID(from, to string) string { return t.ClientPrefix() + from + "-pull-" + to }

// ReaderID is node's agent's reader of its own broker's retained messages, for a pull from peer.
func (t Topics) ReaderID(node, peer string) string {
	return t.ClientPrefix() + node + "-retained-" + peer
}

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

// IsReserved reports whether a topic belongs to the cluster's own traffic (never relayed).
func (t Topics) IsReserved(topic string) bool {
	_, _, fwd := t.Unforward(topic)
	return fwd || t.IsBatch(topic) || strings.HasPrefix(topic, t.Control()) || strings.HasPrefix(topic, "$SYS/")
}
