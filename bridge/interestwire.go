// interestwire.go owns the layout of the interest messages, snapshot and delta (doc.go
// describes it): their encoder, their decoder, and the limits the decoder enforces.

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
