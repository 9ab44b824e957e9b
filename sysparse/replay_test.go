package sysparse

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// capturedCase is one "# case" block of a captured file.
type capturedCase struct {
	name  string
	lines []logLine
}

func readCaptured(t testing.TB, path string) []capturedCase {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (rewrite with: go test ./sysparse -run '^TestCapture$' -capture)", err)
	}
	var cases []capturedCase
	for _, l := range bytes.Split(data, []byte("\n")) {
		if name, ok := bytes.CutPrefix(l, []byte("# case ")); ok {
			cases = append(cases, capturedCase{name: string(name)})
			continue
		}
		if len(l) == 0 || l[0] == '#' {
			continue
		}
		topic, payload, ok := bytes.Cut(l, []byte("\t"))
		if !ok || len(cases) == 0 {
			t.Fatalf("%s: bad line %q", path, l)
		}
		c := &cases[len(cases)-1]
		c.lines = append(c.lines, logLine{string(topic), string(payload)})
	}
	return cases
}

func connEv(id string, protocol int, clean bool, keep int) Event {
	return Event{Kind: Connected, ClientID: id, Protocol: protocol, CleanSession: clean, KeepAlive: keep}
}

func subEv(id string, qos byte, filter string) Event {
	return Event{Kind: Subscribed, ClientID: id, QoS: qos, Filter: filter}
}

func unsubEv(id, filter string) Event { return Event{Kind: Unsubscribed, ClientID: id, Filter: filter} }

func discEv(id string, r Reason) Event { return Event{Kind: Disconnected, ClientID: id, Reason: r} }

