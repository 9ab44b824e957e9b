package sysparse

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/sysparse/mosqtest"
)

var captureFlag = flag.Bool("capture", false, "run real mosquitto brokers through every case and rewrite "+captureDir)

// captureDir holds the lines captured from real brokers; TestReplayCaptured reads them.
const captureDir = "../testdata/mosquitto-2.0.11"

// captureConfigs are the timestamp settings of the captured brokers, one file each.
var captureConfigs = []struct {
	file, extra string
	stamped     bool
}{
	{"log_timestamp_false.log", "log_timestamp false\n", false},
	{"log_timestamp_epoch.log", "", true}, // the default: epoch seconds
	{"log_timestamp_format_iso.log", "log_timestamp_format %Y-%m-%dT%H:%M:%S\n", true},
}

// Ids and filters of the captured cases that tests use again.
var (
	longFilter   = "a/b/" + strings.Repeat("c", 1200)
	longUnicode  = "ü/" + strings.Repeat("ü", 700)
	longClientID = strings.Repeat("i", 1100)
)

// A captureCase drives clients against a broker. It returns once the last log line it causes
// has arrived.
type captureCase struct {
	name string
	run  func(t *testing.T, addr string, r *recorder)
}

func clean(id string) rawConnect { return rawConnect{id: id, clean: true, keepalive: 60} }

