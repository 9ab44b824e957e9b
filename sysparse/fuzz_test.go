package sysparse

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

var fuzzTopics = [...]string{TopicNotice, TopicError, TopicSubscribe, TopicUnsubscribe}

// addCapturedSeeds adds every captured line as a seed.
func addCapturedSeeds(f *testing.F, add func(topic, payload string)) {
	f.Helper()
	files, _ := filepath.Glob(filepath.Join(captureDir, "*.log"))
	for _, file := range files {
		for _, c := range readCaptured(f, file) {
			for _, l := range c.lines {
				add(l.topic, l.payload)
			}
		}
	}
}

// FuzzParse: any topic and payload, after any N line and with any known ids, never panics,
// fails only with ErrMalformed, and never loses a subscription: a Subscribed event always
// carries a filter, a widening or readings.
func FuzzParse(f *testing.F) {
	addCapturedSeeds(f, func(topic, payload string) {
		f.Add(byte(4), topic, []byte("1795313233: Client x disconnected."), []byte(payload), "c-clean\nid with spaces")
	})
	f.Fuzz(func(t *testing.T, sel byte, topic string, pre, payload []byte, known string) {
		if int(sel) < len(fuzzTopics) {
			topic = fuzzTopics[sel]
		}
		p := NewParser()
		for _, id := range strings.Split(known, "\n") {
			p.Remember(id)
		}
		if _, err := p.Parse(TopicNotice, pre); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("pre: %v", err)
		}
		ev, err := p.Parse(topic, payload)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error is not ErrMalformed: %v", err)
			}
			return
		}
		checkEvent(t, ev, string(payload))
	})
}

// checkEvent checks what holds for every event.
func checkEvent(t *testing.T, ev Event, payload string) {
	t.Helper()
	if ev.Kind < Ignored || ev.Kind > Expired {
		t.Fatalf("kind %d", ev.Kind)
	}
	if ev.Kind == Subscribed && ev.Filter == "" && ev.Widened == "" && len(ev.Readings) == 0 {
		t.Fatalf("Subscribed without filter, widening or readings: %+v", ev)
	}
	if len(ev.Readings) == 1 {
		t.Fatalf("one reading: %+v", ev)
	}
	if ev.Truncated && len(payload) < LineMax {
		t.Fatalf("Truncated on %d bytes", len(payload))
	}
	if !strings.Contains(payload, ev.ClientID) || !strings.Contains(payload, ev.Filter) || !strings.HasPrefix(payload, ev.Timestamp) {
		t.Fatalf("fields not from the line: %+v", ev)
	}
	if ev.Truncated && (ev.Kind == Subscribed || ev.Kind == Unsubscribed) {
		if !covers(ev.Widened, ev.Filter) {
			t.Fatalf("Widened %q does not cover Filter %q", ev.Widened, ev.Filter)
		}
		for _, r := range ev.Readings {
			if !covers(r.Widened, r.Filter) {
				t.Fatalf("reading: Widened %q does not cover Filter %q", r.Widened, r.Filter)
			}
		}
	}
	if len(ev.Readings) > 0 {
		r := ev.Readings[0]
		if r.ClientID != ev.ClientID || r.QoS != ev.QoS || r.Filter != ev.Filter || r.Widened != ev.Widened {
			t.Fatalf("first reading is not the event's: %+v", ev)
		}
	}
}

// sanitizeID makes s a client id Mosquitto accepts: valid UTF-8 without control characters
// (src: mosquitto_validate_utf8), not empty.
func sanitizeID(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) || r >= 0xFDD0 && r <= 0xFDEF || r&0xFFFE == 0xFFFE {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	if s == "" {
		return "x"
	}
	return s
}

// sanitizeFilter makes s a filter Mosquitto accepts: a valid id-like string whose '+' and '#'
// are whole levels, '#' last.
func sanitizeFilter(s string) string {
	levels := strings.Split(sanitizeID(s), "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && len(l) > 1 {
			l = strings.NewReplacer("+", "", "#", "").Replace(l)
		}
		if l == "#" && i != len(levels)-1 {
			l = "+"
		}
		levels[i] = l
	}
	if f := strings.Join(levels, "/"); f != "" {
		return f
	}
	// [MQTT-4.7.3-1] a filter is at least one character long: Mosquitto refuses "" (e.g. what
	// "##" becomes above), so no broker would ever log it.
	return "x"
}

var fuzzStamps = [...]string{"", "1795313233", "2026-11-22T02:16:57", "Sun Nov 22 02:16:57 2026", "22 11 26: 02"}

