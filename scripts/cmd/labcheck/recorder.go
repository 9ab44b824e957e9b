// The recorder: what the pair sent, which messages were acknowledged and what arrived; the
// payload that carries the sequence.

package main

import (
	"encoding/binary"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// payloadLen is sequence + send time + run id.
const payloadLen = 24

type arrival struct {
	seq  uint64
	sent time.Time
	t    time.Time
	conn int64
	// visit is the broker of a return visit that collected it ("" for the live subscriber).
	visit string
}

type ack struct {
	t    time.Time
	conn int64
}

type recorder struct {
	mu       sync.Mutex
	sent     []time.Time // by seq; index 0 unused
	sentOn   []int64     // by seq: the publisher's connection up when it was sent, 0 when none was
	acks     map[uint64]ack
	arrivals []arrival
	warm     chan struct{}
	warmOnce sync.Once
	invalid  int
}

// record books one message the subscriber received on connection conn, or on a return visit
// to broker visit.
func (r *recorder) record(topic string, runID [8]byte, m mqtt.Message, conn int64, visit string) {
	now := time.Now()
	p := m.Payload()
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Topic() != topic || len(p) != payloadLen || string(p[16:24]) != string(runID[:]) {
		r.invalid++
		return
	}
	seq := binary.BigEndian.Uint64(p[0:8])
	if seq == 0 {
		r.warmOnce.Do(func() { close(r.warm) })
		return
	}
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(p[8:16])))
	r.arrivals = append(r.arrivals, arrival{seq: seq, sent: sent, t: now, conn: conn, visit: visit})
}

func (r *recorder) allAckedReceived() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := make(map[uint64]bool, len(r.arrivals))
	for _, a := range r.arrivals {
		got[a.seq] = true
	}
	for seq := range r.acks {
		if !got[seq] {
			return false
		}
	}
	return true
}
