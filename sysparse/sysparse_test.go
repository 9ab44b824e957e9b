package sysparse

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseNotice(t *testing.T) {
	tests := []struct {
		line string
		want Event
	}{
		{"New client connected from 127.0.0.1:38162 as c-clean (p2, c1, k60).",
			Event{Kind: Connected, ClientID: "c-clean", Protocol: ProtocolMQTT311, CleanSession: true, KeepAlive: 60}},
		{"New client connected from 127.0.0.1:34982 as c-dup2 (p2, c0, k60).",
			Event{Kind: Connected, ClientID: "c-dup2", Protocol: 2, KeepAlive: 60}},
		{"New client connected from 127.0.0.1:38184 as c-user (p2, c1, k60, u'alice').",
			Event{Kind: Connected, ClientID: "c-user", Protocol: 2, CleanSession: true, KeepAlive: 60, Username: "alice"}},
		{"New bridge connected from 127.0.0.1:38224 as c-bridge (p2, c1, k60).",
			Event{Kind: Connected, ClientID: "c-bridge", Protocol: 2, CleanSession: true, KeepAlive: 60, Bridge: true}},
		{"New client connected from 127.0.0.1:38348 as c-v5 (p5, c1, k30).",
			Event{Kind: Connected, ClientID: "c-v5", Protocol: ProtocolMQTT5, CleanSession: true, KeepAlive: 30}},
		{"New client connected from ::1:38348 as c-v31 (p1, c1, k0).",
			Event{Kind: Connected, ClientID: "c-v31", Protocol: ProtocolMQTT31, CleanSession: true}},
		{"New client connected from 127.0.0.1:38372 as id with spaces (p2, c1, k60).",
			Event{Kind: Connected, ClientID: "id with spaces", Protocol: 2, CleanSession: true, KeepAlive: 60}},
		{"New client connected from 127.0.0.1:1 as x as y (p2, c1, k60).",
			Event{Kind: Connected, ClientID: "x as y", Protocol: 2, CleanSession: true, KeepAlive: 60}},
		{"New client connected from 127.0.0.1:1 as 1.2.3.4:5 as y (p2, c1, k60).",
			Event{Kind: Connected, ClientID: "1.2.3.4:5 as y", Protocol: 2, CleanSession: true, KeepAlive: 60}},
		{"New client connected from 127.0.0.1:1 as a (p2, c0, k5). (p2, c1, k60).",
			Event{Kind: Connected, ClientID: "a (p2, c0, k5).", Protocol: 2, CleanSession: true, KeepAlive: 60}},
		{"New client connected from 127.0.0.1:1 as a (p2, c0, k5, u'x (p2, c1, k60).",
			Event{Kind: Connected, ClientID: "a (p2, c0, k5, u'x", Protocol: 2, CleanSession: true, KeepAlive: 60}},
		{"New client connected from 127.0.0.1:1 as ü: (p) (p2, c1, k60, u'a b').",
			Event{Kind: Connected, ClientID: "ü: (p)", Protocol: 2, CleanSession: true, KeepAlive: 60, Username: "a b"}},
		{"Client c-clean disconnected.", Event{Kind: Disconnected, ClientID: "c-clean", Reason: ReasonDisconnect}},
		{"Client c-close closed its connection.", Event{Kind: Disconnected, ClientID: "c-close", Reason: ReasonClosed}},
		{"Client c-ka0 has exceeded timeout, disconnecting.", Event{Kind: Disconnected, ClientID: "c-ka0", Reason: ReasonTimeout}},
		{"Client <unknown> disconnected due to protocol error.", Event{Kind: Disconnected, ClientID: UnknownClient, Reason: ReasonProtocolError}},
		{"Client x disconnected due to malformed packet.", Event{Kind: Disconnected, ClientID: "x", Reason: ReasonOther, Detail: "disconnected due to malformed packet"}},
		{"Client x disconnected, not authorised.", Event{Kind: Disconnected, ClientID: "x", Reason: ReasonOther, Detail: "disconnected, not authorised"}},
		{"Client x disconnected due to oversize packet.", Event{Kind: Disconnected, ClientID: "x", Reason: ReasonOther, Detail: "disconnected due to oversize packet"}},
		{"Client x disconnected due to oversize payload.", Event{Kind: Disconnected, ClientID: "x", Reason: ReasonOther, Detail: "disconnected due to oversize payload"}},
		{"Client x disconnected due to out of memory.", Event{Kind: Disconnected, ClientID: "x", Reason: ReasonOther, Detail: "disconnected due to out of memory"}},
		{"Client x disconnected due to QoS too high or retain not supported.", Event{Kind: Disconnected, ClientID: "x", Reason: ReasonOther, Detail: "disconnected due to QoS too high or retain not supported"}},
		{"Client x been disconnected by administrative action.", Event{Kind: Disconnected, ClientID: "x", Reason: ReasonOther, Detail: "been disconnected by administrative action"}},
		{"Client x disconnected: Connection reset by peer.", Event{Kind: Disconnected, ClientID: "x", Reason: ReasonOther, Detail: "disconnected: Connection reset by peer"}},
		{"Bad socket read/write on client x: y: The connection was lost.", Event{Kind: Disconnected, ClientID: "x: y", Reason: ReasonOther, Detail: "bad socket read/write: The connection was lost."}},
		{"Client a b disconnected. closed its connection.", Event{Kind: Disconnected, ClientID: "a b disconnected.", Reason: ReasonClosed}},
		{"Client x already connected, closing old connection.", Event{Kind: TakenOver, ClientID: "x"}},
		{"Expiring client c-exp due to timeout.", Event{Kind: Expired, ClientID: "c-exp"}},
		{"New connection from 127.0.0.1:38162 on port 19030.", Event{}},
		{"mosquitto version 2.0.11 running", Event{}},
		{"Client x connected with too large Will payload", Event{}},
		{"", Event{}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			assertEvent(t, parse(t, NewParser(), TopicNotice, tt.line), tt.want)
		})
	}
}

