package sysparse

import (
	"reflect"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/sysparse/mosqtest"
)

// pahoClient connects a paho client (MQTT 3.1.1, no automatic reconnect) or fails the test.
func pahoClient(t *testing.T, addr, id string, cleanSession bool) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(cleanSession).SetAutoReconnect(false).SetKeepAlive(60 * time.Second)
	c := mqtt.NewClient(opts)
	wait(t, c.Connect())
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(0)
		}
	})
	return c
}

func wait(t *testing.T, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt: %v", tok.Error())
	}
}

// TestLiveBroker drives paho clients against a real broker and checks that, per client, the
// events the Parser makes of the broker's log are exactly what the clients did.
func TestLiveBroker(t *testing.T) {
	for _, cfg := range captureConfigs {
		t.Run(cfg.file, func(t *testing.T) {
			b := mosqtest.Start(t, mosqtest.Options{Extra: cfg.extra})
			r := newRecorder(t, b.Addr, "live-recorder")
			want := map[string][]Event{}
			did := func(ev Event) { want[ev.ClientID] = append(want[ev.ClientID], ev) }

			c := pahoClient(t, b.Addr, "live-clean", true)
			did(connEv("live-clean", 2, true, 60))
			wait(t, c.Subscribe("l/a", 0, nil))
			did(subEv("live-clean", 0, "l/a"))
			wait(t, c.Subscribe("l/b/+", 1, nil))
			did(subEv("live-clean", 1, "l/b/+"))
			wait(t, c.Subscribe("l/c/#", 2, nil))
			did(subEv("live-clean", 2, "l/c/#"))
			wait(t, c.Unsubscribe("l/b/+"))
			did(unsubEv("live-clean", "l/b/+"))
			r.expect(func() { c.Disconnect(50) }, TopicNotice, "Client live-clean disconnected.")
			did(discEv("live-clean", ReasonDisconnect))

			const persist = "live persist 1 x"
			c = pahoClient(t, b.Addr, persist, false)
			did(connEv(persist, 2, false, 60))
			wait(t, c.SubscribeMultiple(map[string]byte{"p 1/x": 1}, nil))
			did(subEv(persist, 1, "p 1/x"))
			r.expect(func() { c.Disconnect(50) }, TopicNotice, "Client "+persist+" disconnected.")
			did(discEv(persist, ReasonDisconnect))
			c = pahoClient(t, b.Addr, persist, false)
			did(connEv(persist, 2, false, 60))
			r.expect(func() { c.Disconnect(50) }, TopicNotice, "Client "+persist+" disconnected.")
			did(discEv(persist, ReasonDisconnect))

			const colon = "1795313233: live 2 y"
			c = pahoClient(t, b.Addr, colon, true)
			did(connEv(colon, 2, true, 60))
			wait(t, c.Subscribe("$share/g/l/x", 1, nil))
			did(subEv(colon, 1, "$share/g/l/x"))
			wait(t, c.Subscribe("0 2 z", 2, nil))
			did(subEv(colon, 2, "0 2 z"))

			dup := pahoClient(t, b.Addr, "live-dup", true)
			did(connEv("live-dup", 2, true, 60))
			var dup2 mqtt.Client
			r.expect(func() { dup2 = pahoClient(t, b.Addr, "live-dup", true) }, TopicError, "Client live-dup already connected, closing old connection.")
			did(Event{Kind: TakenOver, ClientID: "live-dup"})
			did(connEv("live-dup", 2, true, 60))
			wait(t, dup2.Subscribe("d/#", 1, nil))
			did(subEv("live-dup", 1, "d/#"))
			_ = dup

			r.expect(func() { dup2.Disconnect(50) }, TopicNotice, "Client live-dup disconnected.")
			did(discEv("live-dup", ReasonDisconnect))
			r.expect(func() { c.Disconnect(50) }, TopicNotice, "Client "+colon+" disconnected.")
			did(discEv(colon, ReasonDisconnect))

			p := NewParser()
			// The agent knows its own id: its subscribe line comes before any N line can
			// teach the timestamp shape.
			p.Remember("live-recorder")
			got := map[string][]Event{}
			for _, l := range r.snapshot() {
				ev, err := p.Parse(l.topic, []byte(l.payload))
				if err != nil {
					t.Fatalf("%s %q: %v", l.topic, l.payload, err)
				}
				if ev.Kind == Ignored || ev.ClientID == "live-recorder" {
					continue
				}
				if ev.Readings != nil || ev.Truncated {
					t.Errorf("%q: ambiguous: %+v", l.payload, ev)
				}
				if cfg.stamped == (ev.Timestamp == "") {
					t.Errorf("%q: Timestamp %q", l.payload, ev.Timestamp)
				}
				ev.Timestamp = ""
				got[ev.ClientID] = append(got[ev.ClientID], ev)
			}
			if !reflect.DeepEqual(got, want) {
				for id := range want {
					if !reflect.DeepEqual(got[id], want[id]) {
						t.Errorf("client %q:\n got %+v\nwant %+v", id, got[id], want[id])
					}
				}
				for id := range got {
					if _, ok := want[id]; !ok {
						t.Errorf("unexpected client %q: %+v", id, got[id])
					}
				}
			}
		})
	}
}

// TestCaptureTruncation measures where Mosquitto cuts a log line (LineMax), with and without
// a timestamp: a SUBSCRIBE to a filter of 1204 bytes.
func TestCaptureTruncation(t *testing.T) {
	for _, cfg := range captureConfigs {
		t.Run(cfg.file, func(t *testing.T) {
			b := mosqtest.Start(t, mosqtest.Options{Extra: cfg.extra})
			r := newRecorder(t, b.Addr, "trunc-recorder")
			c := pahoClient(t, b.Addr, "trunc", true)
			var line logLine
			n := r.count()
			wait(t, c.Subscribe(longFilter, 1, nil))
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				lines := r.snapshot()[n:]
				if i := indexTopic(lines, TopicSubscribe); i >= 0 {
					line = lines[i]
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no subscribe line")
				}
			}
			if len(line.payload) != LineMax {
				t.Fatalf("payload of %d bytes, want LineMax (%d): %q", len(line.payload), LineMax, line.payload)
			}
			p := NewParser()
			p.Remember("trunc")
			ev, err := p.Parse(line.topic, []byte(line.payload))
			if err != nil || ev.Kind != Subscribed || ev.ClientID != "trunc" || !ev.Truncated || ev.Widened != "a/b/#" || !strings.HasPrefix(longFilter, ev.Filter) {
				t.Fatalf("got %+v, %v", ev, err)
			}
		})
	}
}

func indexTopic(lines []logLine, topic string) int {
	for i, l := range lines {
		if l.topic == topic && strings.Contains(l.payload, "trunc ") {
			return i
		}
	}
	return -1
}
