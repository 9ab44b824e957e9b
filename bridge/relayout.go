// relayout.go owns relays out: the choice of the peers a local publish goes to, and each peer's
// sender, which publishes its queue to the peer broker one relay or one batch at a time and
// settles the relays the peer broker acknowledged.

package bridge

import "context"

// relayToPeers sends a local publish to each peer that wants it; retained ones go to every peer;
// shares adds the peers its shared subscriptions need (share.go; nil: none). The local broker
// gets its acknowledgement once every one of those relays is settled. stamp orders a retained
// write (retainedState.local).
func relayToPeers(m *message, peers []*peer, shares *shareRouter, stamp uint64) {
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
		return
	}
	var g *ackGroup
	if m.QoS > 0 {
		g = &ackGroup{msg: m}
		g.left.Store(int32(len(to)))
	}
	for _, p := range to {
		p.enqueue(&relay{topic: m.Topic, payload: m.Payload, qos: m.QoS, retain: m.Retain, stamp: stamp, group: g})
	}
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
		topic, payload, qos, isBatch := p.env.wire.encode(batch)
		p.relayed.Add(uint64(len(batch)))
		p.relayedBytes.Add(uint64(len(payload)))
		if isBatch {
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
			// peer may see a duplicate). A parked queue settles them.
			p.retries.Add(uint64(len(batch)))
			p.queue.pushFront(batch)
		})
		buf = rs
	}
}