func TestParseTimestamps(t *testing.T) {
	want := Event{Kind: Connected, ClientID: "c: x", Protocol: 2, CleanSession: true, KeepAlive: 60}
	msg := "New client connected from 127.0.0.1:38162 as c: x (p2, c1, k60)."
	for _, stamp := range []string{"", "1795313233", "2026-11-22T02:16:57", "2026-11-22 02:16:57", "Sun Nov 22 02:16:57 2026", "[02: 16]", "Time error"} {
		t.Run(stamp, func(t *testing.T) {
			p := NewParser()
			w := want
			w.Timestamp = stamp
			assertEvent(t, parse(t, p, TopicNotice, mosqLine(stamp, msg)), w)
			// The shape is learned: an M line whose id looks like a timestamp is read with
			// the broker's own prefix only.
			sub := mosqLine(stamp, "1795313233: c: x 1 a/b")
			ev := parse(t, p, TopicSubscribe, sub)
			if stamp == "" {
				assertEvent(t, ev, Event{Kind: Subscribed, ClientID: "1795313233: c: x", QoS: 1, Filter: "a/b"})
			} else {
				assertEvent(t, ev, Event{Kind: Subscribed, ClientID: "1795313233: c: x", QoS: 1, Filter: "a/b", Timestamp: stamp})
			}
		})
	}
}

func TestParseTimestampShapeChanges(t *testing.T) {
	p := NewParser()
	parse(t, p, TopicNotice, "New client connected from 127.0.0.1:1 as a (p2, c1, k60).")
	// The broker restarted with timestamps: the N line teaches the new shape.
	ev := parse(t, p, TopicNotice, "1795313233: New client connected from 127.0.0.1:1 as b (p2, c1, k60).")
	if ev.ClientID != "b" || ev.Timestamp != "1795313233" {
		t.Fatalf("got %+v", ev)
	}
	assertEvent(t, parse(t, p, TopicSubscribe, "1795313299: b 2 x"), Event{Kind: Subscribed, ClientID: "b", QoS: 2, Filter: "x", Timestamp: "1795313299"})
	// A line that does not fit the learned shape is read every way.
	p.ResetTimestamp()
	ev = parse(t, p, TopicSubscribe, "1795313299: zz 2 x")
	if len(ev.Readings) != 2 || !hasReading(ev, Reading{ClientID: "zz", QoS: 2, Filter: "x"}) || !hasReading(ev, Reading{ClientID: "1795313299: zz", QoS: 2, Filter: "x"}) {
		t.Fatalf("got %+v", ev)
	}
}

