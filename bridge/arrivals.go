// arrivals.go owns the record of when QoS >= 1 publishes reached the local broker, as the agent
// saw them (a local client's, or a peer's relay it republished): a hand-over (sessionwork.go)
// asks it which of a session's messages came after the client connected on another node, and so
// reached the client there already.

package bridge

import (
	"hash/maphash"
	"sync"
	"time"
)

// arrivalLogSize is how many arrivals the log remembers: 16 bytes each, 1 MiB in all; at 100
// msg/s that is 11 minutes, at 20,000 msg/s 3.3 s. A message that is no longer remembered
// counts as unknown, and a hand-over forwards it (as it did before the log existed).
const arrivalLogSize = 1 << 16

// arrivalLog is a ring of (topic and payload hash, arrival time). Written on the dispatcher,
// read by the session worker. A nil log remembers nothing.
type arrivalLog struct {
	mu   sync.Mutex
	seed maphash.Seed
	keys [arrivalLogSize]uint64
	at   [arrivalLogSize]int64 // Unix milliseconds; 0: an empty slot
	next int
}

func newArrivalLog() *arrivalLog { return &arrivalLog{seed: maphash.MakeSeed()} }

func (l *arrivalLog) key(topic string, payload []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	h.WriteString(topic)
	h.WriteByte(0)
	h.Write(payload)
	return h.Sum64()
}

// note records that a publish of topic with payload reached the broker at t.
func (l *arrivalLog) note(topic string, payload []byte, t time.Time) {
	if l == nil {
		return
	}
	k := l.key(topic, payload)
	l.mu.Lock()
	l.keys[l.next], l.at[l.next] = k, t.UnixMilli()
	l.next = (l.next + 1) % arrivalLogSize
	l.mu.Unlock()
}

// arrivedAfter reports, for each of ms, whether it is remembered to have reached the broker
// at cut or later, and no earlier: a payload that repeats on its topic is taken at its earliest
// arrival, so that a hand-over forwards it rather than miss one. One pass over the ring for all.
func (l *arrivalLog) arrivedAfter(ms []*message, cut time.Time) []bool {
	after := make([]bool, len(ms))
	if l == nil || len(ms) == 0 {
		return after
	}
	earliest := make(map[uint64]int64, len(ms))
	keys := make([]uint64, len(ms))
	for i, m := range ms {
		keys[i] = l.key(m.Topic, m.Payload)
		earliest[keys[i]] = 0
	}
	l.mu.Lock()
	for i, k := range l.keys {
		if e, ok := earliest[k]; ok && l.at[i] != 0 && (e == 0 || l.at[i] < e) {
			earliest[k] = l.at[i]
		}
	}
	l.mu.Unlock()
	for i, k := range keys {
		after[i] = earliest[k] != 0 && earliest[k] >= cut.UnixMilli()
	}
	return after
}
