// interestwire.go owns the layout of the interest messages, snapshot and delta (doc.go
// describes it): their encoder, their decoder, and the limits the decoder enforces. Version 1
// carries plain filters; version 2 adds a share name to every entry, and is written only when
// a message holds a shared subscription, so a cluster that uses none keeps working while its
// agents are upgraded one by one. Version 3 is a version 2 delta stamped with when its agent
// read the first subscription it adds (catchup.go), written only when every peer reads it (its
// status says interest_wire 3).

package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"mosquitto-ha/topictree"
)

// ErrBadMessage marks a control payload that does not decode; it is wrapped with detail.
var ErrBadMessage = errors.New("bridge: bad control message")

const (
	magic          = "MHA1" // version 1: plain filters only
	magicShares    = "MHA2" // version 2: each entry has a share name ("" for a plain filter)
	magicStamped   = "MHA3" // version 3: version 2 with a stamp after the sequence number
	kindSnapshot   = 'S'
	kindDelta      = 'D'
	flagAll        = 1
	opAdd          = '+'
	opRemove       = '-'
	maxFilterBytes = 65535 // [MQTT-4.7.3-3] topic names and filters are at most 65535 bytes
)

// Change is one change of a node's interest: a filter gained (Add) or lost. Group is the share
// name of a shared subscription ("$share/<Group>/<Filter>"), "" for a plain filter.
type Change struct {
	Add    bool
	Filter string
	Group  string
}

// interestWireVersion is the interest message version this agent reads, announced in its
// status (interest_wire).
const interestWireVersion = 3

// interestMsg is a decoded snapshot or delta.
type interestMsg struct {
	Snapshot bool
	Epoch    uint64
	Seq      uint64
	// Stamp is when the sending agent read the first subscription the delta adds, in Unix
	// nanoseconds of its clock (version 3); 0 when unknown.
	Stamp   int64
	All     bool
	Filters []string          // snapshot: plain filters
	Shares  []topictree.Share // snapshot: shared subscriptions (version 2)
	Changes []Change          // delta
}

// interestHeader checks the magic of an interest message and returns its kind, the bytes
// after it and its version (2 and 3 have share names, 3 a stamp).
func interestHeader(p []byte) (kind byte, rest []byte, version int, ok bool) {
	if len(p) < len(magic)+1 {
		return 0, p, 0, false
	}
	switch string(p[:len(magic)]) {
	case magic:
		version = 1
	case magicShares:
		version = 2
	case magicStamped:
		version = 3
	default:
		return 0, p, 0, false
	}
	return p[len(magic)], p[len(magic)+1:], version, true
}

func appendHeader(b []byte, version int, kind byte, epoch, seq uint64, stamp int64, all bool, count int) []byte {
	switch version {
	case 3:
		b = append(b, magicStamped...)
	case 2:
		b = append(b, magicShares...)
	default:
		b = append(b, magic...)
	}
	b = append(b, kind)
	b = binary.AppendUvarint(b, epoch)
	b = binary.AppendUvarint(b, seq)
	if version == 3 {
		b = binary.AppendUvarint(b, uint64(stamp))
	}
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

// encodeSnapshot lays out a snapshot message: version 2 when it holds shared subscriptions.
func encodeSnapshot(epoch, seq uint64, all bool, filters []string, shares ...topictree.Share) []byte {
	v2 := len(shares) > 0
	n := 16
	for _, f := range filters {
		n += len(f) + 4
	}
	for _, s := range shares {
		n += len(s.Group) + len(s.Filter) + 6
	}
	version := 1
	if v2 {
		version = 2
	}
	b := appendHeader(make([]byte, 0, n), version, kindSnapshot, epoch, seq, 0, all, len(filters)+len(shares))
	for _, f := range filters {
		if v2 {
			b = append(b, 0) // no share name
		}
		b = appendString(b, f)
	}
	for _, s := range shares {
		b = appendString(b, s.Group)
		b = appendString(b, s.Filter)
	}
	return b
}

// encodeDelta lays out a delta message: version 3 when stamp is set (only for peers that read
// it), else version 2 when it holds shared subscriptions.
func encodeDelta(epoch, seq uint64, all bool, changes []Change, stamp int64) []byte {
	n := 26
	version := 1
	for _, c := range changes {
		n += len(c.Filter) + len(c.Group) + 7
		if c.Group != "" {
			version = 2
		}
	}
	if stamp > 0 {
		version = 3
	}
	b := appendHeader(make([]byte, 0, n), version, kindDelta, epoch, seq, stamp, all, len(changes))
	for _, c := range changes {
		op := byte(opRemove)
		if c.Add {
			op = opAdd
		}
		b = append(b, op)
		if version >= 2 {
			b = appendString(b, c.Group)
		}
		b = appendString(b, c.Filter)
	}
	return b
}

// decodeInterest parses a snapshot or delta, refusing anything malformed or over the limits.
func decodeInterest(p []byte, lim Limits) (interestMsg, error) {
	var m interestMsg
	kind, p, version, ok := interestHeader(p)
	if !ok {
		return m, fmt.Errorf("%w: no %q, %q or %q header", ErrBadMessage, magic, magicShares, magicStamped)
	}
	v2 := version >= 2
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
	if version == 3 {
		var stamp uint64
		if stamp, p, err = uvarint(p, "stamp"); err != nil {
			return m, err
		}
		if m.Snapshot || stamp > math.MaxInt64 {
			return m, fmt.Errorf("%w: a stamp on a snapshot, or out of range", ErrBadMessage)
		}
		m.Stamp = int64(stamp)
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
		var group string
		if v2 {
			if group, p, err = entryString(p, i, "share name", 0, maxFilterBytes); err != nil {
				return m, err
			}
			if group != "" && topictree.ValidateGroup(group) != nil {
				return m, fmt.Errorf("%w: entry %d: share name %q has '/', '+' or '#'", ErrBadMessage, i, group)
			}
		}
		var f string
		if f, p, err = entryString(p, i, "filter", 1, maxLen); err != nil {
			return m, err
		}
		switch {
		case m.Snapshot && group != "":
			m.Shares = append(m.Shares, topictree.Share{Group: group, Filter: f})
		case m.Snapshot:
			m.Filters = append(m.Filters, f)
		default:
			c.Filter, c.Group = f, group
			m.Changes = append(m.Changes, c)
		}
	}
	if len(p) != 0 {
		return m, fmt.Errorf("%w: %d trailing bytes", ErrBadMessage, len(p))
	}
	return m, nil
}

// entryString reads one length-prefixed string of entry i: min to max bytes of UTF-8 without NUL.
func entryString(p []byte, i uint64, what string, min, max int) (string, []byte, error) {
	n, p, err := uvarint(p, what+" length")
	if err != nil {
		return "", p, err
	}
	if n < uint64(min) || n > uint64(max) || n > uint64(len(p)) {
		return "", p, fmt.Errorf("%w: entry %d: %s length %d (limit %d, %d bytes left)", ErrBadMessage, i, what, n, max, len(p))
	}
	s := string(p[:n])
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return "", p, fmt.Errorf("%w: entry %d: %s is not valid UTF-8 without NUL", ErrBadMessage, i, what)
	}
	return s, p[n:], nil
}

// peekSnapshot reads the epoch, sequence and "all" flag of a snapshot without decoding its
// filters.
func peekSnapshot(p []byte) (epoch, seq uint64, all, ok bool) {
	kind, p, version, ok := interestHeader(p)
	if !ok || kind != kindSnapshot || version == 3 {
		return 0, 0, false, false
	}
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