func TestParseSubscribe(t *testing.T) {
	tests := []struct {
		line  string
		known []string
		want  Event
	}{
		{"c-clean 1 a/b/#", nil, Event{Kind: Subscribed, ClientID: "c-clean", QoS: 1, Filter: "a/b/#"}},
		{"c-bridge 0 #", nil, Event{Kind: Subscribed, ClientID: "c-bridge", Filter: "#"}},
		{"c 2 $share/g/a/+", nil, Event{Kind: Subscribed, ClientID: "c", QoS: 2, Filter: "$share/g/a/+"}},
		{"id with spaces 1 topic with/spaces 1/#", []string{"id with spaces"},
			Event{Kind: Subscribed, ClientID: "id with spaces", QoS: 1, Filter: "topic with/spaces 1/#"}},
		{"id with spaces 1 topic with/spaces 1/#", nil,
			Event{Kind: Subscribed, ClientID: "id with spaces", QoS: 1, Filter: "topic with/spaces 1/#"}},
		{"id 1 x 0 a 2 b", nil,
			Event{Kind: Subscribed, ClientID: "id", QoS: 1, Filter: "x 0 a 2 b", Readings: []Reading{
				{ClientID: "id", QoS: 1, Filter: "x 0 a 2 b"},
				{ClientID: "id 1 x", QoS: 0, Filter: "a 2 b"},
				{ClientID: "id 1 x 0 a", QoS: 2, Filter: "b"},
			}}},
		{"a 1 b 2 c", []string{"a 1 b"}, Event{Kind: Subscribed, ClientID: "a 1 b", QoS: 2, Filter: "c"}},
		{"a 1 b 2 c", []string{"a", "a 1 b"}, Event{Kind: Subscribed, ClientID: "a", QoS: 1, Filter: "b 2 c", Readings: []Reading{
			{ClientID: "a", QoS: 1, Filter: "b 2 c"}, {ClientID: "a 1 b", QoS: 2, Filter: "c"},
		}}},
		// "b# 1 c" is no filter: '#' must be a whole level, so only one split is left.
		{"a 1 b# 1 c", nil, Event{Kind: Subscribed, ClientID: "a 1 b#", QoS: 1, Filter: "c"}},
		{"a 1 +x 0 #", nil, Event{Kind: Subscribed, ClientID: "a 1 +x", QoS: 0, Filter: "#"}},
		{"a 3 b", []string{"a 3 b"}, Event{}}, // error case, see TestParseErrors
		{"ü 0 ü/ü", nil, Event{Kind: Subscribed, ClientID: "ü", Filter: "ü/ü"}},
		{"a  1  b", nil, Event{Kind: Subscribed, ClientID: "a ", QoS: 1, Filter: " b"}},
	}
	for _, tt := range tests {
		if tt.want.Kind == Ignored {
			continue
		}
		t.Run(tt.line, func(t *testing.T) {
			p := NewParser()
			for _, id := range tt.known {
				p.Remember(id)
			}
			assertEvent(t, parse(t, p, TopicSubscribe, tt.line), tt.want)
		})
	}
}

