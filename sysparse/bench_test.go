package sysparse

import (
	"fmt"
	"strings"
	"testing"
)

// benchLines is a realistic mix as a busy broker logs it (epoch timestamps): per client a
// "New connection", a connect, three subscribes, an unsubscribe and a disconnect, every
// tenth client with spaces in its id.
func benchLines() []logLine {
	var ls []logLine
	add := func(topic, msg string) { ls = append(ls, logLine{topic, mosqLine("1795313233", msg)}) }
	for i := range 100 {
		id := fmt.Sprintf("sensor-%04d", i)
		if i%10 == 0 {
			id = fmt.Sprintf("living room %d", i)
		}
		add(TopicNotice, fmt.Sprintf("New connection from 10.0.%d.%d:%d on port 1883.", i/250, i%250, 40000+i))
		add(TopicNotice, fmt.Sprintf("New client connected from 10.0.%d.%d:%d as %s (p2, c%d, k60).", i/250, i%250, 40000+i, id, i%2))
		add(TopicSubscribe, fmt.Sprintf("%s 1 building/3/floor/%d/room/+/temperature", id, i%7))
		add(TopicSubscribe, id+" 0 alerts/#")
		add(TopicSubscribe, fmt.Sprintf("%s 2 $share/workers/jobs/%d", id, i%5))
		add(TopicUnsubscribe, id+" alerts/#")
		add(TopicNotice, "Client "+id+" disconnected.")
	}
	return ls
}

func BenchmarkParse(b *testing.B) {
	lines := benchLines()
	payloads := make([][]byte, len(lines))
	bytes := 0
	for i, l := range lines {
		payloads[i] = []byte(l.payload)
		bytes += len(l.payload)
	}
	p := NewParser()
	b.ReportAllocs()
	b.SetBytes(int64(bytes / len(lines)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		j := i % len(lines)
		if _, err := p.Parse(lines[j].topic, payloads[j]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseWorstCase is a cut unsubscribe line of spaces and ": " before any timestamp
// was learned: every prefix and every split is a reading.
func BenchmarkParseWorstCase(b *testing.B) {
	payload := []byte(mosqLine("", strings.Repeat("a: ", 400)))
	b.ReportAllocs()
	for b.Loop() {
		p := NewParser()
		if _, err := p.Parse(TopicUnsubscribe, payload); err != nil {
			b.Fatal(err)
		}
	}
}
