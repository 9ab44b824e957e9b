package sysparse

import "strings"

// validFilter reports whether f can be (the start of) a topic filter Mosquitto accepted: it
// refuses SUBSCRIBE and UNSUBSCRIBE filters that break these rules before it logs them, so a
// split that yields such a filter is not a reading. Every prefix of a valid filter passes too,
// so the check also holds for a filter cut by the log buffer.
//
// [MQTT-4.7.1-2] '#' must be the whole of the last level.
// [MQTT-4.7.1-3] '+' must be the whole of its level.
func validFilter(f string) bool {
	for len(f) > 0 {
		level, rest, more := strings.Cut(f, "/")
		if strings.ContainsAny(level, "#+") {
			if len(level) != 1 || (level == "#" && more) {
				return false
			}
		}
		if !more {
			break
		}
		f = rest
	}
	return true
}

// Widen returns the safe widening of a filter whose end was cut: its complete levels and "#",
// so that the result covers every filter that starts with f. It keeps a $share/<group>/
// prefix when the group name is complete, and returns "#" when not even the first level (or
// the group name) is complete.
func Widen(f string) string {
	last := strings.LastIndexByte(f, '/')
	if last < 0 {
		return "#"
	}
	if strings.HasPrefix(f, "$share/") && strings.IndexByte(f[len("$share/"):], '/') < 0 {
		return "#"
	}
	return f[:last+1] + "#"
}

// suffixFilters answers validFilter(line[k:]) for every k in O(1) after one pass over the line,
// so that checking every split of a line stays linear. Its slices are reused between lines.
type suffixFilters struct {
	line     string
	nextSep  []int32 // index of the first '/' at or after i, or len(line)
	nextWild []int32 // index of the first '+' or '#' at or after i, or len(line)
	lastBad  int     // start of the last level of the line that breaks the rules, or -1
}

func (s *suffixFilters) reset(line string) {
	n := len(line)
	s.line = line
	s.nextSep = grow(s.nextSep, n+1)
	s.nextWild = grow(s.nextWild, n+1)
	sep, wild := int32(n), int32(n)
	s.nextSep[n], s.nextWild[n] = sep, wild
	for i := n - 1; i >= 0; i-- {
		switch line[i] {
		case '/':
			sep = int32(i)
		case '+', '#':
			wild = int32(i)
		}
		s.nextSep[i], s.nextWild[i] = sep, wild
	}
	s.lastBad = -1
	for start := 0; start <= n; {
		end := int(s.nextSep[start])
		if !validLevel(line, start, end) {
			s.lastBad = start
		}
		start = end + 1
	}
}

// validLevel reports whether line[start:end] is a valid level of a filter that ends at len(line).
func validLevel(line string, start, end int) bool {
	if end-start == 1 && line[start] == '#' {
		return end == len(line)
	}
	return end-start == 1 && line[start] == '+' || strings.IndexAny(line[start:end], "+#") < 0
}

// valid reports whether line[k:] passes validFilter.
func (s *suffixFilters) valid(k int) bool {
	end := int(s.nextSep[k])
	if s.lastBad > end {
		return false // a whole level after the first one is bad
	}
	if int(s.nextWild[k]) >= end {
		return true
	}
	if end-k != 1 {
		return false
	}
	return s.line[k] == '+' || end == len(s.line)
}

func grow(b []int32, n int) []int32 {
	if cap(b) < n {
		return make([]int32, n)
	}
	return b[:n]
}