func TestParseUnsubscribe(t *testing.T) {
	tests := []struct {
		line  string
		known []string
		want  Event
	}{
		{"c-clean a/b/#", nil, Event{Kind: Unsubscribed, ClientID: "c-clean", Filter: "a/b/#"}},
		{"c-multi never/subscribed", nil, Event{Kind: Unsubscribed, ClientID: "c-multi", Filter: "never/subscribed"}},
		{"id with spaces topic with/spaces 1/#", []string{"id with spaces"},
			Event{Kind: Unsubscribed, ClientID: "id with spaces", Filter: "topic with/spaces 1/#"}},
		{"a b", []string{"x"}, Event{Kind: Unsubscribed, ClientID: "a", Filter: "b"}},
		{"a b c", nil, Event{Kind: Unsubscribed, ClientID: "a", Filter: "b c", Readings: []Reading{
			{ClientID: "a", Filter: "b c"}, {ClientID: "a b", Filter: "c"},
		}}},
		{"a # c", nil, Event{Kind: Unsubscribed, ClientID: "a #", Filter: "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			p := NewParser()
			for _, id := range tt.known {
				p.Remember(id)
			}
			assertEvent(t, parse(t, p, TopicUnsubscribe, tt.line), tt.want)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ topic, line string }{
		{TopicSubscribe, ""},
		{TopicSubscribe, "nospace"},
		{TopicSubscribe, "a 3 b"},
		{TopicSubscribe, "a 1 "},
		{TopicSubscribe, "a 1 #/b"},
		{TopicUnsubscribe, ""},
		{TopicUnsubscribe, "a"},
		{TopicUnsubscribe, "a b#"},
		{TopicNotice, "New client connected from nowhere"},
		{TopicNotice, "New client connected from 1.2.3.4:5 as x (p2, c9, k60)."},
		{TopicNotice, "New bridge connected from 1.2.3.4:5 as x"},
		{TopicNotice, "Expiring client x"},
	}
	for _, tt := range tests {
		t.Run(tt.topic+" "+tt.line, func(t *testing.T) {
			ev, err := NewParser().Parse(tt.topic, []byte(tt.line))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			assertEvent(t, ev, Event{})
		})
	}
}

func TestParseIgnoredTopics(t *testing.T) {
	p := NewParser()
	for _, topic := range []string{"$SYS/broker/log/I", "$SYS/broker/log/W", "$SYS/broker/log/D", "$SYS/broker/uptime", "a/b"} {
		// Other levels may end a line with a client-chosen id: never read them.
		assertEvent(t, parse(t, p, topic, "Outgoing messages are being dropped for client evil: Client victim disconnected."), Event{})
	}
	// .../E carries only the takeover line.
	assertEvent(t, parse(t, p, TopicError, "Client victim disconnected."), Event{})
	assertEvent(t, parse(t, p, TopicError, "1795313233: Client x already connected, closing old connection."),
		Event{Kind: TakenOver, ClientID: "x", Timestamp: "1795313233"})
}

func TestParserKnownIDs(t *testing.T) {
	p := NewParser()
	parse(t, p, TopicNotice, "New client connected from 127.0.0.1:1 as a b (p2, c1, k60).")
	if !p.Known("a b") {
		t.Fatal("connect did not remember the id")
	}
	assertEvent(t, parse(t, p, TopicSubscribe, "a b 1 c d"), Event{Kind: Subscribed, ClientID: "a b", QoS: 1, Filter: "c d"})
	parse(t, p, TopicError, "Client a b already connected, closing old connection.")
	if !p.Known("a b") {
		t.Fatal("takeover forgot the id")
	}
	parse(t, p, TopicNotice, "Client a b closed its connection.")
	if p.Known("a b") {
		t.Fatal("disconnect did not forget the id")
	}
	p.Remember("x")
	parse(t, p, TopicNotice, "Expiring client x due to timeout.")
	if p.Known("x") {
		t.Fatal("expiry did not forget the id")
	}
	// A username that holds the "(p2, c1, k60" group leaves two readings: both are remembered.
	ev := parse(t, p, TopicNotice, "New client connected from 127.0.0.1:1 as a (p2, c1, k60, u'b (p2, c1, k60, u'c')').")
	if len(ev.Readings) != 2 || !p.Known("a") || !p.Known("a (p2, c1, k60, u'b") {
		t.Fatalf("got %+v", ev)
	}
	// An ambiguous disconnect forgets nothing.
	p.Remember("m")
	p.Remember("m disconnected: n")
	ev = parse(t, p, TopicNotice, "Client m disconnected: n disconnected.")
	if len(ev.Readings) != 2 || !p.Known("m") || !p.Known("m disconnected: n") {
		t.Fatalf("got %+v", ev)
	}
	// "<unknown>" is a connection without CONNECT unless a client uses that id.
	assertEvent(t, parse(t, p, TopicNotice, "Client <unknown> closed its connection."),
		Event{Kind: Disconnected, ClientID: UnknownClient, Reason: ReasonClosed})
	p.Remember(UnknownClient)
	ev = parse(t, p, TopicNotice, "Client <unknown> closed its connection.")
	if len(ev.Readings) != 2 || !p.Known(UnknownClient) {
		t.Fatalf("got %+v", ev)
	}
}

func TestParseTruncated(t *testing.T) {
	long := "a/b/" + strings.Repeat("c", 1200)
	for _, stamp := range []string{"", "1795313233", "2026-11-22T02:16:57"} {
		t.Run("subscribe/"+stamp, func(t *testing.T) {
			p := NewParser()
			p.Remember("c-long")
			line := mosqLine(stamp, "c-long 1 "+long)
			ev := parse(t, p, TopicSubscribe, line)
			if !ev.Truncated || ev.ClientID != "c-long" || ev.QoS != 1 || ev.Widened != "a/b/#" || !strings.HasPrefix(long, ev.Filter) || ev.Readings != nil {
				t.Fatalf("got %+v", ev)
			}
		})
		t.Run("subscribe unknown id/"+stamp, func(t *testing.T) {
			ev := parse(t, NewParser(), TopicSubscribe, mosqLine(stamp, "c-long 1 "+long))
			// The id might be cut too: a reading with "#" stays.
			if !ev.Truncated || len(ev.Readings) < 2 || ev.Readings[len(ev.Readings)-1].Widened != "#" {
				t.Fatalf("got %+v", ev)
			}
		})
		t.Run("unsubscribe/"+stamp, func(t *testing.T) {
			p := NewParser()
			p.Remember("c-long")
			ev := parse(t, p, TopicUnsubscribe, mosqLine(stamp, "c-long "+long))
			if !ev.Truncated || ev.ClientID != "c-long" || ev.Widened != "a/b/#" {
				t.Fatalf("got %+v", ev)
			}
		})
		t.Run("connect/"+stamp, func(t *testing.T) {
			p := NewParser()
			id := strings.Repeat("i", 1100)
			ev := parse(t, p, TopicNotice, mosqLine(stamp, "New client connected from 127.0.0.1:1 as "+id+" (p2, c1, k60)."))
			if ev.Kind != Connected || !ev.Truncated || !strings.HasPrefix(id, ev.ClientID) || p.Known(ev.ClientID) {
				t.Fatalf("got %+v", ev)
			}
			ev = parse(t, p, TopicNotice, mosqLine(stamp, "Client "+id+" disconnected."))
			if ev.Kind != Ignored || !ev.Truncated {
				t.Fatalf("got %+v", ev)
			}
			ev = parse(t, p, TopicSubscribe, mosqLine(stamp, id+" 0 x"))
			if ev.Kind != Subscribed || !ev.Truncated || ev.Widened != "#" {
				t.Fatalf("got %+v", ev)
			}
		})
	}
	// A line of LineMax bytes that parsed to its end is complete.
	id := strings.Repeat("i", LineMax-len("Client  disconnected."))
	ev := parse(t, NewParser(), TopicNotice, "Client "+id+" disconnected.")
	assertEvent(t, ev, Event{Kind: Disconnected, ClientID: id, Reason: ReasonDisconnect})
}

func TestWiden(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a/b/cde", "a/b/#"},
		{"a/b/", "a/b/#"},
		{"a/b/+", "a/b/#"},
		{"abc", "#"},
		{"", "#"},
		{"/", "/#"},
		{"$share/g", "#"},
		{"$share/g/", "$share/g/#"},
		{"$share/g/a/b", "$share/g/a/#"},
		{"$SYS/bro", "$SYS/#"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Widen(tt.in); got != tt.want {
				t.Errorf("Widen(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if !covers(Widen(tt.in), tt.in) && !strings.HasPrefix(tt.in, "$share/") {
				t.Errorf("Widen(%q) does not cover it", tt.in)
			}
		})
	}
}

func TestValidFilter(t *testing.T) {
	for f, want := range map[string]bool{
		"a/b": true, "#": true, "a/#": true, "+/+": true, "a/+/b": true, "": true, "/": true, "a//b": true,
		"a#": false, "#/a": false, "a/b+": false, "++": false, "a/#/": false,
	} {
		if got := validFilter(f); got != want {
			t.Errorf("validFilter(%q) = %v, want %v", f, got, want)
		}
	}
}

func TestSuffixFiltersMatchValidFilter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "a/+# "
	var s suffixFilters
	for range 20000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		line := string(b)
		s.reset(line)
		for k := 0; k <= len(line); k++ {
			if got, want := s.valid(k), validFilter(line[k:]); got != want {
				t.Fatalf("line %q k %d: valid %v, validFilter %v", line, k, got, want)
			}
		}
	}
}

func TestKindReasonString(t *testing.T) {
	if Subscribed.String() != "Subscribed" || Kind(99).String() != "Kind(99)" || ReasonTimeout.String() != "Timeout" || Reason(-1).String() != "Reason(-1)" {
		t.Fatal("String")
	}
}
