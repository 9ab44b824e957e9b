package sysparse

import (
	"reflect"
	"strings"
	"testing"
)

// mosqLine formats a log line the way Mosquitto 2.0.11 does (src/logging.c): the timestamp
// and ": " when stamp is not "", then the message, all cut to LineMax bytes.
func mosqLine(stamp, msg string) string {
	line := msg
	if stamp != "" {
		line = stamp + ": " + msg
	}
	if len(line) > LineMax {
		line = line[:LineMax]
	}
	return line
}

// covers reports whether the widened filter w covers every filter that starts like f: w is
// f's complete levels (a prefix of f ending in '/') and "#", or just "#".
func covers(w, f string) bool {
	prefix, ok := strings.CutSuffix(w, "#")
	return ok && (prefix == "" || strings.HasSuffix(prefix, "/")) && strings.HasPrefix(f, prefix)
}

func parse(t *testing.T, p *Parser, topic, payload string) Event {
	t.Helper()
	ev, err := p.Parse(topic, []byte(payload))
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", topic, payload, err)
	}
	return ev
}

func assertEvent(t *testing.T, got, want Event) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event\n got %+v\nwant %+v", got, want)
	}
}

// hasReading reports whether ev (resolved or with Readings) includes the reading r.
func hasReading(ev Event, r Reading) bool {
	if len(ev.Readings) == 0 {
		return ev.ClientID == r.ClientID && ev.QoS == r.QoS && ev.Filter == r.Filter
	}
	for _, x := range ev.Readings {
		if x.ClientID == r.ClientID && x.QoS == r.QoS && x.Filter == r.Filter {
			return true
		}
	}
	return false
}