// replayWant is what each captured case must produce: the events that are not Ignored (or are
// Ignored but Truncated), in order, with Timestamp checked apart.
var replayWant = map[string][]Event{
	"connect clean, subscribe qos 0 1 2, unsubscribe, DISCONNECT": {
		connEv("c-clean", ProtocolMQTT311, true, 60),
		subEv("c-clean", 1, "a/b/#"), subEv("c-clean", 0, "x/+/y"), subEv("c-clean", 2, "q/two"),
		unsubEv("c-clean", "a/b/#"),
		discEv("c-clean", ReasonDisconnect),
	},
	"persistent session: subscribe, DISCONNECT, reconnect (no subscribe lines), reconnect clean": {
		connEv("c-persist", 2, false, 60),
		subEv("c-persist", 1, "persist/one"), subEv("c-persist", 0, "persist/two/#"),
		discEv("c-persist", ReasonDisconnect),
		connEv("c-persist", 2, false, 60),
		discEv("c-persist", ReasonDisconnect),
		connEv("c-persist", 2, true, 60),
		discEv("c-persist", ReasonClosed),
	},
	"username": {
		{Kind: Connected, ClientID: "c-user", Protocol: 2, CleanSession: true, KeepAlive: 60, Username: "alice"},
		discEv("c-user", ReasonDisconnect),
	},
	"MQTT 3.1": {
		connEv("c-v31", ProtocolMQTT31, true, 60),
		subEv("c-v31", 1, "v31/t"),
		discEv("c-v31", ReasonDisconnect),
	},
	"MQTT 5 with subscription options": {
		connEv("c-v5", ProtocolMQTT5, true, 30),
		subEv("c-v5", 1, "v5/t"), subEv("c-v5", 0, "v5/plain"),
		unsubEv("c-v5", "v5/t"),
		discEv("c-v5", ReasonDisconnect),
	},
	"bridge bit 0x84 (paho)": {
		{Kind: Connected, ClientID: "c-bridge", Protocol: 2, CleanSession: true, KeepAlive: 30, Bridge: true},
		subEv("c-bridge", 0, "#"),
		discEv("c-bridge", ReasonDisconnect),
	},
	"multi-topic SUBSCRIBE and UNSUBSCRIBE, resubscribe, TCP close": {
		connEv("c-multi", 2, true, 60),
		subEv("c-multi", 0, "m/one"), subEv("c-multi", 1, "m/two/#"), subEv("c-multi", 2, "m/+/three"),
		subEv("c-multi", 1, "m/one"),
		unsubEv("c-multi", "m/one"), unsubEv("c-multi", "m/+/three"),
		discEv("c-multi", ReasonClosed),
	},
	"shared subscriptions": {
		connEv("c-share", 2, true, 60),
		subEv("c-share", 1, "$share/g/s/+/x"), subEv("c-share", 0, "$share/g2/#"),
		unsubEv("c-share", "$share/g/s/+/x"),
		discEv("c-share", ReasonDisconnect),
	},
	"spaces in ids and filters": {
		connEv("id with spaces", 2, true, 60),
		subEv("id with spaces", 1, "topic with/spaces 1/#"),
		unsubEv("id with spaces", "topic with/spaces 1/#"),
		discEv("id with spaces", ReasonDisconnect),
		connEv("id 1 x", 2, true, 60),
		subEv("id 1 x", 0, "a 2 b"), // also ("id", 1, "x 0 a 2 b") and ("id 1 x 0 a", 2, "b"): only "id 1 x" is known
		discEv("id 1 x", ReasonDisconnect),
	},
	"two connected ids make a line ambiguous": {
		connEv("amb", 2, true, 60),
		connEv("amb 1 z", 2, true, 60),
		{Kind: Subscribed, ClientID: "amb", QoS: 1, Filter: "z 1 q", Readings: []Reading{
			{ClientID: "amb", QoS: 1, Filter: "z 1 q"}, {ClientID: "amb 1 z", QoS: 1, Filter: "q"},
		}},
		{Kind: Unsubscribed, ClientID: "amb", Filter: "1 z never", Readings: []Reading{
			{ClientID: "amb", Filter: "1 z never"}, {ClientID: "amb 1", Filter: "z never"}, {ClientID: "amb 1 z", Filter: "never"},
		}},
		discEv("amb", ReasonDisconnect),
		discEv("amb 1 z", ReasonDisconnect),
	},
	"': ' in ids": {
		connEv("1795313233: fake", 2, true, 60), subEv("1795313233: fake", 1, "colon/t"), discEv("1795313233: fake", ReasonDisconnect),
		connEv("2026-11-22T02:16:57: fake", 2, true, 60), subEv("2026-11-22T02:16:57: fake", 1, "colon/t"), discEv("2026-11-22T02:16:57: fake", ReasonDisconnect),
		connEv("x: y", 2, true, 60), subEv("x: y", 1, "colon/t"), discEv("x: y", ReasonDisconnect),
	},
	"ids that look like a connect line, username with the same group": {
		connEv("a (p2, c0, k5). x as y", 2, true, 60),
		subEv("a (p2, c0, k5). x as y", 0, "t"),
		discEv("a (p2, c0, k5). x as y", ReasonDisconnect),
		{Kind: Connected, ClientID: "u1", Protocol: 5, KeepAlive: 9, Username: "x (p2, c1, k60, u'y", Readings: []Reading{
			{ClientID: "u1"}, {ClientID: "u1 (p5, c0, k9, u'x"},
		}},
		discEv("u1 (p5, c0, k9, u'x", ReasonDisconnect),
	},
	"unicode": {
		connEv("ünïcødé-客户端", 2, true, 60),
		subEv("ünïcødé-客户端", 2, "töpic/日本/+"),
		unsubEv("ünïcødé-客户端", "töpic/日本/+"),
		discEv("ünïcødé-客户端", ReasonDisconnect),
	},
	"takeover, clean session": {
		connEv("c-dup", 2, true, 60),
		{Kind: TakenOver, ClientID: "c-dup"},
		connEv("c-dup", 2, true, 60),
		discEv("c-dup", ReasonDisconnect),
	},
	"takeover, persistent session": {
		connEv("c-dup2", 2, false, 60),
		subEv("c-dup2", 1, "p/q"),
		{Kind: TakenOver, ClientID: "c-dup2"},
		connEv("c-dup2", 2, false, 60),
		discEv("c-dup2", ReasonDisconnect),
	},
	"keepalive timeout": {
		connEv("c-timeout", 2, true, 1),
		discEv("c-timeout", ReasonTimeout),
	},
	"protocol error before CONNECT": {
		discEv(UnknownClient, ReasonProtocolError),
	},
	"protocol error after CONNECT (second CONNECT)": {
		connEv("c-proto", 2, true, 60),
		discEv("c-proto", ReasonProtocolError),
	},
	"malformed packet": {
		connEv("c-malformed", 2, true, 60),
		{Kind: Disconnected, ClientID: "c-malformed", Reason: ReasonOther, Detail: "disconnected due to malformed packet"},
	},
	"TCP close before CONNECT": {
		discEv(UnknownClient, ReasonClosed),
	},
	"session expiry (MQTT 5 session expiry interval 1 s)": {
		connEv("c-expire", ProtocolMQTT5, false, 60),
		subEv("c-expire", 1, "exp/t"),
		discEv("c-expire", ReasonDisconnect),
		{Kind: Expired, ClientID: "c-expire"},
	},
	"unsubscribe of a filter never subscribed": {
		connEv("c-unsub", 2, true, 60),
		unsubEv("c-unsub", "never/subscribed"),
		discEv("c-unsub", ReasonDisconnect),
	},
}

