package mqttconn

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

// A persistent session's queued messages arrive right after CONNACK; each must arrive on the
// link's current connection, or a user that drops messages from ended connections (the agent's
// dispatcher) drops them unacknowledged and the broker's in-flight window stalls the session.
func TestLinkCurrentBeforeFirstMessage(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	opts := ConnectOptions{ClientID: "link-session", Protocol: 4, Keepalive: 5 * time.Second}
	c, _, err := Dial(context.Background(), b.Addr, opts, func(*Message) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(context.Background(), map[string]byte{"q/#": 1}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	pub, _, err := Dial(context.Background(), b.Addr, ConnectOptions{ClientID: "link-pub", Protocol: 4, CleanSession: true}, func(*Message) {})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	done := make(chan error, n)
	for i := range n {
		pub.Publish("q/x", 1, false, []byte(fmt.Sprint(i)), func(err error) { done <- err })
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	pub.Close()

	l := &Link{Addr: b.Addr, Options: opts, Log: slog.New(slog.DiscardHandler)}
	var got, foreign atomic.Int32
	all := make(chan struct{})
	l.OnPublish = func(m *Message) {
		if l.Conn() != m.Conn() {
			foreign.Add(1)
		}
		m.Ack()
		if got.Add(1) == n {
			close(all)
		}
	}
	l.Up = func(context.Context, *Conn, bool) error { return nil }
	l.Down = func(error) {}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d of %d queued messages arrived", got.Load(), n)
	}
	if f := foreign.Load(); f > 0 {
		t.Errorf("%d of %d queued messages arrived before their connection was the link's current one", f, n)
	}
	if c := l.Conn(); c != nil {
		c.Close()
	}
}