var captureCases = []captureCase{
	{"connect clean, subscribe qos 0 1 2, unsubscribe, DISCONNECT", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean("c-clean"))
		c.subscribe([]string{"a/b/#"}, []byte{1})
		c.subscribe([]string{"x/+/y"}, []byte{0})
		c.subscribe([]string{"q/two"}, []byte{2})
		c.unsubscribe("a/b/#")
		r.expect(c.disconnect, TopicNotice, "Client c-clean disconnected.")
	}},
	{"persistent session: subscribe, DISCONNECT, reconnect (no subscribe lines), reconnect clean", func(t *testing.T, addr string, r *recorder) {
		o := rawConnect{id: "c-persist", keepalive: 60}
		c := connectRaw(t, addr, o)
		c.subscribe([]string{"persist/one"}, []byte{1})
		c.subscribe([]string{"persist/two/#"}, []byte{0})
		r.expect(c.disconnect, TopicNotice, "Client c-persist disconnected.")
		r.expect(func() { c = connectRaw(t, addr, o) }, TopicNotice, "as c-persist (p2, c0, k60).")
		r.expect(c.disconnect, TopicNotice, "Client c-persist disconnected.")
		r.expect(func() { c = connectRaw(t, addr, clean("c-persist")) }, TopicNotice, "as c-persist (p2, c1, k60).")
		r.expect(c.close, TopicNotice, "Client c-persist closed its connection.")
	}},
	{"username", func(t *testing.T, addr string, r *recorder) {
		o := clean("c-user")
		o.username = "alice"
		c := connectRaw(t, addr, o)
		r.expect(c.disconnect, TopicNotice, "Client c-user disconnected.")
	}},
	{"MQTT 3.1", func(t *testing.T, addr string, r *recorder) {
		o := clean("c-v31")
		o.level = 3
		c := connectRaw(t, addr, o)
		c.subscribe([]string{"v31/t"}, []byte{1})
		r.expect(c.disconnect, TopicNotice, "Client c-v31 disconnected.")
	}},
	{"MQTT 5 with subscription options", func(t *testing.T, addr string, r *recorder) {
		o := clean("c-v5")
		o.level, o.keepalive = 5, 30
		c := connectRaw(t, addr, o)
		// 0x2d: QoS 1, no local, retain as published, retain handling 2.
		c.subscribe([]string{"v5/t", "v5/plain"}, []byte{0x2d, 0x00})
		c.unsubscribe("v5/t")
		r.expect(c.disconnect, TopicNotice, "Client c-v5 disconnected.")
	}},
	{"bridge bit 0x84 (paho)", func(t *testing.T, addr string, r *recorder) {
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("c-bridge").
			SetProtocolVersion(0x84).SetAutoReconnect(false)
		c := mqtt.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		if tok := c.Subscribe("#", 0, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		r.expect(func() { c.Disconnect(100) }, TopicNotice, "Client c-bridge disconnected.")
	}},
	{"multi-topic SUBSCRIBE and UNSUBSCRIBE, resubscribe, TCP close", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean("c-multi"))
		c.subscribe([]string{"m/one", "m/two/#", "m/+/three"}, []byte{0, 1, 2})
		c.subscribe([]string{"m/one"}, []byte{1})
		c.unsubscribe("m/one", "m/+/three")
		r.expect(c.close, TopicNotice, "Client c-multi closed its connection.")
	}},
	{"shared subscriptions", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean("c-share"))
		c.subscribe([]string{"$share/g/s/+/x", "$share/g2/#"}, []byte{1, 0})
		c.unsubscribe("$share/g/s/+/x")
		r.expect(c.disconnect, TopicNotice, "Client c-share disconnected.")
	}},
	{"spaces in ids and filters", func(t *testing.T, addr string, r *recorder) {
		a := connectRaw(t, addr, clean("id with spaces"))
		a.subscribe([]string{"topic with/spaces 1/#"}, []byte{1})
		a.unsubscribe("topic with/spaces 1/#")
		r.expect(a.disconnect, TopicNotice, "Client id with spaces disconnected.")
		b := connectRaw(t, addr, clean("id 1 x"))
		b.subscribe([]string{"a 2 b"}, []byte{0})
		r.expect(b.disconnect, TopicNotice, "Client id 1 x disconnected.")
	}},
	{"two connected ids make a line ambiguous", func(t *testing.T, addr string, r *recorder) {
		a := connectRaw(t, addr, clean("amb"))
		b := connectRaw(t, addr, clean("amb 1 z"))
		a.subscribe([]string{"z 1 q"}, []byte{1}) // "amb 1 z 1 q": ("amb", "z 1 q") or ("amb 1 z", "q")
		b.unsubscribe("never")
		r.expect(a.disconnect, TopicNotice, "Client amb disconnected.")
		r.expect(b.disconnect, TopicNotice, "Client amb 1 z disconnected.")
	}},
	{"': ' in ids", func(t *testing.T, addr string, r *recorder) {
		for _, id := range []string{"1795313233: fake", "2026-11-22T02:16:57: fake", "x: y"} {
			c := connectRaw(t, addr, clean(id))
			c.subscribe([]string{"colon/t"}, []byte{1})
			r.expect(c.disconnect, TopicNotice, "Client "+id+" disconnected.")
		}
	}},
	{"ids that look like a connect line, username with the same group", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean("a (p2, c0, k5). x as y"))
		c.subscribe([]string{"t"}, []byte{0})
		r.expect(c.disconnect, TopicNotice, "Client a (p2, c0, k5). x as y disconnected.")
		o := clean("u1 (p5, c0, k9, u'x")
		o.username = "y"
		c = connectRaw(t, addr, o)
		r.expect(c.disconnect, TopicNotice, "Client u1 (p5, c0, k9, u'x disconnected.")
	}},
	{"unicode", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean("ünïcødé-客户端"))
		c.subscribe([]string{"töpic/日本/+"}, []byte{2})
		c.unsubscribe("töpic/日本/+")
		r.expect(c.disconnect, TopicNotice, "Client ünïcødé-客户端 disconnected.")
	}},
	{"filters longer than the log buffer", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean("c-long"))
		c.subscribe([]string{longFilter}, []byte{1})
		c.unsubscribe(longFilter)
		c.subscribe([]string{longUnicode}, []byte{0})
		r.expect(c.disconnect, TopicNotice, "Client c-long disconnected.")
	}},
	{"client id longer than the log buffer", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean(longClientID))
		c.subscribe([]string{"x/y"}, []byte{0})
		n := r.count()
		c.disconnect()
		r.waitCount(n + 1)
	}},
	{"takeover, clean session", func(t *testing.T, addr string, r *recorder) {
		connectRaw(t, addr, clean("c-dup"))
		var c *rawClient
		r.expect(func() { c = connectRaw(t, addr, clean("c-dup")) }, TopicError, "Client c-dup already connected, closing old connection.")
		r.expect(c.disconnect, TopicNotice, "Client c-dup disconnected.")
	}},
	{"takeover, persistent session", func(t *testing.T, addr string, r *recorder) {
		o := rawConnect{id: "c-dup2", keepalive: 60}
		c := connectRaw(t, addr, o)
		c.subscribe([]string{"p/q"}, []byte{1})
		r.expect(func() { c = connectRaw(t, addr, o) }, TopicError, "Client c-dup2 already connected, closing old connection.")
		r.expect(c.disconnect, TopicNotice, "Client c-dup2 disconnected.")
	}},
	{"keepalive timeout", func(t *testing.T, addr string, r *recorder) {
		o := clean("c-timeout")
		o.keepalive = 1
		connectRaw(t, addr, o)
		r.waitFor(TopicNotice, "Client c-timeout has exceeded timeout, disconnecting.")
	}},
	{"protocol error before CONNECT", func(t *testing.T, addr string, r *recorder) {
		c := dialRaw(t, addr)
		r.expect(func() {
			c.write(packet(0x10, []byte{0, 4, 'X', 'X', 'X', 'X', 4, 2, 0, 60, 0, 1, 'z'}))
		}, TopicNotice, "Client <unknown> disconnected due to protocol error.")
	}},
	{"protocol error after CONNECT (second CONNECT)", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean("c-proto"))
		r.expect(func() {
			c.write(packet(0x10, append(appendString(nil, "MQTT"), 4, 2, 0, 60, 0, 7, 'c', '-', 'p', 'r', 'o', 't', 'o')))
		}, TopicNotice, "Client c-proto disconnected due to protocol error.")
	}},
	{"malformed packet", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean("c-malformed"))
		r.expect(func() {
			c.write(packet(0x80, append([]byte{0, 1}, append(appendString(nil, "m/x"), 0)...)))
		}, TopicNotice, "Client c-malformed disconnected due to malformed packet.")
	}},
	{"TCP close before CONNECT", func(t *testing.T, addr string, r *recorder) {
		c := dialRaw(t, addr)
		time.Sleep(100 * time.Millisecond)
		r.expect(c.close, TopicNotice, "Client <unknown> closed its connection.")
	}},
	// persistent_client_expiration counts in hours at least ("1m" is 30 days: src/conf.c), so
	// the expiry line is caused by an MQTT 5 client with a 1 s Session Expiry Interval; both
	// go through session_expiry__check and log the same line.
	{"session expiry (MQTT 5 session expiry interval 1 s)", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, rawConnect{level: 5, id: "c-expire", keepalive: 60, sessionExpiry: 1})
		c.subscribe([]string{"exp/t"}, []byte{1})
		c.disconnect()
		r.waitFor(TopicNotice, "Expiring client c-expire due to timeout.")
	}},
	{"unsubscribe of a filter never subscribed", func(t *testing.T, addr string, r *recorder) {
		c := connectRaw(t, addr, clean("c-unsub"))
		c.unsubscribe("never/subscribed")
		r.expect(c.disconnect, TopicNotice, "Client c-unsub disconnected.")
	}},
}

