package bridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// localConn is the current connection to the local broker, or nil.
func (a *Agent) localConn() *conn {
	if a.local == nil {
		return nil
	}
	return a.local.Conn()
}

// localLink is the connection to this node's broker: MQTT 3.1.1 with the bridge bit (no-local,
// retain-as-published) and a persistent session, so the broker queues for the agent while it
// restarts. Every message goes to the inbox; the dispatcher handles them in order.
func (a *Agent) localLink() *link {
	l := &link{
		addr: a.opts.Local,
		opts: connectOptions{ClientID: a.localID, Protocol: 0x84, CleanSession: false,
			Keepalive: a.opts.Keepalive, Username: a.opts.Username, Password: a.opts.Password,
			WillTopic: a.topics.Status(a.opts.Node), WillPayload: a.willPayload(), WillRetain: true,
			TLS: a.opts.LocalTLS},
		log: a.log,
	}
	var marked atomic.Pointer[conn]
	// The reconnected marker goes ahead of the first message of each connection, so the
	// dispatcher widens the interest before it sees anything the new connection brings.
	mark := func(c *conn) {
		if marked.Swap(c) != c {
			a.inbox.put(reconnected)
		}
	}
	l.onPublish = func(m *message) {
		mark(m.c)
		a.inbox.put(m)
	}
	l.up = func(ctx context.Context, c *conn, sessionPresent bool) error {
		mark(c)
		subs := map[string]byte{
			"$SYS/broker/log/#":         0,
			"$SYS/broker/clients/total": 0,
			"$SYS/broker/uptime":        0,
			"#":                         2,
			// No-local: whatever arrives here was published by somebody else.
			a.topics.InterestFilter(a.opts.Node): 0,
		}
		if strings.HasPrefix(a.opts.ForwardPrefix, "$") {
			for _, f := range a.topics.ForwardFilters() {
				subs[f] = 2
			}
		}
		for f := range a.dollarSubs() {
			subs[f] = 2
		}
		if sessionPresent {
			// The broker kept the session's subscription to '#'. Subscribing again would make it
			// send every stored retained message, which the agent would take for live publishes
			// and relay: older values over newer ones on the peers. Peers pull what they miss.
			delete(subs, "#")
		}
		if err := c.Subscribe(ctx, subs); err != nil {
			a.log.Warn("local subscribe failed", "err", err)
			return err
		}
		a.log.Info("local broker connected", "addr", a.opts.Local)
		return nil
	}
	l.down = func(err error) { a.log.Warn("local broker connection lost", "err", err) }
	return l
}

// peerLink is the connection to a peer broker: a clean session that follows the peer's interest
// topics and carries relays.
func (a *Agent) peerLink(p *peer) *link {
	marker := a.topics.Control() + a.opts.Node + "/synced/" + p.name
	l := &link{
		addr: p.addr,
		opts: connectOptions{ClientID: a.topics.LinkID(a.opts.Node, p.name), Protocol: 4,
			CleanSession: true, Keepalive: a.opts.Keepalive, Username: a.opts.Username,
			Password: a.opts.Password, TLS: p.tls},
		log: p.log,
	}
	status := a.topics.Status(p.name)
	l.onPublish = func(m *message) {
		switch m.Topic {
		case marker:
			// Every retained interest message of the subscription came before the marker.
			m.Ack()
			p.interest.setSynced(true)
		case status:
			var st struct {
				AgentUp bool `json:"agent_up"`
			}
			if json.Unmarshal(m.Payload, &st) == nil {
				if p.interest.agentDown.Swap(!st.AgentUp) != !st.AgentUp && !st.AgentUp {
					p.log.Warn("peer's agent is down: relaying everything to its broker, where its session queues it")
				}
			}
		default:
			a.peerMessage(p, m)
		}
	}
	l.up = func(ctx context.Context, c *conn, _ bool) error {
		// Until the marker returns, the retained snapshot may be behind: send everything.
		p.interest.setSynced(false)
		if err := c.Subscribe(ctx, map[string]byte{a.topics.InterestFilter(p.name): 1, marker: 1, status: 0}); err != nil {
			p.log.Warn("peer subscribe failed", "err", err)
			return err
		}
		c.Publish(marker, 1, false, nil, nil)
		p.setUp()
		p.log.Info("peer connected", "addr", p.addr)
		go a.pullRetained(ctx, p)
		return nil
	}
	l.down = func(err error) {
		p.setDown()
		p.log.Warn("peer lost", "addr", p.addr, "err", err, "buffered", p.queue.Len())
	}
	return l
}

