package mqttconn

import (
	"context"
	"fmt"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

// The upgrade path of the agent's local connection: an MQTT 5 connection with Clean Start 0
// resumes the session a 3.1.1 bridge-bit connection of the same id left (session present, the
// message queued meanwhile delivered), the resumed '#' subscription keeps no-local, and a
// bridge-bit connection resumes the MQTT 5 session in turn (a rollback).
func TestV5ResumesBridgeBitSession(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	addr := fmt.Sprintf("127.0.0.1:%d", b.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, _, err := Dial(ctx, addr, ConnectOptions{ClientID: "pub", Protocol: 4, CleanSession: true}, func(*Message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	published := func(topic string) {
		t.Helper()
		done := make(chan error, 1)
		pub.Publish(topic, 1, false, []byte(topic), func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	v3 := ConnectOptions{ClientID: "agent", Protocol: 0x84, Keepalive: 30 * time.Second}
	v5 := ConnectOptions{ClientID: "agent", Protocol: 5, Keepalive: 30 * time.Second, SubOptions: SubNoLocal | SubRetainAsPublished}

	old, _, err := Dial(ctx, addr, v3, func(*Message) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Subscribe(ctx, map[string]byte{"#": 2}); err != nil {
		t.Fatal(err)
	}
	old.Close()
	published("while/upgrading")

	for i, o := range []ConnectOptions{v5, v3} {
		got := newCollector()
		c, present, err := Dial(ctx, addr, o, got.on)
		if err != nil {
			t.Fatal(err)
		}
		if !present {
			t.Fatalf("step %d (protocol %#x): no session present", i, o.Protocol)
		}
		if ms := got.wait(t, 1); ms[0].Topic != "while/upgrading" && ms[0].Topic != "while/rolling-back" {
			t.Fatalf("step %d: got %q first, want the message queued while away", i, ms[0].Topic)
		}
		done := make(chan error, 1)
		c.Publish("own/"+fmt.Sprint(i), 1, false, nil, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		published("marker/" + fmt.Sprint(i))
		ms := got.wait(t, 2)
		for _, m := range ms {
			if m.Topic == "own/"+fmt.Sprint(i) {
				t.Errorf("step %d (protocol %#x): got its own publish: no-local lost", i, o.Protocol)
			}
		}
		c.Close()
		published("while/rolling-back")
	}
}
