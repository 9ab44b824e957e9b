package sysparse

import "fmt"

// mcand is one reading of an M line.
type mcand struct {
	cut    int // length of the timestamp prefix, ": " included
	id     string
	qos    byte
	filter string
	idCut  bool // the client id itself was cut: nothing is known about the filter
}

func (c mcand) widened() string {
	if c.idCut {
		return "#"
	}
	return Widen(c.filter)
}

// parseM parses a line of .../M/subscribe ("<id> <qos> <filter>") or .../M/unsubscribe ("<id>
// <filter>"). Mosquitto formats them with "%s %d %s" and "%s %s": a space in the id or the
// filter makes several splits possible, and so does a ": " when the timestamp shape is unknown.
//
// The readings are every split at " <0|1|2> " (subscribe) or " " (unsubscribe) with a
// non-empty id and a filter that passes validFilter, after the learned timestamp prefix or,
// when none is learned or no split fits it, after each possible prefix of up to
// maxGuessedStamp bytes. If there is only one reading, or exactly one has a known client id,
// that is the one; otherwise the Event carries them all.
//
// A line of LineMax bytes may be cut: its filter may be incomplete or missing, and the client
// id itself may be cut, which adds a reading with an empty Filter and Widened "#".
//
// The readings are counted in a first pass and only stored when the line stays ambiguous, so a
// resolved line costs no allocation besides the line itself. The number of readings is bounded
// by the line: at most one per byte after each considered prefix.
func (p *Parser) parseM(kind Kind, line string) (Event, error) {
	if line == "" {
		return Event{}, fmt.Errorf("%w: empty %s line", ErrMalformed, kind)
	}
	trunc := len(line) >= LineMax
	sub := kind == Subscribed
	p.filters.reset(line)
	first, shaped := p.shapeCut(line)

	var n, known int
	var firstC, knownC mcand
	p.candidates(line, sub, trunc, first, shaped, func(c mcand) {
		if n == 0 {
			firstC = c
		}
		n++
		if !c.idCut && p.Known(c.id) {
			known++
			knownC = c
		}
	})
	if n == 0 {
		want := `"<id> <filter>"`
		if sub {
			want = `"<id> <qos> <filter>"`
		}
		return Event{}, fmt.Errorf("%w: %s line %q: no %s split", ErrMalformed, kind, line, want)
	}
	ev := Event{Kind: kind, Truncated: trunc}
	c := firstC
	switch {
	case n == 1:
	case known == 1:
		c = knownC
	default:
		ev.Readings = make([]Reading, 0, n)
		p.candidates(line, sub, trunc, first, shaped, func(c mcand) {
			r := Reading{ClientID: c.id, QoS: c.qos, Filter: c.filter}
			if trunc {
				r.Widened = c.widened()
			}
			ev.Readings = append(ev.Readings, r)
		})
	}
	ev.ClientID, ev.QoS, ev.Filter, ev.Timestamp = c.id, c.qos, c.filter, timestamp(line, c.cut)
	if trunc {
		ev.Widened = c.widened()
	}
	return ev, nil
}

// candidates calls visit for every reading of line, always in the same order: the splits
// after the learned prefix (shaped, first bytes); if there are none, the splits after every
// possible prefix; then, for a cut line, the reading whose id was cut.
func (p *Parser) candidates(line string, sub, trunc bool, first int, shaped bool, visit func(mcand)) {
	found := 0
	if shaped {
		found = p.splits(line, first, sub, trunc, visit)
	}
	if found == 0 {
		// No shape learned yet, or the broker's timestamp changed: every prefix.
		for cut := 0; cut >= 0 && cut <= maxGuessedStamp; cut = nextCut(line, cut) {
			p.splits(line, cut, sub, trunc, visit)
		}
	}
	if trunc {
		visit(mcand{cut: first, id: line[first:], idCut: true})
	}
}

// splits visits the readings of line after a timestamp prefix of cut bytes and returns how
// many there were.
func (p *Parser) splits(line string, cut int, sub, trunc bool, visit func(mcand)) int {
	s := line[cut:]
	n := 0
	if sub {
		for i := 1; i+1 < len(s); i++ {
			if s[i] != ' ' || s[i+1] < '0' || s[i+1] > '2' {
				continue
			}
			k := cut + i + 3 // where the filter starts in line
			switch {
			case i+2 < len(s) && s[i+2] == ' ':
			case i+2 == len(s) && trunc: // cut right after the QoS
				k = len(line)
			default:
				continue
			}
			if (k < len(line) || trunc) && p.filters.valid(k) {
				visit(mcand{cut: cut, id: s[:i], qos: s[i+1] - '0', filter: line[k:]})
				n++
			}
		}
		return n
	}
	for i := 1; i < len(s); i++ {
		k := cut + i + 1
		if s[i] == ' ' && (k < len(line) || trunc) && p.filters.valid(k) {
			visit(mcand{cut: cut, id: s[:i], filter: line[k:]})
			n++
		}
	}
	return n
}