// peerMessage applies an interest message from a peer's broker.
func (a *Agent) peerMessage(p *peer, m *message) {
	m.Ack()
	lim := *a.limits.Load()
	if n := len(m.Payload); n > lim.MaxInterestBytes {
		p.refused.Add(1)
		p.log.Warn("interest message over the size limit refused", "bytes", n, "limit", lim.MaxInterestBytes)
		p.interest.markUnknown()
		return
	}
	payload, err := a.signer.open(m.Topic, m.Payload)
	if err != nil {
		p.forged.Add(1)
		p.log.Warn("forged interest message dropped", "topic", m.Topic, "err", err)
		return // a forgery does not make the real interest unknown
	}
	if interestWantsAll(payload) {
		a.pingPresence(p, m.c) // it may be waiting to account for this link
	}
	if epoch, seq, all, ok := peekSnapshot(payload); ok && p.interest.redundant(epoch, seq, all) {
		return // in sync already: skip decoding a possibly large snapshot
	}
	msg, err := decodeInterest(payload, lim)
	if err != nil {
		p.refused.Add(1)
		p.interest.markUnknown() // refused interest widens: everything until a usable snapshot
		p.log.Warn("interest message refused: relaying everything to this peer", "topic", m.Topic, "bytes", len(m.Payload), "err", err)
		return
	}
	if wantSnapshot := m.Topic == a.topics.Interest(p.name); msg.Snapshot != wantSnapshot {
		p.refused.Add(1)
		p.interest.markUnknown()
		p.log.Warn("interest message on the wrong topic refused: relaying everything to this peer", "topic", m.Topic)
		return
	}
	if !p.interest.apply(msg, lim.MaxFilters) {
		p.log.Info("interest gap or over the filter limit: relaying everything to this peer until its next usable snapshot",
			"epoch", msg.Epoch, "seq", msg.Seq, "filters", p.interest.Len(), "limit", lim.MaxFilters)
	}
}

// pullRetained copies a peer broker's retained messages to the local broker when the link to
// it comes up, so a subscriber here gets values published while this node was away (agent or
// broker down, link cut, late join). Only values that differ from the local broker's are
// republished (an unchanged value would reach live subscribers again), and never one this node
// itself relayed while the link was down (the peer's copy is older). Where the same topic changed
// on both sides during a partition, the peer's value wins.
func (a *Agent) pullRetained(ctx context.Context, p *peer) {
	mine := p.takeRetainedWhileDown()
	local, err := a.readRetained(ctx, a.opts.Local, a.opts.LocalTLS, a.topics.ReaderID(a.opts.Node, p.name), a.opts.Node+"/local/"+p.name)
	if err != nil {
		p.log.Warn("retained pull: local broker", "err", err)
		return
	}
	theirs, err := a.readRetained(ctx, p.addr, p.tls, a.topics.PullID(a.opts.Node, p.name), a.opts.Node+"/sync/"+p.name)
	if err != nil {
		p.log.Warn("retained pull: peer broker", "err", err)
		return
	}
	n := 0
	for topic, v := range theirs {
		if mine[topic] {
			continue
		}
		if l, ok := local[topic]; ok && l.qos == v.qos && bytes.Equal(l.payload, v.payload) {
			continue
		}
		n++
		a.republish(ctx, topic, v.qos, true, v.payload, func() {})
	}
	p.log.Info("retained messages pulled from peer", "peer_retained", len(theirs), "republished", n)
}

