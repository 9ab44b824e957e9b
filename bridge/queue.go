// queue.go owns the relays on their way to one peer: the relay, the group that acknowledges a
// local publish once every peer settled it, and the bounded per-peer queue.

package bridge

import (
	"context"
	"sync"
	"sync/atomic"
)

// ackGroup acknowledges a local message to its broker once every peer relay of it is settled:
// acknowledged by the peer broker, or parked in a buffer for a peer that is down.
type ackGroup struct {
	left atomic.Int32
	msg  *message
}

func (g *ackGroup) settle() {
	if g != nil && g.left.Add(-1) == 0 {
		g.msg.Ack()
	}
}

// relay is one publish on its way to one peer. Its fields are ordered to pack (80 bytes).
type relay struct {
	topic   string // the original topic
	payload []byte
	group   *ackGroup   // nil when nobody waits for it
	props   *relayProps // its MQTT 5 properties; nil: none
	// The relay's identity on the wire (doc.go): the packet id the local broker delivered the
	// publish with (0 for QoS 0) in the local session of epoch; repeat when it may have been
	// sent before (the broker's DUP flag, or a retry after a link loss).
	epoch   uint64
	stamp   uint64 // a retained write's hybrid logical clock, 0 = none (retained.go)
	mid     uint16
	qos     byte
	retain  bool
	settled bool // group already settled (parked while the peer was down)
	repeat  bool
}

func (r *relay) settle() {
	if !r.settled {
		r.settled = true
		r.group.settle()
	}
}

// relayQueue is a FIFO of relays for one peer, bounded for the relays it may drop.
//
// It never drops a relay the local broker waits for (an unsettled QoS 1 or 2 relay: its
// message is not acknowledged yet), since the broker would then count it delivered: over its
// bounds it keeps them and applies backpressure instead. Unacknowledged messages hold the
// broker's in-flight window for the agent's session, so the broker sends no further QoS 1/2
// message until some are acknowledged and queues them in that session meanwhile. Those relays
// are therefore bounded by the broker's max_inflight_messages (default 20) and
// max_inflight_bytes times the message size, not by maxBytes. Over its bounds the queue drops,
// oldest first, only relays nobody waits for: QoS 0 relays, and relays already settled because
// the peer is down (parked), so a dead or slow peer costs bounded memory and never stalls the
// others.
type relayQueue struct {
	mu       sync.Mutex
	items    []*relay // ring buffer
	head, n  int
	bytes    int
	maxItems int
	maxBytes int
	notify   chan struct{} // a token when items were added
	// parked: the peer is down, so every relay in the queue (and every one added) is settled at
	// once: the local broker must not wait for it. The relays stay queued and are sent when the
	// peer returns.
	parked bool

	dropped atomic.Uint64
}

func newRelayQueue(maxItems, maxBytes int) *relayQueue {
	return &relayQueue{items: make([]*relay, 64), maxItems: maxItems, maxBytes: maxBytes,
		notify: make(chan struct{}, 1)}
}

func (q *relayQueue) grow() {
	items := make([]*relay, len(q.items)*2)
	for i := 0; i < q.n; i++ {
		items[i] = q.items[(q.head+i)%len(q.items)]
	}
	q.items, q.head = items, 0
}

// push appends r. While the queue is over its bounds it drops the oldest relays nobody waits
// for (see relayQueue), or r itself when it is one and no other is; it keeps the others.
// It returns how many relays it dropped.
func (q *relayQueue) push(r *relay) (dropped int) {
	q.mu.Lock()
	if q.parked {
		r.settle()
	}
	for q.n > 0 && (q.n >= q.maxItems || q.bytes+len(r.payload) > q.maxBytes) {
		i := q.firstDroppableLocked()
		if i < 0 {
			break
		}
		q.removeLocked(i).settle()
		dropped++
	}
	if q.n > 0 && (q.n >= q.maxItems || q.bytes+len(r.payload) > q.maxBytes) && droppable(r) {
		q.mu.Unlock()
		q.dropped.Add(uint64(dropped + 1))
		return dropped + 1
	}
	if q.n == len(q.items) {
		q.grow()
	}
	q.items[(q.head+q.n)%len(q.items)] = r
	q.n++
	q.bytes += len(r.payload)
	q.mu.Unlock()
	q.dropped.Add(uint64(dropped))
	q.wake()
	return dropped
}

// pushFront puts relays back at the head, in their order, to be retried first; it may exceed the
// bounds by the relays that were in flight.
func (q *relayQueue) pushFront(rs []*relay) {
	q.mu.Lock()
	for i := len(rs) - 1; i >= 0; i-- {
		if q.n == len(q.items) {
			q.grow()
		}
		q.head = (q.head - 1 + len(q.items)) % len(q.items)
		if q.parked {
			rs[i].settle()
		}
		q.items[q.head] = rs[i]
		q.n++
		q.bytes += len(rs[i].payload)
	}
	q.mu.Unlock()
	q.wake()
}

// droppable reports whether dropping r loses nothing the local broker counts as delivered: a
// QoS 0 relay, or one already settled (acknowledged while its peer was down).
func droppable(r *relay) bool { return r.group == nil || r.settled }

// firstDroppableLocked is the position, from the head, of the oldest droppable relay, or -1.
// Relays before it are ones the broker waits for, at most its in-flight window.
func (q *relayQueue) firstDroppableLocked() int {
	for i := 0; i < q.n; i++ {
		if droppable(q.items[(q.head+i)%len(q.items)]) {
			return i
		}
	}
	return -1
}

// removeLocked takes out the relay at position i from the head, moving the ones before it.
func (q *relayQueue) removeLocked(i int) *relay {
	at := func(k int) int { return (q.head + k) % len(q.items) }
	r := q.items[at(i)]
	for k := i; k > 0; k-- {
		q.items[at(k)] = q.items[at(k-1)]
	}
	q.items[q.head] = nil
	q.head = (q.head + 1) % len(q.items)
	q.n--
	q.bytes -= len(r.payload)
	return r
}

func (q *relayQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *relayQueue) popLocked() *relay {
	r := q.items[q.head]
	q.items[q.head] = nil
	q.head = (q.head + 1) % len(q.items)
	q.n--
	q.bytes -= len(r.payload)
	return r
}

// popBatch waits for relays or for ctx to end, then takes as many as are queued, up to
// maxItems and about maxBytes of payload (at least one). Under load this batches; when idle it
// returns the single relay at once, adding no latency.
func (q *relayQueue) popBatch(ctx context.Context, buf []*relay, maxItems, maxBytes int) ([]*relay, bool) {
	for {
		q.mu.Lock()
		if q.n > 0 {
			size := 0
			for q.n > 0 && len(buf) < maxItems && (len(buf) == 0 || size+len(q.items[q.head].payload) <= maxBytes) {
				r := q.popLocked()
				size += len(r.payload)
				buf = append(buf, r)
			}
			q.mu.Unlock()
			return buf, true
		}
		q.mu.Unlock()
		select {
		case <-q.notify:
		case <-ctx.Done():
			return buf, false
		}
	}
}

// setParked parks the queue while its peer is down (see parked) and unparks it when it returns.
func (q *relayQueue) setParked(v bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.parked = v
	if v {
		for i := 0; i < q.n; i++ {
			q.items[(q.head+i)%len(q.items)].settle()
		}
	}
}

// Len is the number of relays waiting.
func (q *relayQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Bytes is the payload bytes of the relays waiting, and the limit they are held to.
func (q *relayQueue) Bytes() (n, limit int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes, q.maxBytes
}
