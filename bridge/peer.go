package bridge

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Batching bounds: one forward publish carries at most this many relays or about this many
// payload bytes.
const (
	maxBatchItems = 512
	maxBatchBytes = 256 << 10
)

// peer is the link to one peer broker: it learns that broker's interest and carries relays to it.
type peer struct {
	name     string
	addr     string
	tls      *tls.Config
	log      *slog.Logger
	interest *remoteInterest
	queue    *relayQueue
	link     *link
	inflight chan struct{}      // a token per unacknowledged forward publish
	stop     context.CancelFunc // ends the link and the sender; set by startPeer

	mu    sync.Mutex
	up    bool
	ready chan struct{} // closed while up
	// retainedWhileDown holds the topics of retained relays queued while the peer was down: the
	// retained pull from that peer must not overwrite them with its older values.
	retainedWhileDown map[string]bool

	// Counters, read by Stats.
	relayed, relayedBytes, batches, refused, forged, retries atomic.Uint64
	upSince, downSince                                       atomic.Int64 // unix nanoseconds
	pingAt                                                   atomic.Int64 // last pingPresence
}

func newPeer(pa PeerAddr, a *Agent) *peer {
	p := &peer{
		name:     pa.Name,
		addr:     pa.Address,
		tls:      pa.TLS,
		log:      a.log.With("peer", pa.Name),
		interest: newRemoteInterest(),
		queue:    newRelayQueue(a.opts.BufferMessages, a.opts.BufferBytes),
		inflight: make(chan struct{}, a.opts.MaxInflight),
		ready:    make(chan struct{}),
	}
	p.downSince.Store(time.Now().UnixNano())
	return p
}

// Up reports whether the connection to the peer broker is established.
func (p *peer) Up() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up
}

func (p *peer) setUp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.up {
		return
	}
	p.up = true
	close(p.ready)
	p.upSince.Store(time.Now().UnixNano())
	p.queue.setParked(false)
}

func (p *peer) setDown() {
	p.mu.Lock()
	if !p.up {
		p.mu.Unlock()
		return
	}
	p.up = false
	p.ready = make(chan struct{})
	p.downSince.Store(time.Now().UnixNano())
	p.mu.Unlock()
	// What the peer's clients want while it is away is unknown: relay everything (the queue
	// keeps it, bounded) until its interest is synced again after it returns.
	p.interest.setSynced(false)
	// The local broker must not wait for a peer that is gone: what is queued stays queued
	// (bounded) and is sent when the peer returns.
	p.queue.setParked(true)
}

// waitConn blocks until the link is up and returns its connection.
func (p *peer) waitConn(ctx context.Context) (*conn, bool) {
	for {
		p.mu.Lock()
		up, ready := p.up, p.ready
		p.mu.Unlock()
		if up {
			if c := p.link.Conn(); c != nil {
				return c, true
			}
		}
		select {
		case <-ready:
		case <-time.After(50 * time.Millisecond): // the link may be between connections
		case <-ctx.Done():
			return nil, false
		}
	}
}

// disconnect closes the current connection, if any.
// markRetained records the retained relays among rs as not yet delivered to the peer.
func (p *peer) markRetained(rs []*relay) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rs {
		if r.retain {
			if p.retainedWhileDown == nil {
				p.retainedWhileDown = map[string]bool{}
			}
			p.retainedWhileDown[r.topic] = true
		}
	}
}

// takeRetainedWhileDown returns and clears the topics of retained relays queued while down.
func (p *peer) takeRetainedWhileDown() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.retainedWhileDown
	p.retainedWhileDown = nil
	return t
}

func (p *peer) disconnect() {
	if p.link != nil {
		if c := p.link.Conn(); c != nil {
			c.Close()
		}
	}
}

// enqueue hands a relay to the peer. A QoS 0 relay to a peer that is down is dropped, as a
// QoS 0 publish to a broker that is down would be, unless it sets a retained value.
func (p *peer) enqueue(r *relay) {
	if !p.Up() {
		if r.retain {
			p.markRetained([]*relay{r})
		} else if r.qos == 0 {
			p.queue.dropped.Add(1)
			r.settle()
			return
		}
	}
	if n := p.queue.push(r); n > 0 {
		p.log.Warn("relay buffer full, dropped the oldest QoS 0 or parked relays", "dropped", n, "buffered", p.queue.Len())
	}
}

// send publishes queued relays until ctx ends: one at a time when idle, many per forward
// publish when a backlog exists, at most cap(p.inflight) forward publishes unacknowledged.
func (p *peer) send(ctx context.Context, a *Agent) {
	var buf []*relay
	for {
		rs, ok := p.queue.popBatch(ctx, buf[:0], maxBatchItems, maxBatchBytes)
		if !ok {
			return
		}
		c, ok := p.waitConn(ctx)
		if !ok {
			p.queue.pushFront(rs) // settled there if the peer is parked or removed
			return
		}
		select {
		case p.inflight <- struct{}{}:
		case <-ctx.Done():
			p.queue.pushFront(rs)
			return
		}
		batch := append([]*relay(nil), rs...) // owned by the completion callback
		topic, payload, qos := a.forwardPublish(p, batch)
		p.relayed.Add(uint64(len(batch)))
		p.relayedBytes.Add(uint64(len(payload)))
		if topic == a.topics.Batch(a.opts.Node) {
			p.batches.Add(1)
		}
		c.Publish(topic, qos, false, payload, func(err error) {
			<-p.inflight
			if err == nil {
				for _, r := range batch {
					r.settle()
				}
				return
			}
			// Cut off by a lost connection: back to the head of the queue (at least once: the
			// peer may see a duplicate). A parked queue settles them. Retained values among
			// them are newer than the peer's: its retained pull must not revert them.
			p.retries.Add(uint64(len(batch)))
			p.markRetained(batch)
			p.queue.pushFront(batch)
		})
		buf = rs
	}
}

// forwardPublish builds the forward publish for relays to p: the plain forward topic for one
// relay, a batch otherwise, signed when the cluster has a secret.
func (a *Agent) forwardPublish(p *peer, rs []*relay) (topic string, payload []byte, qos byte) {
	// A retained value must reach the peer even when published at QoS 0 (contract 5): it travels
	// in a batch, which keeps its own QoS for the republish, acknowledged at QoS 1.
	if len(rs) == 1 && !(rs[0].retain && rs[0].qos == 0) {
		r := rs[0]
		topic = a.topics.Forward(r.topic, r.retain)
		return topic, a.signer.seal(topic, r.payload), r.qos
	}
	size := 16
	for _, r := range rs {
		size += len(r.topic) + len(r.payload) + 8
		qos = max(qos, r.qos)
		if r.retain {
			qos = max(qos, 1)
		}
	}
	if a.signer != nil {
		size += tagSize
	}
	topic = a.topics.Batch(a.opts.Node)
	payload = appendBatch(make([]byte, 0, size), rs)
	if a.signer != nil {
		payload = a.signer.tag(payload, topic, payload)
	}
	return topic, payload, qos
}
