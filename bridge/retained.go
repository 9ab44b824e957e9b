// retained.go owns retained convergence: it stamps every retained write the local broker
// takes (hlc.go), keeps the last write per topic (retainreg.go), republishes a peer's write only
// when it is newer, puts the winner back when a local write raced the agent's own republish,
// and pushes the local broker's retained values to a peer whose link comes up.

package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// stampUnknown stamps a retained value the register has no entry for (written before the agent
// ran, or past its bound): older than any stamped write.
const stampUnknown = 1

// retainedState decides, for every retained write, whether it is the last one.
type retainedState struct {
	node   string
	topics Topics
	clock  *hlc
	reg    *retainReg
	in     *relayIn
	log    *slog.Logger

	// Ordering on the local connection, all on its reader goroutine: seq numbers the local
	// retained publishes and the completions of the agent's own retained republishes, in the
	// order the broker sent them.
	mu       sync.Mutex
	seq      uint64
	arrival  map[*message]uint64     // a local retained publish -> its seq
	inflight map[string]*republished // topic -> the agent's last retained republish of it
	// connections counts the local connections of this run (reconnected); alive is when the
	// last local message arrived (Unix ns), prevAlive its value when the connection changed:
	// a broker that started after it is another broker process (local.go).
	connections      int
	alive, prevAlive atomic.Int64
	// flood: the broker is sending the stored retained messages of a new '#' subscription; it
	// ends when the flood marker with payload floodNonce arrives (endFlood).
	flood      atomic.Bool
	floodNonce atomic.Uint64
	// applyMu makes a register update and the republish it decides one step, for the dispatcher
	// and the verifier alike.
	applyMu sync.Mutex
	// verifyq holds the checks of the broker's value the verifier is to make (retainverify.go);
	// local is how it connects to the local broker.
	verifyq chan verification
	dialer  localDialer

	stale, skewed, reasserted, pushedOut, mismatched, pushes, stored atomic.Uint64
	verified, repaired, unverified                                   atomic.Uint64
	skewLogged                                                       atomic.Int64
}

// republished is one retained republish on the local connection: doneSeq is its completion's
// seq, 0 while the broker has not processed it.
type republished struct {
	doneSeq uint64
	hash    uint64 // valueHash of what was republished
}

func newRetainedState(node string, topics Topics, reg *retainReg, in *relayIn, log *slog.Logger) *retainedState {
	return &retainedState{node: node, topics: topics, clock: newHLC(maxClockSkew), reg: reg, in: in, log: log,
		arrival: map[*message]uint64{}, inflight: map[string]*republished{},
		verifyq: make(chan verification, maxVerifications)}
}

// localSession is called for every new local connection, with the CONNACK's session present
// flag: without a session the broker may have lost its retained messages, and the agent's
// subscription to '#' is new, so the broker first sends every retained message it stores.
// Those are not writes the agent saw: until the flood marker arrives they are marked stored.
func (r *retainedState) localSession(present bool) {
	if !present {
		r.reg.newGeneration()
		r.floodNonce.Store(randomEpoch())
		r.flood.Store(true)
	}
}

// floodMarkerTimeout bounds a flood whose marker never arrives (the broker refuses the marker's
// publisher): past it, local retained publishes count as writes again.
const floodMarkerTimeout = time.Minute

