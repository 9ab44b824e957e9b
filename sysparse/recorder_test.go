package sysparse

import (
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// logLine is one message of $SYS/broker/log/#.
type logLine struct {
	topic   string
	payload string
}

// recorder subscribes to $SYS/broker/log/# with paho and keeps every message in order.
type recorder struct {
	t      testing.TB
	client mqtt.Client
	mu     sync.Mutex
	lines  []logLine
	last   time.Time
	notify chan struct{}
}

func newRecorder(t testing.TB, addr, id string) *recorder {
	t.Helper()
	r := &recorder{t: t, notify: make(chan struct{}, 1)}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		r.mu.Lock()
		r.lines = append(r.lines, logLine{m.Topic(), string(m.Payload())})
		r.last = time.Now()
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetProtocolVersion(4).SetAutoReconnect(false).SetDefaultPublishHandler(handler)
	r.client = mqtt.NewClient(opts)
	if tok := r.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("recorder connect: %v", tok.Error())
	}
	if tok := r.client.Subscribe(TopicLog, 0, handler); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("recorder subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { r.client.Disconnect(100) })
	r.waitFor(TopicSubscribe, " "+TopicLog)
	return r
}

// snapshot returns the lines so far.
func (r *recorder) snapshot() []logLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]logLine(nil), r.lines...)
}

// waitFor waits until a line of topic (any topic if "") that ends with suffix has arrived. It
// scans every line recorded so far: callers use suffixes that are unique in the recording.
func (r *recorder) waitFor(topic, suffix string) logLine {
	r.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, l := range r.snapshot() {
			if (topic == "" || l.topic == topic) && strings.HasSuffix(l.payload, suffix) {
				return l
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no log line %s ...%q; got:\n%s", topic, suffix, dump(r.snapshot()))
		}
		select {
		case <-r.notify:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitCount waits until n lines have arrived in all.
func (r *recorder) waitCount(n int) {
	r.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(r.snapshot()) < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("want %d log lines; got:\n%s", n, dump(r.snapshot()))
		}
		select {
		case <-r.notify:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// quiet waits until no line has arrived for d.
func (r *recorder) quiet(d time.Duration) {
	for {
		r.mu.Lock()
		since := time.Since(r.last)
		r.mu.Unlock()
		if since >= d {
			return
		}
		time.Sleep(d - since)
	}
}

func dump(lines []logLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.topic + "\t" + l.payload + "\n")
	}
	return b.String()
}