// FuzzRoundTrip formats a client id and a filter the way Mosquitto does, with and without a
// timestamp, and parses the line with the id remembered. The result must be the original, or
// Readings that include it, or, for a cut line, a widening that covers the original filter.
// Connect and disconnect lines of the id must give the id back.
func FuzzRoundTrip(f *testing.F) {
	f.Add("c-clean", "a/b/#", byte(1), byte(0), byte(0), true, "")
	f.Add("id with spaces", "topic with/spaces 1/#", byte(1), byte(1), byte(0), false, "")
	f.Add("id 1 x", "a 2 b", byte(0), byte(2), byte(1), true, "u'x')")
	f.Add("1795313233: fake", "$share/g/a 0 b/+", byte(2), byte(1), byte(2), false, "")
	f.Add("ünïcødé-客户端", "töpic/日本/+", byte(2), byte(3), byte(3), true, "alice")
	f.Add("c-long", longFilter, byte(1), byte(1), byte(0), true, "")
	f.Add(longClientID, "x/y", byte(0), byte(2), byte(0), true, "")
	f.Add("a (p2, c0, k5, u'b", "t", byte(0), byte(0), byte(2), true, "c (p2, c1, k60, u'd")
	f.Add("c", "##", byte(1), byte(0), byte(0), true, "") // once became an empty filter
	f.Fuzz(func(t *testing.T, id, filter string, qos, stampSel, mode byte, learn bool, user string) {
		id, filter, qos = sanitizeID(id), sanitizeFilter(filter), qos%3
		stamp := fuzzStamps[int(stampSel)%len(fuzzStamps)]
		p := NewParser()
		p.Remember(id)
		connect := "New client connected from 127.0.0.1:1883 as " + id + " (p2, c1, k60)."
		if user = sanitizeID(user); mode%4 == 3 {
			connect = "New client connected from 127.0.0.1:1883 as " + id + " (p5, c0, k0, u'" + user + "')."
		}
		if learn {
			// Teach the timestamp shape, as the broker's N lines do.
			line := mosqLine(stamp, connect)
			ev, err := p.Parse(TopicNotice, []byte(line))
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			checkEvent(t, ev, line)
		}
		var line, topic string
		switch mode % 4 {
		case 0:
			topic, line = TopicSubscribe, mosqLine(stamp, id+" "+string('0'+qos)+" "+filter)
		case 1:
			topic, line, qos = TopicUnsubscribe, mosqLine(stamp, id+" "+filter), 0
		case 2:
			topic, line = TopicNotice, mosqLine(stamp, "Client "+id+" closed its connection.")
		case 3:
			topic, line = TopicNotice, mosqLine(stamp, connect)
		}
		ev, err := p.Parse(topic, []byte(line))
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		checkEvent(t, ev, line)
		cut := len(line) >= LineMax
		switch mode % 4 {
		case 0, 1:
			if !cut {
				if ev.Truncated || !hasReading(ev, Reading{ClientID: id, QoS: qos, Filter: filter}) {
					t.Fatalf("%q: got %+v", line, ev)
				}
				return
			}
			if !coveredByTruncated(ev, id, qos, filter) {
				t.Fatalf("%q: no reading covers (%q, %d, %q): %+v", line, id, qos, filter, ev)
			}
		case 2, 3:
			if cut {
				if ev.Kind == Ignored && !ev.Truncated || ev.Kind != Ignored && !strings.HasPrefix(id, ev.ClientID) && !strings.HasPrefix(ev.ClientID, id) {
					t.Fatalf("%q: got %+v", line, ev)
				}
				return
			}
			if !hasReading(ev, Reading{ClientID: id}) {
				t.Fatalf("%q: got %+v", line, ev)
			}
			if len(ev.Readings) == 0 && mode%4 == 3 && (ev.Username != user || ev.Protocol != 5 || ev.CleanSession) {
				t.Fatalf("%q: got %+v", line, ev)
			}
		}
	})
}

// coveredByTruncated reports whether some reading of a cut line covers the original
// subscription: the right id and QoS with a widening of the filter, or a reading whose id
// was cut with the widening "#".
func coveredByTruncated(ev Event, id string, qos byte, filter string) bool {
	rs := ev.Readings
	if len(rs) == 0 {
		rs = []Reading{{ClientID: ev.ClientID, QoS: ev.QoS, Filter: ev.Filter, Widened: ev.Widened}}
	}
	for _, r := range rs {
		if r.Widened == "#" || r.ClientID == id && r.QoS == qos && strings.HasPrefix(filter, r.Filter) && covers(r.Widened, filter) {
			return true
		}
	}
	return false
}
