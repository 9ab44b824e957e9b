// relayout.go owns relays out: the choice of the peers a local publish goes to, and each peer's
// sender, which publishes its queue to the peer broker one relay or one batch at a time and
// settles the relays the peer broker acknowledged.

package bridge

import (
	"context"
	"time"
)

// relayToPeers sends a local publish to each peer that wants it; retained ones go to every peer;
// shares adds the peers its shared subscriptions need (share.go; nil: none). The local broker
// gets its acknowledgement once every one of those relays is settled. epoch is that of the local
// session m arrived on (epoch.go): with m's packet id it is the relay's identity, and m's DUP
// flag marks it as a possible repeat. stamp orders a retained write (retainedState.local).
// It returns the peers it went to, bit i for peers[i] (the first 64), and the properties it
// gave them (nil when it went nowhere or had none).
func relayToPeers(m *message, epoch uint64, peers []*peer, shares *shareRouter, stamp uint64) (sent uint64, props *relayProps) {
	var dests [16]*peer
	to := dests[:0]
	for _, p := range peers {
		if m.Retain || p.interest.Wants(m.Topic) {
			to = append(to, p)
		}
	}
	to = shares.route(m.Topic, peers, to)
	if len(to) == 0 {
		m.Ack()
		return 0, nil
	}
	for _, p := range to {
		for i, q := range peers[:min(len(peers), 64)] {
			if q == p {
				sent |= 1 << i
				break
			}
		}
	}
	props = propsOf(m) // one copy for every peer: relays never change it
	var g *ackGroup
	if m.QoS > 0 {
		g = &ackGroup{msg: m}
		g.left.Store(int32(len(to)))
	}
	for _, p := range to {
		p.enqueue(&relay{topic: m.Topic, payload: m.Payload, qos: m.QoS, retain: m.Retain, group: g,
			mid: m.ID, epoch: epoch, repeat: m.Dup, stamp: stamp, props: props})
	}
	return sent, props
}

// send publishes queued relays until ctx ends: one at a time when idle, many per forward
// publish when a backlog exists, at most cap(p.inflight) forward publishes unacknowledged.
func (p *peer) send(ctx context.Context) {
	var buf []*relay
	for {
		rs, ok := p.queue.popBatch(ctx, buf[:0], maxBatchItems, maxBatchBytes)
		if !ok {
			return
		}
		if n := sameEpoch(rs); n < len(rs) {
			p.queue.pushFront(rs[n:]) // a batch carries one epoch
			rs = rs[:n]
		}
		if rs = p.dropExpired(rs); len(rs) == 0 {
			buf = rs
			continue
		}
		c := p.conn()
		if c == nil {
			// The link is down: the relays wait in the queue, where the buffer's bounds and
			// metrics count them, not in the sender's hands.
			p.queue.pushFront(rs) // settled there if the peer is parked or removed
			buf = rs[:0]
			if _, ok := p.waitConn(ctx); !ok {
				return
			}
			continue
		}
		select {
		case p.inflight <- struct{}{}:
		case <-ctx.Done():
			p.queue.pushFront(rs)
			return
		}
		batch := append([]*relay(nil), rs...) // owned by the completion callback
		var topic string
		var parts [][]byte
		var qos byte
		var isBatch bool
		version := p.wireVersion()
		switch {
		case version < 2:
			var payload []byte
			topic, payload, qos, isBatch = p.env.wire.encodeV1(batch) // an agent of an earlier release
			parts = [][]byte{payload}
		case len(batch) == 1 && len(batch[0].payload) >= largeRelay:
			var head, tail []byte
			topic, head, tail, qos = p.env.wire.encodeLarge(batch[0], version >= 3)
			parts, isBatch = [][]byte{head, batch[0].payload, tail}, true
		default:
			var payload []byte
			topic, payload, qos, isBatch = p.env.wire.encode(batch, version >= 3)
			parts = [][]byte{payload}
		}
		p.relayed.Add(uint64(len(batch)))
		for _, b := range parts {
			p.relayedBytes.Add(uint64(len(b)))
		}
		if isBatch {
			p.batches.Add(1)
		}
		c.PublishParts(topic, qos, false, parts, func(err error) {
			<-p.inflight
			if err == nil {
				for _, r := range batch {
					r.settle()
				}
				return
			}
			// Cut off by a lost connection: back to the head of the queue, marked as repeats
			// (the peer may have them: its agent drops those it republished, dedupe.go). A
			// parked queue settles them.
			p.retries.Add(uint64(len(batch)))
			for _, r := range batch {
				r.repeat = true
			}
			p.queue.pushFront(batch)
		})
		buf = rs
	}
}

// dropExpired settles and removes the relays whose Message Expiry Interval ran out while they
// waited (a message that expires on the way is not delivered); rs keeps its order.
func (p *peer) dropExpired(rs []*relay) []*relay {
	var now int64
	kept := rs[:0]
	for _, r := range rs {
		if r.props != nil && r.props.Expiry != 0 {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			if _, ok := remaining(r.props.Props, r.props.received, now); !ok {
				p.expired.Add(1)
				r.settle()
				continue
			}
		}
		kept = append(kept, r)
	}
	clear(rs[len(kept):])
	return kept
}

// sameEpoch is how many relays at the head of rs share the first one's epoch.
func sameEpoch(rs []*relay) int {
	for i := 1; i < len(rs); i++ {
		if rs[i].epoch != rs[0].epoch {
			return i
		}
	}
	return len(rs)
}