// subscribed is called once the local subscriptions of a new connection are acknowledged.
// Mosquitto queues the stored retained messages of a new subscription in the agent's session
// when it takes the SUBSCRIBE, and sends those beyond the agent's in-flight window after the
// SUBACK: the flood ends at a marker published after the SUBACK by another connection (the
// agent's own publishes never come back to it, the bridge bit), which the broker queues behind
// them. The marker is published again every second until it arrives (a full session queue
// drops it), for at most floodMarkerTimeout.
func (r *retainedState) subscribed(ctx context.Context) {
	if !r.flood.Load() {
		return
	}
	nonce := r.floodNonce.Load()
	go func() {
		payload := []byte(strconv.FormatUint(nonce, 16))
		deadline := time.Now().Add(floodMarkerTimeout)
		var c *mqttconn.Conn
		defer func() {
			if c != nil {
				c.Close()
			}
		}()
		for r.flood.Load() && r.floodNonce.Load() == nonce && ctx.Err() == nil {
			if time.Now().After(deadline) {
				if r.floodNonce.Load() == nonce && r.flood.CompareAndSwap(true, false) {
					r.log.Warn("the end of the broker's stored retained messages was not seen: local retained publishes count as writes again")
				}
				return
			}
			if c == nil {
				var err error
				c, _, err = mqttconn.Dial(ctx, r.dialer.addr, r.dialer.conn.options(r.topics.ReaderID(r.node, "flood"), 4, true, r.dialer.tls), func(m *message) { m.Ack() })
				if err != nil {
					c = nil
				}
			}
			if c != nil {
				c.Publish(r.topics.FloodMarker(r.node), 1, false, payload, nil)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			if c != nil && c.Err() != nil {
				c.Close()
				c = nil
			}
		}
	}()
}

// endFlood ends the flood when m is its marker, on the local connection's reader goroutine.
func (r *retainedState) endFlood(m *message) bool {
	if m.Topic != r.topics.FloodMarker(r.node) {
		return false
	}
	if r.flood.Load() && string(m.Payload) == strconv.FormatUint(r.floodNonce.Load(), 16) {
		r.flood.Store(false)
	}
	return true
}

// reconnected is called on the dispatcher where a new local connection begins, in order with
// its messages. Republishes still in flight on the previous connection never complete: they are
// forgotten. After the first connection of this run, restarted tells (it may read the broker)
// whether the broker started again since the agent last saw it: restored from an older
// autosave that still holds the agent's session, it may have lost retained values the register
// says it holds, so equal writes are applied again (a new register generation), before any
// relay of the new connection is handled. A reconnection to the same broker process keeps the
// generation: a relay the broker delivers again is not republished twice.
func (r *retainedState) reconnected(restarted func() bool) {
	r.mu.Lock()
	r.connections++
	for topic, rp := range r.inflight {
		if rp.doneSeq == 0 {
			delete(r.inflight, topic)
		}
	}
	again := r.connections > 1
	r.mu.Unlock()
	if again && restarted() {
		r.reg.newGeneration()
	}
}

// connectionChanged is called when the first message or the Up of a new local connection is
// seen, before its reconnected marker is queued.
func (r *retainedState) connectionChanged() { r.prevAlive.Store(r.alive.Load()) }

// arrived notes the order of a local publish, on the local connection's reader goroutine.
func (r *retainedState) arrived(m *message) {
	r.alive.Store(time.Now().UnixNano())
	if r.endFlood(m) {
		return
	}
	// Control, relay and $SYS messages never reach local(): they would stay in arrival.
	if !m.Retain || r.topics.IsReserved(m.Topic) {
		return
	}
	r.mu.Lock()
	r.seq++
	at := r.seq
	if r.flood.Load() {
		at = 0 // a stored value, not a write
	}
	if len(r.arrival) >= maxArrivals {
		// Messages of an ended connection that local() never saw; only the race rule's
		// knowledge of the writes waiting in the inbox is lost (they are stamped all the same).
		clear(r.arrival)
	}
	r.arrival[m] = at
	r.mu.Unlock()
}

// maxArrivals bounds the local retained writes noted by arrived and not yet stamped by local:
// the inbox holds at most maxInbox messages, plus those of connections that ended.
const maxArrivals = 2 * maxInbox

// local stamps a retained write the local broker took (on the dispatcher) and returns the
// stamp, 0 for a publish that is not retained, and whether to relay it. The write is the last
// one: its stamp is larger than every stamp this node issued or accepted. A stored value the
// broker sent for a new subscription (localSession) is no write: it is acknowledged and not
// relayed; the agent's push carries it to the peers with the register's stamp, or as older than
// every stamped write when the register does not know it (a value its agent never saw written).
//
// The race inside one broker: the agent republished a peer's older value v1 while a local
// client's v2 reached the broker. Mosquitto writes to the agent's socket in the order it
// processes publishes, so when v2 arrived before the completion (PUBACK, PUBCOMP, or the
// barrier's PUBACK for QoS 0) of the republish of v1, the broker processed v2 first and now
// holds v1: the agent publishes v2 again. A v2 the broker queued in the agent's session (its
// in-flight window full) may arrive after the completion although processed before: for a
// QoS 1/2 v2 after a completed republish, the verifier reads what the broker holds.
func (r *retainedState) local(ctx context.Context, m *message) (uint64, bool) {
	if !m.Retain {
		return 0, true
	}
	r.mu.Lock()
	at, known := r.arrival[m]
	delete(r.arrival, m)
	r.mu.Unlock()
	if known && at == 0 {
		r.stored.Add(1)
		m.Ack()
		return 0, false
	}
	h := valueHash(m.QoS, m.Payload)
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	s := r.clock.now()
	if err := r.reg.set(m.Topic, s, h); err == nil {
		_ = r.reg.persist(m.Topic)
	}
	r.mu.Lock()
	rp := r.inflight[m.Topic]
	raced := known && rp != nil && (rp.doneSeq == 0 || rp.doneSeq > at)
	// A QoS 1/2 write that arrives after the republish completed may still have been processed
	// before it, if the broker queued it behind a full in-flight window: the broker's value is
	// checked (retainverify.go).
	queued := known && rp != nil && !raced && m.QoS > 0
	if rp != nil && rp.doneSeq != 0 && rp.doneSeq < at {
		delete(r.inflight, m.Topic) // processed before this write: no later write can race it
	}
	r.mu.Unlock()
	switch {
	case raced:
		r.reasserted.Add(1)
		r.publish(ctx, m.Topic, m.QoS, m.Props(), m.Payload, func() {})
	case queued:
		r.verify(verification{topic: m.Topic, loser: rp.hash, stamp: s, hash: h, qos: m.QoS, props: m.Props(), payload: m.Payload})
	}
	return s, true
}

// apply republishes a stamped retained relay from a peer when it is newer than the register's
// write for its topic, and calls ack once that is done (or at once when it is not newer).
func (r *retainedState) apply(ctx context.Context, e batchEntry, ack func()) {
	if err := r.clock.observe(e.Stamp); err != nil {
		r.skewed.Add(1)
		if now := time.Now().UnixNano(); now-r.skewLogged.Load() > int64(10*time.Second) {
			r.skewLogged.Store(now)
			r.log.Warn("retained write refused: the writer's clock is ahead (fix NTP)", "topic", e.Topic, "err", err)
		}
		ack()
		return
	}
	h := valueHash(e.QoS, e.Payload)
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	cur, ok, held := r.reg.get(e.Topic)
	if ok && !newerThan(e.Stamp, h, cur) && !(!held && e.Stamp == cur.stamp && h == cur.hash) {
		r.log.Debug("retained relay not newer: not republished", "topic", e.Topic, "stamp", e.Stamp, "held_stamp", cur.stamp, "held", held)
		r.stale.Add(1)
		ack()
		return
	}
	_ = r.reg.set(e.Topic, e.Stamp, h) // a full register: applied all the same, unordered
	r.publish(ctx, e.Topic, e.QoS, e.Props(), e.Payload, func() {
		_ = r.reg.persist(e.Topic)
		ack()
	})
}

// publish republishes a retained value on the local connection and records its completion in
// the order of the local connection (see local).
func (r *retainedState) publish(ctx context.Context, topic string, qos byte, props mqttconn.Props, payload []byte, done func()) {
	rp := &republished{hash: valueHash(qos, payload)}
	r.mu.Lock()
	if len(r.inflight) >= maxArrivals {
		r.purgeLocked()
	}
	r.inflight[topic] = rp
	r.mu.Unlock()
	complete := func() {
		r.mu.Lock()
		r.seq++
		rp.doneSeq = r.seq
		r.mu.Unlock()
	}
	if qos > 0 {
		r.in.republish(ctx, topic, qos, true, props, payload, func() {
			complete()
			done()
		})
		return
	}
	r.in.republish(ctx, topic, 0, true, props, payload, done)
	// A QoS 0 publish has no completion: a QoS 1 publish right after it on the same connection
	// is processed after it, and its PUBACK stands for both.
	if c := r.in.local.Conn(); c != nil {
		c.Publish(r.topics.Barrier(r.node), 1, false, nil, func(err error) {
			if err == nil {
				complete()
			}
		})
	}
}

// purgeLocked forgets the completed republishes no local write still waiting for local() can
// have raced: those completed before the oldest such write arrived.
func (r *retainedState) purgeLocked() {
	oldest := r.seq + 1
	for _, at := range r.arrival {
		oldest = min(oldest, at)
	}
	for topic, rp := range r.inflight {
		if rp.doneSeq != 0 && rp.doneSeq < oldest {
			delete(r.inflight, topic)
		}
	}
}

// stampFor is the stamp to push for a value the local broker holds: the register's when it
// holds the same value, stampUnknown when it has none, and 0 (do not push) when the broker
// holds another value than the register's last write (a write the agent has not seen yet).
func (r *retainedState) stampFor(topic string, qos byte, payload []byte) uint64 {
	e, ok, _ := r.reg.get(topic)
	switch {
	case !ok:
		// Recorded, so that another node's unknown value for the topic, pushed here, is ordered
		// against this one (by hash) the same way on both nodes.
		r.applyMu.Lock()
		if _, ok, _ := r.reg.get(topic); !ok && r.reg.set(topic, stampUnknown, valueHash(qos, payload)) == nil {
			_ = r.reg.persist(topic)
		}
		r.applyMu.Unlock()
		return stampUnknown
	case e.hash == valueHash(qos, payload):
		return e.stamp
	default:
		r.mismatched.Add(1)
		return 0
	}
}

// retainedPush sends the local broker's retained values, and the register's deletions, to a
// peer, stamped, when the link to it comes up or its agent starts: the peer keeps what is
// newer. This catches up what relays could not carry: writes made while this agent was down,
// relays dropped from a full buffer, a peer broker that lost its retained messages, a late
// joiner.
type retainedPush struct {
	node      string
	topics    Topics
	conn      connSettings
	localAddr string
	localTLS  *tls.Config
	state     *retainedState
}

var errPeerDown = errors.New("bridge: peer link lost during the retained push")

// full reports whether q holds enough for a retained push to wait: pushWindow relays or
// pushWindowBytes of payload.
func full(q *relayQueue) bool {
	n, _ := q.Bytes()
	return q.Len() >= pushWindow || n >= pushWindowBytes
}

// run streams the local broker's retained messages to p: a reader subscribes to '#' and its own
// marker publish ends the read. It holds no copy of the retained set: each value goes to p's
// relay queue, and the reader waits while that queue holds pushWindow relays or
// pushWindowBytes of payload: memory is bounded by the queue, not by the retained set. It stops
// when p's link goes down.
func (r *retainedPush) run(ctx context.Context, p *peer) (int, error) {
	var sent atomic.Int64
	marker := r.topics.RetainedMarker(r.node + "/push/" + p.name)
	done := make(chan error, 1)
	finish := func(err error) {
		select {
		case done <- err:
		default:
		}
	}
	room := func() bool {
		for full(p.queue) {
			if !p.Up() || ctx.Err() != nil {
				finish(errPeerDown)
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
		return true
	}
	// MQTT 5, so the retained messages keep their properties (and their remaining expiry).
	c, _, err := mqttconn.Dial(ctx, r.localAddr, r.conn.options(r.topics.ReaderID(r.node, p.name), 5, true, r.localTLS),
		func(m *message) {
			m.Ack()
			switch {
			case m.Topic == marker:
				finish(nil)
			case m.Retain && !r.topics.IsReserved(m.Topic):
				if !room() {
					return
				}
				if s := r.state.stampFor(m.Topic, m.QoS, m.Payload); s != 0 {
					p.enqueue(&relay{topic: m.Topic, payload: m.Payload, qos: m.QoS, retain: true, stamp: s, props: propsOf(m)})
					sent.Add(1)
				}
			}
		})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.Subscribe(ctx, map[string]byte{"#": 2, marker: 1}); err != nil {
		return 0, err
	}
	c.Publish(marker, 1, false, nil, nil)
	select {
	case err = <-done:
	case <-c.Done():
		err = c.Err()
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return int(sent.Load()), err
	}
	r.state.reg.tombstones(func(topic string, stamp uint64) {
		if err == nil && room() {
			p.enqueue(&relay{topic: topic, qos: 1, retain: true, stamp: stamp})
			sent.Add(1)
		} else {
			err = errPeerDown
		}
	})
	r.state.pushedOut.Add(uint64(sent.Load()))
	return int(sent.Load()), err
}

// Barrier is the topic of the QoS 1 publish that follows a QoS 0 retained republish on the
// local connection (nobody subscribes to it; its PUBACK marks the republish processed).
func (t Topics) Barrier(node string) string { return t.Control() + node + "/barrier" }

// pushLoop runs the retained pushes to p that requestPush asks for, one at a time, coalesced:
// requests made while a push runs or waits are served by the next one, which starts at least
// retainedPushMinInterval and four times the last push's duration after the last one began, so
// a flapping link cannot make back-to-back full reads (at most a fifth of the time pushing).
func (p *peer) pushLoop(ctx context.Context) {
	var last time.Time
	var took time.Duration
	for {
		select {
		case <-p.pushReq:
		case <-ctx.Done():
			return
		}
		if wait := time.Until(last.Add(max(retainedPushMinInterval, 4*took))); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-p.pushReq: // coalesced into this push
		default:
		}
		if _, ok := p.waitConn(ctx); !ok {
			return
		}
		last = time.Now()
		p.env.push.state.pushes.Add(1)
		n, err := p.env.push.run(ctx, p)
		took = time.Since(last)
		if err != nil {
			p.log.Warn("retained push to peer stopped", "sent", n, "err", err)
			continue
		}
		p.log.Info("retained values pushed to peer", "sent", n, "took", took)
	}
}

// requestPush asks pushLoop for a retained push to p.
func (p *peer) requestPush() {
	select {
	case p.pushReq <- struct{}{}:
	default:
	}
}

// agentStatus follows the peer's agent through its status messages: when it comes up while the
// link stays up (a restart, or a late first start), it gets a push. The state is 0 (unknown
// since the link came up), 1 (down or absent), 2 (up).
func (p *peer) agentStatus(up bool) {
	if !up {
		p.agentSeen.Store(1)
		return
	}
	if p.agentSeen.Swap(2) == 1 {
		p.requestPush()
	}
}

// RetainedStamp returns the stamp and value hash of the last retained write to topic this
// agent holds (hash 0: a deletion), for tests and diagnostics. Safe for concurrent use.
func (a *Agent) RetainedStamp(topic string) (stamp, hash uint64, ok bool) {
	e, ok, _ := a.ret.reg.get(topic)
	return e.stamp, e.hash, ok
}

// RetainedStatus counts what retained convergence did.
type RetainedStatus struct {
	// Topics is the number of topics in the register; Untracked counts writes it had no room for.
	Topics    int    `json:"topics"`
	Untracked uint64 `json:"untracked"`
	// Stale counts peers' retained writes not applied because this node holds a newer one.
	Stale uint64 `json:"stale"`
	// Skewed counts peers' writes refused for a stamp beyond the clock skew bound.
	Skewed uint64 `json:"skewed"`
	// Reasserted counts local writes published again because the agent's republish of an older
	// value reached the broker after them.
	Reasserted uint64 `json:"reasserted"`
	// Pushes counts retained pushes started, to every peer.
	Pushes uint64 `json:"pushes"`
	// Pushed counts values sent by retained pushes; Mismatched the values a push skipped because
	// the broker held another value than the register's last write.
	Pushed     uint64 `json:"pushed"`
	Mismatched uint64 `json:"mismatched"`
	// Verified counts checks of the broker's value after a local write that may have been queued
	// behind the agent's republish of an older one; Repaired those that found the older value
	// and published the newer again; Unverified the checks dropped (queue full, read failed).
	Verified   uint64 `json:"verified"`
	Repaired   uint64 `json:"repaired"`
	Unverified uint64 `json:"unverified"`
	// Stored counts stored retained values the broker sent for a new subscription of the agent,
	// not relayed (not writes).
	Stored uint64 `json:"stored"`
	// WriteErrors counts failed writes of the register file.
	WriteErrors uint64 `json:"write_errors"`
}

func (r *retainedState) status() RetainedStatus {
	s := RetainedStatus{Stale: r.stale.Load(), Skewed: r.skewed.Load(), Reasserted: r.reasserted.Load(),
		Pushes: r.pushes.Load(), Pushed: r.pushedOut.Load(), Mismatched: r.mismatched.Load(),
		Stored: r.stored.Load(), Verified: r.verified.Load(), Repaired: r.repaired.Load(),
		Unverified: r.unverified.Load()}
	r.reg.mu.Lock()
	s.Topics, s.Untracked, s.WriteErrors = len(r.reg.m), r.reg.untracked, r.reg.writeErrors
	r.reg.mu.Unlock()
	return s
}

// load adds the register kept at path.
func (r *retainedState) load(path string) error {
	if err := r.reg.open(path); err != nil {
		return err
	}
	r.reg.mu.Lock()
	seen := r.reg.maxSeen
	r.reg.mu.Unlock()
	r.clock.advance(seen)
	return nil
}
