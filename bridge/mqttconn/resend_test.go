package mqttconn

import (
	"context"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

// A QoS 2 publish the broker holds (its PUBREC never reached the publisher, here because the
// connection ends first) is sent again on the resumed session with the same packet id and DUP:
// Mosquitto recognises it and the subscriber gets it once. Sent again with a new id, the broker
// holds two: the first still waits for its PUBREL (and takes one of the session's in-flight
// places meanwhile), and released it is a second copy. That is why the relay window keeps the
// id (bridge/dedupe.go).
func TestResendSameIDDeliversOnce(t *testing.T) {
	for _, c := range []struct {
		name     string
		sameID   bool
		wantSeen int
	}{{"same id and DUP", true, 1}, {"new id", false, 2}} {
		t.Run(c.name, func(t *testing.T) {
			got := resendAfterLostPubrec(t, func(pub *Conn, id uint16, done func(error)) {
				if c.sameID {
					if !pub.Hold(id) {
						t.Fatalf("id %d not free on the new connection", id)
					}
					pub.PublishID(id, true, "r/x", 2, false, Props{}, []byte("once"), nil, done)
				} else {
					pub.Hold(id) // a new id: any but the first one's
					pub.Publish("r/x", 2, false, []byte("once"), func(err error) {
						if err != nil {
							done(err)
							return
						}
						pub.Release(id, done)
					})
				}
			})
			if got != c.wantSeen {
				t.Fatalf("subscriber got the message %d times, want %d", got, c.wantSeen)
			}
		})
	}
}

// A QoS 2 publish the broker acknowledged (PUBREC) whose PUBREL never went out is released on
// the resumed session: delivered once, and a second PUBREL for it only completes.
func TestReleaseOnResumedSession(t *testing.T) {
	got := resendAfterLostPubrec(t, func(pub *Conn, id uint16, done func(error)) {
		pub.Release(id, func(err error) {
			if err != nil {
				done(err)
				return
			}
			pub.Release(id, done)
		})
	})
	if got != 1 {
		t.Fatalf("subscriber got the message %d times, want once", got)
	}
}

// resendAfterLostPubrec publishes one QoS 2 message on a persistent session and ends the
// connection when PUBREC arrives, before PUBREL; then it resumes the session, runs again on the
// new connection (with the first publish's id) and returns how often a subscriber got it.
func resendAfterLostPubrec(t *testing.T, again func(pub *Conn, id uint16, done func(error))) int {
	t.Helper()
	b := mosqtest.Start(t, mosqtest.Options{})
	col := newCollector()
	sub, _, err := Dial(context.Background(), b.Addr, ConnectOptions{ClientID: "sub", Protocol: 4, CleanSession: true, Keepalive: 5 * time.Second}, col.on)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Subscribe(context.Background(), map[string]byte{"r/#": 2}); err != nil {
		t.Fatal(err)
	}
	o := ConnectOptions{ClientID: "pub", Protocol: 4, CleanSession: false, Keepalive: 5 * time.Second}
	pub, _, err := Dial(context.Background(), b.Addr, o, func(*Message) {})
	if err != nil {
		t.Fatal(err)
	}
	id := pub.HoldNext()
	lost := make(chan error, 1)
	pub.PublishID(id, false, "r/x", 2, false, Props{}, []byte("once"), func() { pub.Fail(ErrConnLost) }, func(err error) { lost <- err })
	if err := <-lost; err != ErrConnLost {
		t.Fatalf("first publish ended with %v, want ErrConnLost", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(col.msgs); n != 0 {
		t.Fatalf("delivered before PUBREL: %d", n)
	}
	pub, present, err := Dial(context.Background(), b.Addr, o, func(*Message) {})
	if err != nil || !present {
		t.Fatalf("resume: %v, session present %v", err, present)
	}
	defer pub.Close()
	done := make(chan error, 1)
	again(pub, id, func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no completion")
	}
	time.Sleep(300 * time.Millisecond)
	col.mu.Lock()
	defer col.mu.Unlock()
	return len(col.msgs)
}