type retainedValue struct {
	payload []byte
	qos     byte
}

// readRetained returns a broker's stored retained messages. A non-bridge client sees stored
// retained messages with the retain flag and live ones without; its own marker publish, which
// follows every retained message queued by its subscription, ends the read.
func (a *Agent) readRetained(ctx context.Context, addr string, tlsConf *tls.Config, clientID, markerName string) (map[string]retainedValue, error) {
	marker := a.topics.Control() + markerName + "/retained-marker"
	var mu sync.Mutex
	out := map[string]retainedValue{}
	done := make(chan struct{})
	var once sync.Once
	c, _, err := dial(ctx, addr, connectOptions{ClientID: clientID, Protocol: 4, CleanSession: true,
		Keepalive: a.opts.Keepalive, Username: a.opts.Username, Password: a.opts.Password, TLS: tlsConf},
		func(m *message) {
			m.Ack()
			switch {
			case m.Topic == marker:
				once.Do(func() { close(done) })
			case m.Retain && !a.topics.IsReserved(m.Topic):
				mu.Lock()
				out[m.Topic] = retainedValue{payload: m.Payload, qos: m.QoS}
				mu.Unlock()
			}
		})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Subscribe(ctx, map[string]byte{"#": 2, marker: 1}); err != nil {
		return nil, err
	}
	c.Publish(marker, 1, false, nil, nil)
	select {
	case <-done:
	case <-c.Done():
		return nil, c.Err()
	case <-time.After(30 * time.Second):
		return nil, errors.New("no end marker within 30s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}

// handleLocal handles one message from the local broker, on the dispatcher.
func (a *Agent) handleLocal(ctx context.Context, m *message) {
	if m == reconnected {
		// The broker may have lost our retained snapshot, and log lines were missed.
		a.acct.reset()
		a.model.logGap()
		a.setWantAll("local broker connection (re)established: log lines may have been missed")
		a.snapshotDirty, a.lastSnapshot = true, time.Time{} // due now
		a.publishSnapshot()
		return
	}
	if m.QoS > 0 && m.c != a.localConn() {
		return // from a connection that ended: the broker sends it again on the current one
	}
	topic := m.Topic
	switch {
	case strings.HasPrefix(topic, a.topics.Interest(a.opts.Node)):
		a.checkOwnInterest(topic, m.Payload)
		m.Ack()
	case strings.HasPrefix(topic, "$SYS/"):
		a.handleSys(topic, m.Payload)
		m.Ack()
	case a.topics.IsBatch(topic):
		a.republishBatch(ctx, m)
	default:
		if orig, retained, ok := a.topics.Unforward(topic); ok {
			payload, err := a.signer.open(topic, m.Payload)
			if err != nil {
				a.forged.Add(1)
				a.refuseRelay(m, "forged relay dropped")
				return
			}
			if len(payload) > a.limits.Load().MaxPayloadBytes {
				a.oversized.Add(1)
				a.refuseRelay(m, "relay over the payload limit dropped")
				return
			}
			a.relayedIn.Add(1)
			a.republish(ctx, orig, m.QoS, retained, payload, m.Ack)
			return
		}
		if a.topics.IsReserved(topic) {
			m.Ack()
			return
		}
		a.relayLocal(m)
	}
}

func (a *Agent) refuseRelay(m *message, why string) {
	a.log.Warn(why, "topic", m.Topic, "bytes", len(m.Payload))
	m.Ack()
}

// republishBatch republishes every relay of a batch; the batch is acknowledged once all are.
func (a *Agent) republishBatch(ctx context.Context, m *message) {
	payload, err := a.signer.open(m.Topic, m.Payload)
	if err != nil {
		a.forged.Add(1)
		a.refuseRelay(m, "forged relay dropped")
		return
	}
	entries, err := decodeBatch(payload, a.limits.Load().MaxPayloadBytes)
	if err != nil {
		a.log.Warn("bad relay batch dropped", "topic", m.Topic, "err", err)
		m.Ack()
		return
	}
	a.relayedIn.Add(uint64(len(entries)))
	var left atomic.Int32
	left.Store(int32(len(entries)))
	ackOne := func() {
		if left.Add(-1) == 0 {
			m.Ack()
		}
	}
	for _, e := range entries {
		a.republish(ctx, e.Topic, e.QoS, e.Retain, e.Payload, ackOne)
	}
}

// republish publishes a relayed message on the local connection (the bridge bit's no-local keeps
// it from being relayed again) and calls ack once the local broker acknowledged it. Without that
// acknowledgement the relay is not acknowledged, and the broker sends it again after a
// reconnect. In-flight QoS 1 and QoS 2 republishes are bounded (Mosquitto drops publishes from a
// client with too many unfinished QoS 2 ones).
func (a *Agent) republish(ctx context.Context, topic string, qos byte, retain bool, payload []byte, ack func()) {
	c := a.localConn()
	if c == nil {
		return // not acknowledged: redelivered on the next connection
	}
	a.republished.Add(1)
	if qos == 0 {
		c.Publish(topic, 0, retain, payload, nil)
		ack()
		return
	}
	sem := a.republishQoS1
	if qos == 2 {
		sem = a.republishQoS2
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	c.Publish(topic, qos, retain, payload, func(err error) {
		<-sem
		if err == nil {
			ack()
		}
	})
}

// relayLocal sends a local publish to each peer that wants it; retained ones go to every peer.
func (a *Agent) relayLocal(m *message) {
	var dests [16]*peer
	to := dests[:0]
	for _, p := range a.peerList() {
		if m.Retain || p.interest.Wants(m.Topic) {
			to = append(to, p)
		}
	}
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
		p.enqueue(&relay{topic: m.Topic, payload: m.Payload, qos: m.QoS, retain: m.Retain, group: g})
	}
}

// dollarSubs is the set of '$' filters the local connection subscribes to for its peers.
func (a *Agent) dollarSubs() map[string]bool {
	a.dollarMu.Lock()
	defer a.dollarMu.Unlock()
	out := make(map[string]bool, len(a.dollar))
	for f := range a.dollar {
		out[f] = true
	}
	return out
}

// syncDollarSubs keeps the local subscriptions to '$' filters equal to the union of the peers'
// ('#' never matches '$' topics, so those publishes would otherwise never be seen). Runs on the
// dispatcher, so changes apply in order; a failed change is retried on the next batch.
func (a *Agent) syncDollarSubs(ctx context.Context) {
	changed := a.dollarRetry
	for _, p := range a.peerList() {
		if p.interest.dollarChanged.Swap(false) {
			changed = true
		}
	}
	if !changed {
		return
	}
	a.dollarRetry = false
	want := map[string]bool{}
	for _, p := range a.peerList() {
		for _, f := range p.interest.DollarFilters() {
			if !a.topics.IsReserved(f) && !strings.HasPrefix(f, a.topics.Control()) {
				want[f] = true
			}
		}
	}
	c := a.localConn()
	if c == nil {
		a.dollarMu.Lock()
		a.dollar = want // the next connection subscribes to all of them
		a.dollarMu.Unlock()
		return
	}
	have := a.dollarSubs()
	add := map[string]byte{}
	var remove []string
	for f := range want {
		if !have[f] {
			add[f] = 2
		}
	}
	for f := range have {
		if !want[f] {
			remove = append(remove, f)
		}
	}
	if len(add) > 0 {
		if err := c.Subscribe(ctx, add); err != nil {
			a.log.Warn("subscribing to peers' $ filters failed, will retry", "filters", len(add), "err", err)
			a.dollarRetry = true
			return
		}
	}
	if len(remove) > 0 {
		if err := c.Unsubscribe(ctx, remove); err != nil {
			a.log.Warn("unsubscribing peers' $ filters failed, will retry", "filters", len(remove), "err", err)
			a.dollarRetry = true
		}
	}
	a.dollarMu.Lock()
	a.dollar = want
	a.dollarMu.Unlock()
}
