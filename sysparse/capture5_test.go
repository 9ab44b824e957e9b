package sysparse

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

// mqtt5File holds what Mosquitto 2.0.11 logs for MQTT 5 sessions, driven by mosquitto_sub as a
// user would, with `log_type all`: which of the session's settings the log shows, and which it
// does not (see docs/interop.md).
const mqtt5File = "mqtt5_sessions.log"

// mqtt5Case is one mosquitto_sub run against the broker, and the log line it must cause last.
type mqtt5Case struct {
	name string
	args []string // mosquitto_sub arguments after -p <port>
	last string   // suffix of the last log line of the case on .../N
	wait string   // a later line to wait for (the session's expiry), or ""
}

// mqtt5Cases: mosquitto_sub -c clears Clean Start; -x sets the Session Expiry Interval (without
// -x, -c alone asks for a session that never expires); -E exits, with DISCONNECT, once the
// subscription is acknowledged.
var mqtt5Cases = []mqtt5Case{
	{"v5 clean start, no expiry: the session ends at disconnect",
		[]string{"-V", "mqttv5", "-i", "v5-c1-x0", "-t", "v5/a", "-q", "1", "-E"},
		"Client v5-c1-x0 disconnected.", ""},
	{"v5 clean start, expiry 2: logged c1, the session outlives the connection",
		[]string{"-V", "mqttv5", "-i", "v5-c1-x2", "-x", "2", "-t", "v5/b/#", "-q", "1", "-E"},
		"Client v5-c1-x2 disconnected.", "Expiring client v5-c1-x2 due to timeout."},
	{"v5 no clean start, expiry 0: logged c0, the session ends at disconnect",
		[]string{"-V", "mqttv5", "-i", "v5-c0-x0", "-c", "-x", "0", "-t", "v5/c", "-q", "1", "-E"},
		"Client v5-c0-x0 disconnected.", ""},
	{"v5 no clean start, expiry 2, then resumed before it expires",
		[]string{"-V", "mqttv5", "-i", "v5-c0-x2", "-c", "-x", "2", "-t", "v5/d", "-q", "1", "-E"},
		"Client v5-c0-x2 disconnected.", ""},
	{"v5 the same session resumed (c0), then left to expire",
		[]string{"-V", "mqttv5", "-i", "v5-c0-x2", "-c", "-x", "2", "-t", "v5/d", "-q", "1", "-E"},
		"Client v5-c0-x2 disconnected.", "Expiring client v5-c0-x2 due to timeout."},
	{"v5 shared subscription",
		[]string{"-V", "mqttv5", "-i", "v5-share", "-t", "$share/g/jobs/#", "-q", "1", "-E"},
		"Client v5-share disconnected.", ""},
	{"v311 no clean session, for comparison: the session never expires",
		[]string{"-V", "mqttv311", "-i", "v311-c0", "-c", "-t", "v3/a", "-q", "1", "-E"},
		"Client v311-c0 disconnected.", ""},
}

// TestCaptureMQTT5 rewrites testdata/mosquitto-2.0.11/mqtt5_sessions.log:
//
//	go test ./sysparse -run '^TestCaptureMQTT5$' -capture
func TestCaptureMQTT5(t *testing.T) {
	if !*captureFlag {
		t.Skip("rewrites testdata: run with -capture")
	}
	sub := mosqtest.LookPath(t, "mosquitto_sub", "apt-get install mosquitto-clients")
	b := mosqtest.Start(t, mosqtest.Options{Extra: "log_type all\n"})
	r := newRecorder(t, b.Addr, "capture-recorder")
	var out strings.Builder
	fmt.Fprintf(&out, "# Captured by TestCaptureMQTT5 (sysparse/capture5_test.go) from %s\n", mosquittoVersion(t))
	fmt.Fprintf(&out, "# with mosquitto_sub as the client. mosquitto.conf:\n")
	for _, l := range strings.Split(strings.TrimSpace(b.Conf()), "\n") {
		if strings.HasPrefix(l, "listener ") {
			l = "listener <free port> 127.0.0.1"
		}
		fmt.Fprintf(&out, "#   %s\n", l)
	}
	out.WriteString("# Debug lines (log_type all) are not published on $SYS/broker/log: nothing below is one.\n")
	out.WriteString("# Lines: <topic>\\t<payload>; \"# case <name>\" starts each case, \"# run:\" is its command.\n")
	done := 0
	for _, c := range mqtt5Cases {
		r.expect(func() {
			args := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(b.Port)}, c.args...)
			if o, err := exec.Command(sub, args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_sub %v: %v\n%s", args, err, o)
			}
		}, TopicNotice, c.last)
		if c.wait != "" {
			r.waitFor(TopicNotice, c.wait)
		}
		r.quiet(300 * time.Millisecond)
		lines := r.snapshot()
		fmt.Fprintf(&out, "# case %s\n# run: mosquitto_sub -p <port> %s\n", c.name, strings.Join(c.args, " "))
		for _, l := range lines[done:] {
			out.WriteString(l.topic + "\t" + l.payload + "\n")
		}
		done = len(lines)
	}
	path := filepath.Join(captureDir, mqtt5File)
	if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