// count is the number of lines so far.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines)
}

// expect runs f and waits for a new line of topic that ends with suffix.
func (r *recorder) expect(f func(), topic, suffix string) {
	r.t.Helper()
	n := r.count()
	f()
	deadline := time.Now().Add(15 * time.Second)
	for {
		lines := r.snapshot()
		for _, l := range lines[n:] {
			if l.topic == topic && strings.HasSuffix(l.payload, suffix) {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no new log line %s ...%q; got:\n%s", topic, suffix, dump(lines[n:]))
		}
		select {
		case <-r.notify:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestCapture rewrites testdata/mosquitto-2.0.11/*.log from real brokers:
//
//	go test ./sysparse -run '^TestCapture$' -capture
//
// Each file is one broker configuration; "# case <name>" precedes the lines of each case,
// every other line is "<topic>\t<payload>".
func TestCapture(t *testing.T) {
	if !*captureFlag {
		t.Skip("rewrites testdata: run with -capture")
	}
	if err := os.MkdirAll(captureDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range captureConfigs {
		t.Run(cfg.file, func(t *testing.T) {
			b := mosqtest.Start(t, mosqtest.Options{Extra: cfg.extra})
			r := newRecorder(t, b.Addr, "capture-recorder")
			var out strings.Builder
			fmt.Fprintf(&out, "# Captured by TestCapture (sysparse/capture_test.go) from %s.\n", mosquittoVersion(t))
			fmt.Fprintf(&out, "# mosquitto.conf:\n")
			for _, l := range strings.Split(strings.TrimSpace(b.Conf()), "\n") {
				if strings.HasPrefix(l, "listener ") {
					l = "listener <free port> 127.0.0.1"
				}
				fmt.Fprintf(&out, "#   %s\n", l)
			}
			out.WriteString("# Lines: <topic>\\t<payload>; \"# case <name>\" starts each case.\n")
			done := 0
			flush := func(name string) {
				r.quiet(300 * time.Millisecond)
				lines := r.snapshot()
				fmt.Fprintf(&out, "# case %s\n", name)
				for _, l := range lines[done:] {
					if strings.ContainsAny(l.payload, "\n\r") {
						t.Fatalf("payload with a line break: %q", l.payload)
					}
					out.WriteString(l.topic + "\t" + l.payload + "\n")
				}
				done = len(lines)
			}
			flush("recorder")
			for _, c := range captureCases {
				c.run(t, b.Addr, r)
				flush(c.name)
			}
			path := filepath.Join(captureDir, cfg.file)
			if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", path)
		})
	}
}

func mosquittoVersion(t *testing.T) string {
	out, _ := execOutput(mosqtest.Binary(t), "-h")
	first, _, _ := strings.Cut(out, "\n")
	return strings.TrimSpace(first)
}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
