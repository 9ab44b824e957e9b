// relayin.go owns relays in: a relay addressed to this node is checked and decoded
// (relaywire.go) and each publish it carries is republished on the local connection; the relay
// is acknowledged once the local broker acknowledged every one.

package bridge

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// republishWindowQoS1 bounds unacknowledged QoS 1 republishes on the local connection; QoS 2
// ones are bounded by Options.MaxInflight.
const republishWindowQoS1 = 256

// relayIn republishes relays from peers on the local broker.
type relayIn struct {
	local  *mqttconn.Link
	wire   relayWire
	limits *atomic.Pointer[Limits]
	log    *slog.Logger
	ret    *retainedState // decides on stamped retained relays
	// Tokens per unacknowledged republish on the local connection, by QoS.
	qos1, qos2 chan struct{}
	// dedupe recognises relays republished before (dedupe.go).
	dedupe *dedupe

	// Counters, read by Status.
	republished atomic.Uint64
	received    atomic.Uint64 // publishes carried by the relays received
	forged      atomic.Uint64 // relays that failed the signature check
	oversized   atomic.Uint64 // relays over Limits.MaxPayloadBytes
	repeats     atomic.Uint64 // relays recognised as repeats and not republished again
	expired     atomic.Uint64 // relays whose message expired on the way: not republished
}

// handle republishes m when it is a relay addressed to this node, and reports whether it was.
func (in *relayIn) handle(ctx context.Context, m *message) bool {
	limit := in.limits.Load().MaxPayloadBytes
	entries, src, isRelay, err := in.wire.decode(m.Topic, m.QoS, m.Payload, limit)
	if err == nil {
		err = in.wire.topics.checkRelayed(entries) // never into the cluster's own topics
	}
	switch {
	case !isRelay:
		return false
	case errors.Is(err, ErrForged):
		in.forged.Add(1)
		in.refuse(m, "forged relay dropped")
	case errors.Is(err, errOversized):
		in.oversized.Add(1)
		in.refuse(m, "relay over the payload limit dropped")
	case err != nil:
		in.log.Warn("bad relay batch dropped", "topic", m.Topic, "err", err)
		m.Ack()
	default:
		kept, over := withinLimit(entries, limit)
		if over > 0 {
			in.oversized.Add(uint64(over))
			in.log.Warn("relays over the payload limit dropped from a batch", "topic", m.Topic, "dropped", over, "kept", len(kept))
		}
		in.received.Add(uint64(len(kept)))
		if kept = in.unexpired(m, kept); len(kept) == 0 {
			m.Ack()
			return true
		}
		in.republishAll(ctx, m, src, kept)
	}
	return true
}

// unexpired reduces the Message Expiry Interval of each entry by the whole seconds since m was
// read, and removes the entries that expired on the way: they are not delivered (acknowledged
// with m). entries keeps its order.
func (in *relayIn) unexpired(m *message, entries []batchEntry) []batchEntry {
	var now int64
	kept := entries[:0]
	for _, e := range entries {
		if e.props != nil && e.props.Expiry != 0 {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			p, ok := remaining(*e.props, m.Received, now)
			if !ok {
				in.expired.Add(1)
				continue
			}
			e.props = &p
		}
		kept = append(kept, e)
	}
	return kept
}

// republishAll republishes the relays of m, as dedupe decides for each, and acknowledges m
// once every one is acknowledged by the local broker (or was a repeat already delivered).
func (in *relayIn) republishAll(ctx context.Context, m *message, src relaySource, entries []batchEntry) {
	var left atomic.Int32
	left.Store(int32(len(entries)))
	ackOne := func() {
		if left.Add(-1) == 0 {
			in.dedupe.settled(src)
			m.Ack()
		}
	}
	c := m.Conn()
	steps := in.dedupe.admit(c, src, m.Dup, entries, ackOne)
	if steps == nil {
		return // not the current connection: the broker sends m again on the next one
	}
	for i, e := range entries {
		st := steps[i]
		switch st.kind {
		case dedupePlain:
			if e.Retain && e.Stamp != 0 {
				in.ret.apply(ctx, e, ackOne) // republished only when newer than the register's
				continue
			}
			in.republish(ctx, e.Topic, e.QoS, e.Retain, e.Props(), e.Payload, ackOne)
			continue
		case dedupeWait:
			in.repeats.Add(1)
			continue
		case dedupeDrop:
			in.repeats.Add(1)
			ackOne()
			continue
		}
		sem := in.qos1
		if e.QoS == 2 {
			sem = in.qos2
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			for _, st := range steps[i:] {
				in.dedupe.finish(st.ref, context.Canceled)
			}
			return
		}
		done := func(err error) {
			<-sem
			in.dedupe.finish(st.ref, err)
			if err == nil {
				ackOne()
			}
		}
		switch st.kind {
		case dedupeRelease:
			in.repeats.Add(1)
			c.Release(st.lid, done)
		default: // dedupePublish, dedupeResend
			if st.kind == dedupeResend {
				in.repeats.Add(1)
			}
			in.republished.Add(1)
			c.PublishID(st.lid, st.kind == dedupeResend, e.Topic, e.QoS, e.Retain, e.Props(), e.Payload,
				func() { in.dedupe.received(st.ref) }, done)
		}
	}
}

func (in *relayIn) refuse(m *message, why string) {
	in.log.Warn(why, "topic", m.Topic, "bytes", len(m.Payload))
	m.Ack()
}

// republish publishes a relayed message on the local connection (no-local keeps
// it from being relayed again) and calls ack once the local broker acknowledged it. Without that
// acknowledgement the relay is not acknowledged, and the broker sends it again after a
// reconnect. In-flight QoS 1 and QoS 2 republishes are bounded (Mosquitto drops publishes from a
// client with too many unfinished QoS 2 ones).
// The local connection speaks MQTT 5: props go with it, as the publisher's broker gave them.
func (in *relayIn) republish(ctx context.Context, topic string, qos byte, retain bool, props mqttconn.Props, payload []byte, ack func()) {
	c := in.local.Conn()
	if c == nil {
		return // not acknowledged: redelivered on the next connection
	}
	in.republished.Add(1)
	if qos == 0 {
		c.PublishProps(topic, 0, retain, props, payload, nil)
		ack()
		return
	}
	sem := in.qos1
	if qos == 2 {
		sem = in.qos2
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	c.PublishProps(topic, qos, retain, props, payload, func(err error) {
		<-sem
		if err == nil {
			ack()
		}
	})
}