// What the MQTT 5 log lines say, parsed from the capture: "p5", the Clean Start flag as c1/c0
// whatever the Session Expiry Interval (which is never logged), and the expiry line when a
// session that outlived its connection ends. The interest model relies on exactly this
// (bridge/interest.go: an MQTT 5 client keeps its interest after a disconnect until its
// session is seen to end).
func TestReplayMQTT5Sessions(t *testing.T) {
	cases := readCaptured(t, filepath.Join(captureDir, mqtt5File))
	want := map[string][]Event{
		mqtt5Cases[0].name: {connEv("v5-c1-x0", ProtocolMQTT5, true, 60), subEv("v5-c1-x0", 1, "v5/a"), discEv("v5-c1-x0", ReasonDisconnect)},
		mqtt5Cases[1].name: {connEv("v5-c1-x2", ProtocolMQTT5, true, 60), subEv("v5-c1-x2", 1, "v5/b/#"), discEv("v5-c1-x2", ReasonDisconnect),
			{Kind: Expired, ClientID: "v5-c1-x2"}},
		mqtt5Cases[2].name: {connEv("v5-c0-x0", ProtocolMQTT5, false, 60), subEv("v5-c0-x0", 1, "v5/c"), discEv("v5-c0-x0", ReasonDisconnect)},
		mqtt5Cases[3].name: {connEv("v5-c0-x2", ProtocolMQTT5, false, 60), subEv("v5-c0-x2", 1, "v5/d"), discEv("v5-c0-x2", ReasonDisconnect)},
		mqtt5Cases[4].name: {connEv("v5-c0-x2", ProtocolMQTT5, false, 60), subEv("v5-c0-x2", 1, "v5/d"), discEv("v5-c0-x2", ReasonDisconnect),
			{Kind: Expired, ClientID: "v5-c0-x2"}},
		mqtt5Cases[5].name: {connEv("v5-share", ProtocolMQTT5, true, 60), subEv("v5-share", 1, "$share/g/jobs/#"), discEv("v5-share", ReasonDisconnect)},
		mqtt5Cases[6].name: {connEv("v311-c0", ProtocolMQTT311, false, 60), subEv("v311-c0", 1, "v3/a"), discEv("v311-c0", ReasonDisconnect)},
	}
	if len(cases) != len(mqtt5Cases) {
		t.Fatalf("%d cases in %s, want %d (rewrite with -capture)", len(cases), mqtt5File, len(mqtt5Cases))
	}
	p := NewParser()
	for _, c := range cases {
		var got []Event
		for _, l := range c.lines {
			ev, err := p.Parse(l.topic, []byte(l.payload))
			if err != nil {
				t.Fatalf("%s: %q: %v", c.name, l.payload, err)
			}
			if ev.Kind == Ignored {
				continue
			}
			if ev.Kind == Subscribed && ev.Filter == TopicLog {
				continue // the recorder's own subscription, before any timestamp was learned
			}
			ev.Timestamp = ""
			got = append(got, ev)
		}
		w, ok := want[c.name]
		if !ok {
			t.Fatalf("unexpected case %q", c.name)
		}
		if len(got) != len(w) {
			t.Errorf("%s: %d events, want %d:\n%+v", c.name, len(got), len(w), got)
			continue
		}
		for i := range w {
			assertEvent(t, got[i], w[i])
		}
	}
}
