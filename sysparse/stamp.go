package sysparse

import "strings"

// maxGuessedStamp bounds the timestamp prefixes considered on an M line while no shape is
// learned. Mosquitto's own form is 10 digits and ": "; strftime forms are about 20 bytes.
// Once an N or E line taught the shape, its length is not bounded.
const maxGuessedStamp = 128

// stampClass maps a timestamp byte to its class, so that the shape of one timestamp matches
// every other timestamp of the same format: digits and spaces (strftime pads %e with a space)
// are '9', ASCII letters (day and month names) are 'a', every other byte stands for itself.
func stampClass(c byte) byte {
	switch {
	case c >= '0' && c <= '9', c == ' ':
		return '9'
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return 'a'
	}
	return c
}

// learn records the shape of prefix (the timestamp and its ": ", or "").
func (p *Parser) learn(prefix string) {
	p.shape = p.shape[:0]
	for i := 0; i < len(prefix); i++ {
		p.shape = append(p.shape, stampClass(prefix[i]))
	}
	p.shapeKnown = true
}

// shapeCut returns the length of line's timestamp prefix if line starts with the learned shape.
func (p *Parser) shapeCut(line string) (int, bool) {
	if !p.shapeKnown {
		return 0, false
	}
	n := len(p.shape)
	if n == 0 {
		return 0, true
	}
	if len(line) < n || line[n-2:n] != ": " {
		return 0, false
	}
	for i := 0; i < n-2; i++ {
		if stampClass(line[i]) != p.shape[i] {
			return 0, false
		}
	}
	return n, true
}

// nextCut returns the next possible end of a timestamp prefix after position from (0 means the
// line has none), or -1. A prefix ends after a ": ".
func nextCut(line string, from int) int {
	if from >= len(line) {
		return -1
	}
	i := strings.Index(line[from:], ": ")
	if i < 0 {
		return -1
	}
	return from + i + 2
}
