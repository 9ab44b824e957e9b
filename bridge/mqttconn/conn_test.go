package mqttconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

type collector struct {
	mu   sync.Mutex
	msgs []*Message
	ch   chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1000)} }

func (c *collector) on(m *Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	m.Ack()
	c.ch <- struct{}{}
}

func (c *collector) wait(t *testing.T, n int) []*Message {
	t.Helper()
	for i := 0; ; i++ {
		c.mu.Lock()
		got := len(c.msgs)
		c.mu.Unlock()
		if got >= n {
			break
		}
		select {
		case <-c.ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d messages, want %d", got, n)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Message(nil), c.msgs...)
}

func TestConnPublishSubscribeQoS(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	col := newCollector()
	c, present, err := Dial(context.Background(), b.Addr, ConnectOptions{ClientID: "conn-test", Protocol: 4, CleanSession: true, Keepalive: 5 * time.Second}, col.on)
	if err != nil || present {
		t.Fatalf("dial: %v present=%v", err, present)
	}
	defer c.Close()
	if err := c.Subscribe(context.Background(), map[string]byte{"t/#": 2}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for q := byte(0); q <= 2; q++ {
		wg.Add(1)
		c.Publish("t/x", q, false, []byte(fmt.Sprint(q)), func(err error) {
			if err != nil {
				t.Errorf("publish QoS %d: %v", q, err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	got := col.wait(t, 3)
	for i, m := range got {
		if m.Topic != "t/x" || string(m.Payload) != fmt.Sprint(i) || m.QoS != byte(i) {
			t.Errorf("message %d: %s %q QoS %d", i, m.Topic, m.Payload, m.QoS)
		}
	}
	// A large payload crosses the read buffer.
	big := make([]byte, 200<<10)
	c.Publish("t/big", 1, false, big, nil)
	if m := col.wait(t, 4)[3]; len(m.Payload) != len(big) {
		t.Errorf("big payload: %d bytes", len(m.Payload))
	}
}

func TestConnBridgeBitNoLocal(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	col := newCollector()
	c, _, err := Dial(context.Background(), b.Addr, ConnectOptions{ClientID: "bridge-test", Protocol: 0x84, CleanSession: true}, col.on)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Subscribe(context.Background(), map[string]byte{"#": 1})
	done := make(chan error, 1)
	c.Publish("own", 1, false, []byte("x"), func(err error) { done <- err })
	<-done
	other := newCollector()
	o, _, err := Dial(context.Background(), b.Addr, ConnectOptions{ClientID: "other", Protocol: 4, CleanSession: true}, other.on)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	o.Publish("theirs", 1, false, []byte("y"), nil)
	got := col.wait(t, 1)
	time.Sleep(100 * time.Millisecond)
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.msgs) != 1 || got[0].Topic != "theirs" {
		t.Errorf("bridge-bit connection received %d messages (first %q); want only the other client's", len(col.msgs), got[0].Topic)
	}
}

func TestConnLostCompletesInFlight(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	c, _, err := Dial(context.Background(), b.Addr, ConnectOptions{ClientID: "lost-test", Protocol: 4, CleanSession: true, Keepalive: time.Second}, func(*Message) {})
	if err != nil {
		t.Fatal(err)
	}
	b.Kill()
	select {
	case <-c.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("connection did not notice the broker's death")
	}
	res := make(chan error, 1)
	c.Publish("x", 1, false, nil, func(err error) { res <- err })
	if err := <-res; !errors.Is(err, ErrConnLost) {
		t.Errorf("publish on a dead connection: %v", err)
	}
	if _, _, err := Dial(context.Background(), b.Addr, ConnectOptions{ClientID: "x", Protocol: 4}, func(*Message) {}); err == nil {
		t.Error("dial to a dead broker succeeded")
	}
}

// A peer that stops reading (a blackhole) is noticed within the keepalive, and Close returns.
func TestConnBlackholedPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 1024)
		s.Read(buf)                                                       // CONNECT
		s.Write(AppendPacket(nil, FixedHeader(Connack, 0), []byte{0, 0})) // CONNACK, then silence
		time.Sleep(20 * time.Second)
		s.Close()
	}()
	c, _, err := Dial(context.Background(), ln.Addr().String(), ConnectOptions{ClientID: "x", Protocol: 4, CleanSession: true, Keepalive: time.Second}, func(*Message) {})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 64<<10)
	go func() {
		for i := 0; i < 2000; i++ {
			c.Publish("t", 0, false, payload, nil)
		}
	}()
	select {
	case <-c.Done():
	case <-time.After(8 * time.Second):
		t.Fatal("a blackholed peer was not noticed within 8 s (keepalive 1 s)")
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close blocked on a blackholed peer")
	}
}

// A broker's refusal reaches the caller as ErrRefused with the CONNACK's reason.
func TestDialRefused(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	_, _, err := Dial(context.Background(), b.Addr, ConnectOptions{ClientID: "refused", Protocol: 7, CleanSession: true}, func(*Message) {})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "unacceptable protocol version") {
		t.Errorf("CONNECT with protocol level 7: %v, want ErrRefused: unacceptable protocol version", err)
	}
}
