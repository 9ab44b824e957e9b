// drained.go owns the record of what this node's session connections took out of a client's
// session here without the client getting it (a drain of a replica, a hand-over of a session
// the client left), and the filter of it a registry entry carries: the node a client left hands
// over (sessionwork.go) the messages its new node took out like that, which the client may
// never have got, and acknowledges the rest, which it gets at its new node.

package bridge

import (
	"sync"
	"time"
)

// drainedWindow is how far back, from a client's connect here, its filter covers what the
// drains discarded: a connection that died unseen is noticed by its client within 1.5 times its
// keepalive (60 s covers keepalives up to 40 s); what was drained earlier is not in the filter.
const drainedWindow = 60 * time.Second

// drainedLogSize is how many drained messages the log remembers, over all replicas: 24 bytes
// each, 1.5 MiB in all (at 1,000 drained msg/s, 65 s). When it no longer covers drainedWindow
// before a connect, the client's entry carries no filter, and a hand-over forwards everything
// it finds (as without filters: duplicates, never a loss).
const drainedLogSize = 1 << 16

// drainedKeep is how long after a client's connect here its registry entry carries its filter:
// the hand-overs it serves come within seconds (a takeover), or once the old broker noticed the
// dead connection (1.5 times the client's keepalive).
const drainedKeep = 2 * time.Minute

// drainedBudget bounds the filters' bytes in one registry: beyond it (many clients moved in the
// last drainedKeep) the entries of the oldest connects carry none.
const drainedBudget = 256 << 10

// drainedLog is a ring of (client id hash, message hash, time). Written by the session worker,
// read by the dispatcher when it publishes the registry.
type drainedLog struct {
	mu      sync.Mutex
	ids     [drainedLogSize]uint64
	msgs    [drainedLogSize]uint64
	at      [drainedLogSize]int64 // Unix ms
	next    int
	wrapped bool
}

// fnv64 is FNV-1a 64: the same on every node, which a hash that travels needs.
func fnv64(parts ...[]byte) uint64 {
	h := uint64(14695981039346656037)
	for i, p := range parts {
		if i > 0 {
			h = (h ^ 0xff) * 1099511628211 // a separator: ("a", "bc") hashes apart from ("ab", "c")
		}
		for _, b := range p {
			h ^= uint64(b)
			h *= 1099511628211
		}
	}
	return h
}

// messageHash identifies a message by its topic and payload.
func messageHash(m *message) uint64 { return fnv64([]byte(m.Topic), m.Payload) }

// note records that a drain discarded m from id's replica.
func (l *drainedLog) note(id string, m *message) {
	idh, mh, now := fnv64([]byte(id)), messageHash(m), time.Now().UnixMilli()
	l.mu.Lock()
	l.ids[l.next], l.msgs[l.next], l.at[l.next] = idh, mh, now
	if l.next++; l.next == drainedLogSize {
		l.next, l.wrapped = 0, true
	}
	l.mu.Unlock()
}

// filters returns, for each client id connected here at the given time, a filter of what the
// drains discarded for it within drainedWindow before that connect (and up to a second after:
// a drain's last acknowledgements may cross the connect). An id whose window the log no longer
// covers gets none. One pass over the ring.
func (l *drainedLog) filters(connects map[string]time.Time) map[string]drainedFilter {
	out := map[string]drainedFilter{}
	if len(connects) == 0 {
		return out
	}
	type want struct {
		id       string
		from, to int64
		hashes   []uint64
	}
	byHash := make(map[uint64]*want, len(connects))
	for id, t := range connects {
		byHash[fnv64([]byte(id))] = &want{id: id, from: t.Add(-drainedWindow).UnixMilli(), to: t.Add(time.Second).UnixMilli()}
	}
	l.mu.Lock()
	oldest := l.at[0]
	if l.wrapped {
		oldest = l.at[l.next]
	}
	for i := range l.ids {
		if w := byHash[l.ids[i]]; w != nil && l.at[i] >= w.from && l.at[i] <= w.to {
			w.hashes = append(w.hashes, l.msgs[i])
		}
	}
	l.mu.Unlock()
	for _, w := range byHash {
		if l.wrapped && oldest > w.from {
			continue // the ring lost part of the window: no filter, everything is forwarded
		}
		f := newDrainedFilter(len(w.hashes))
		for _, h := range w.hashes {
			f.add(h)
		}
		out[w.id] = f
	}
	return out
}

// drainedFilter is a Bloom filter of message hashes: 20 bits per message and 7 probes, about
// 0.02% false positives. A false positive forwards a message the client has (a duplicate); a
// message in the filter is never missed. Every message the old node's session takes for two
// minutes after the client left is checked against it, live ones included (the new node drained
// nearly everything of the 60 s before the connect, so its filter holds thousands): at 10 bits
// a message (1%) that repeated about one message a second at 100 msg/s until the client moved
// again, 10-30 per move in chaos runs. The probe count is unchanged, so agents of either size
// read each other's filters without a miss.
type drainedFilter []byte

const (
	drainedBitsPer  = 20
	drainedProbes   = 7
	drainedMinBytes = 8
	// drainedMaxBytes bounds a filter in a peer's registry (6,553 messages at 20 bits; past that
	// false positives grow, to 1% at twice as many).
	drainedMaxBytes = 16 << 10
)

func newDrainedFilter(n int) drainedFilter {
	size := min(max(drainedMinBytes, (n*drainedBitsPer+7)/8), drainedMaxBytes)
	return make(drainedFilter, size)
}

func (f drainedFilter) probe(h uint64, i int) (int, byte) {
	// Double hashing (Kirsch and Mitzenmacher): the two halves of one 64-bit hash.
	bit := (uint64(uint32(h)) + uint64(i)*(h>>32|1)) % uint64(len(f)*8)
	return int(bit / 8), 1 << (bit % 8)
}

func (f drainedFilter) add(h uint64) {
	for i := range drainedProbes {
		at, b := f.probe(h, i)
		f[at] |= b
	}
}

func (f drainedFilter) has(h uint64) bool {
	for i := range drainedProbes {
		if at, b := f.probe(h, i); f[at]&b == 0 {
			return false
		}
	}
	return true
}
