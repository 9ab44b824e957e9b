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

// relay is one publish on its way to one peer.
type relay struct {
	topic   string // the original topic
	payload []byte
	qos     byte
	retain  bool
	group   *ackGroup // nil when nobody waits for it
	settled bool      // group already settled (parked while the peer was down)
}

func (r *relay) settle() {
	if !r.settled {
		r.settled = true
		r.group.settle()
	}
}

// relayQueue is a bounded FIFO of relays for one peer. When full it drops the oldest relay,
// so a dead or slow peer costs bounded memory and never stalls the others.
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

// push appends r, dropping the oldest relays while the queue is over its bounds.
// It returns how many relays it dropped.
func (q *relayQueue) push(r *relay) (dropped int) {
	q.mu.Lock()
	for q.n > 0 && (q.n >= q.maxItems || q.bytes+len(r.payload) > q.maxBytes) {
		old := q.popLocked()
		old.settle()
		dropped++
	}
	if q.n == len(q.items) {
		q.grow()
	}
	if q.parked {
		r.settle()
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