// replayCheck checks the cases whose events depend on the timestamp length.
var replayCheck = map[string]func(t *testing.T, stamped bool, evs []Event){
	"recorder": func(t *testing.T, stamped bool, evs []Event) {
		want := Reading{ClientID: "capture-recorder", Filter: TopicLog}
		if len(evs) != 1 || evs[0].Kind != Subscribed || !hasReading(evs[0], want) {
			t.Fatalf("got %+v", evs)
		}
		// The first line, before any N line taught the timestamp: "<ts>: capture-recorder"
		// may be the id.
		if stamped != (len(evs[0].Readings) == 2) {
			t.Errorf("readings: %+v", evs[0].Readings)
		}
	},
	"filters longer than the log buffer": func(t *testing.T, stamped bool, evs []Event) {
		if len(evs) != 5 {
			t.Fatalf("got %d events: %+v", len(evs), evs)
		}
		assertEvent(t, evs[0], connEv("c-long", 2, true, 60))
		for i, c := range []struct {
			kind     Kind
			qos      byte
			filter   string
			widened  string
			readings int
		}{{Subscribed, 1, longFilter, "a/b/#", 0}, {Unsubscribed, 0, longFilter, "a/b/#", 0}, {Subscribed, 0, longUnicode, "ü/#", 0}} {
			ev := evs[1+i]
			if ev.Kind != c.kind || ev.ClientID != "c-long" || ev.QoS != c.qos || !ev.Truncated || ev.Widened != c.widened ||
				!strings.HasPrefix(c.filter, ev.Filter) || len(ev.Filter) < 900 || !covers(ev.Widened, c.filter) || ev.Readings != nil {
				t.Errorf("event %d: %+v", 1+i, ev)
			}
		}
		assertEvent(t, evs[4], discEv("c-long", ReasonDisconnect))
	},
	"client id longer than the log buffer": func(t *testing.T, stamped bool, evs []Event) {
		if len(evs) != 3 {
			t.Fatalf("got %d events: %+v", len(evs), evs)
		}
		ev := evs[0]
		if ev.Kind != Connected || !ev.Truncated || !strings.HasPrefix(longClientID, ev.ClientID) || len(ev.ClientID) < 900 {
			t.Errorf("connect: %+v", ev)
		}
		// Nothing of the filter is in the line: everything is interest.
		ev = evs[1]
		if ev.Kind != Subscribed || !ev.Truncated || ev.Widened != "#" || !strings.HasPrefix(longClientID, ev.ClientID) {
			t.Errorf("subscribe: %+v", ev)
		}
		// The disconnect line is cut before its ending: its kind is unknown.
		ev = evs[2]
		if ev.Kind != Ignored || !ev.Truncated {
			t.Errorf("disconnect: %+v", ev)
		}
	},
}

// TestReplayCaptured parses every line captured from real mosquitto 2.0.11 brokers (see
// TestCapture) with one Parser per file, as the agent would, and checks the events of each
// case.
func TestReplayCaptured(t *testing.T) {
	for _, cfg := range captureConfigs {
		t.Run(cfg.file, func(t *testing.T) {
			cases := readCaptured(t, filepath.Join(captureDir, cfg.file))
			seen := map[string]bool{}
			p := NewParser()
			for _, c := range cases {
				seen[c.name] = true
				var evs []Event
				for _, l := range c.lines {
					ev, err := p.Parse(l.topic, []byte(l.payload))
					if err != nil {
						t.Errorf("case %q: %s %q: %v", c.name, l.topic, l.payload, err)
						continue
					}
					if ev.Kind == Ignored && !ev.Truncated {
						continue
					}
					if cfg.stamped != (ev.Timestamp != "") && c.name != "recorder" {
						t.Errorf("case %q: %q: Timestamp %q", c.name, l.payload, ev.Timestamp)
					}
					if ev.Timestamp != "" && !strings.HasPrefix(l.payload, ev.Timestamp+": ") {
						t.Errorf("case %q: %q: Timestamp %q", c.name, l.payload, ev.Timestamp)
					}
					ev.Timestamp = ""
					evs = append(evs, ev)
				}
				if check, ok := replayCheck[c.name]; ok {
					t.Run(c.name, func(t *testing.T) { check(t, cfg.stamped, evs) })
					continue
				}
				want, ok := replayWant[c.name]
				if !ok {
					t.Errorf("case %q has no expected events", c.name)
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					if len(evs) != len(want) {
						t.Fatalf("got %d events, want %d:\n got %+v\nwant %+v", len(evs), len(want), evs, want)
					}
					for i := range want {
						assertEvent(t, evs[i], want[i])
					}
				})
			}
			for _, c := range captureCases {
				if !seen[c.name] {
					t.Errorf("case %q was not captured: rewrite with -capture", c.name)
				}
			}
		})
	}
}
