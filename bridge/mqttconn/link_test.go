package mqttconn

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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
	var got, foreign, noID atomic.Int32
	var prepared atomic.Pointer[Conn]
	var preparedPresent, preparedLate atomic.Bool
	// Prepare runs before anything is read and before the connection is the current one.
	l.Prepare = func(c *Conn, present bool) {
		preparedPresent.Store(present)
		preparedLate.Store(l.Conn() == c || got.Load() > 0)
		prepared.Store(c)
	}
	all := make(chan struct{})
	l.OnPublish = func(m *Message) {
		if l.Conn() != m.Conn() || prepared.Load() != m.Conn() {
			foreign.Add(1)
		}
		if m.ID == 0 || m.Dup {
			noID.Add(1) // never sent before: DUP 0, and a packet id
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
		t.Errorf("%d of %d queued messages arrived before their connection was the link's current one (or prepared)", f, n)
	}
	if !preparedPresent.Load() || preparedLate.Load() {
		t.Errorf("Prepare saw session present %v, ran late %v", preparedPresent.Load(), preparedLate.Load())
	}
	if k := noID.Load(); k > 0 {
		t.Errorf("%d queued QoS 1 messages without a packet id or with DUP", k)
	}
	if c := l.Conn(); c != nil {
		c.Close()
	}
}

// Connect failures: the first of an outage at Warn with its reason, then at most one Warn per
// WarnEvery carrying the count of failures since, the rest at Debug.
func TestLinkConnectFailureWarnsRateLimited(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", mosqtest.FreePort(t)) // nothing listens there
	var logs lockedLog
	l := &Link{Addr: addr, Options: ConnectOptions{ClientID: "link-fail", Protocol: 4},
		Log:       slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		WarnEvery: 700 * time.Millisecond,
		Up:        func(context.Context, *Conn, bool) error { return nil }, Down: func(error) {}}
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	l.Run(ctx)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], `msg="connect failed"`) || !strings.Contains(lines[0], "connection refused") {
		t.Fatalf("first failure not a Warn with the reason:\n%s", logs.String())
	}
	warns, debugs, still, since := 0, 0, 0, 0
	for _, line := range lines {
		switch {
		case strings.Contains(line, "level=WARN"):
			warns++
			if strings.Contains(line, "connect still failing") {
				still++
				// The count covers the failures logged at Debug since the last Warn, and this one.
				var n int
				if _, err := fmt.Sscanf(line[strings.Index(line, "failures="):], "failures=%d", &n); err != nil || n != since+1 {
					t.Errorf("still failing: count %d, want %d: %s", n, since+1, line)
				}
			}
			since = 0
		case strings.Contains(line, "level=DEBUG"):
			debugs++
			since++
		}
	}
	if still == 0 || debugs == 0 || warns > 1+int(2500/700) {
		t.Errorf("warns %d (still failing %d), debugs %d: want rate limited Warns with Debug between:\n%s", warns, still, debugs, logs.String())
	}
}

type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
