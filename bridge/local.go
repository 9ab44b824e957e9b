// local.go owns the connection to this node's broker and the dispatcher: every message the
// local broker sends goes through the inbox to dispatch, which hands it, in arrival order, to
// the log reader (sys.go), the relays in (relayin.go) or the relays out (relayout.go), and
// announces the batch's interest changes afterwards.

package bridge

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mosquitto-ha/bridge/mqttconn"
	"mosquitto-ha/sysparse"
)

// maxInbox bounds the local messages waiting for the dispatcher; past it QoS 0 publishes are
// dropped (as Mosquitto itself drops for a slow subscriber). QoS 1/2 are bounded by the broker's
// in-flight window, since the agent acknowledges them only once relayed.
const maxInbox = 200000

// Topics of the local broker's $SYS tree the agent reads besides the log lines.
const (
	topicClientsTotal = "$SYS/broker/clients/total"
	// topicClientsConnected: the clients with a connection (accounting.go verifyConnections).
	topicClientsConnected = "$SYS/broker/clients/connected"
	topicUptime           = "$SYS/broker/uptime"
)

// message is one publish from the local broker, as the dispatcher and the relay queues hold it.
type message = mqttconn.Message

// localConn is the current connection to the local broker, or nil.
func (a *Agent) localConn() *mqttconn.Conn { return a.local.Conn() }

// localLink is the connection to this node's broker: MQTT 5 with no-local and
// retain-as-published on every subscription (what the 3.1.1 bridge bit gave before), so the
// agent reads and republishes each message's MQTT 5 properties; a persistent session (never
// expiring), so the broker queues for the agent while it restarts. Every message goes to the
// inbox; the dispatcher handles them in order.
func (a *Agent) localLink(conn connSettings) *mqttconn.Link {
	opts := conn.options(a.localID, 5, false, a.opts.LocalTLS)
	opts.SubOptions = mqttconn.SubNoLocal | mqttconn.SubRetainAsPublished
	opts.WillTopic, opts.WillPayload, opts.WillRetain = a.topics.Status(a.opts.Node), a.willPayload(), true
	// The broker is on this host: while it restarts, a dial every 500 ms costs nothing, and
	// every second the agent is late is a second of log lines, relays and drains it is not
	// doing (a client returning to the broker then finds its session full of what its
	// replica there should have been drained of).
	l := &mqttconn.Link{Addr: a.opts.Local, Options: opts, Log: a.log, MaxBackoff: 500 * time.Millisecond}
	var marked atomic.Pointer[mqttconn.Conn]
	// The reconnected marker goes ahead of the first message of each connection, so the
	// dispatcher widens the interest before it sees anything the new connection brings.
	mark := func(c *mqttconn.Conn) {
		if marked.Swap(c) != c {
			a.ret.connectionChanged()
			a.inbox.put(reconnected)
		}
	}
	l.OnPublish = func(m *message) {
		mark(m.Conn())
		a.ret.arrived(m)
		a.inbox.put(m)
	}
	// Before anything is read: the session's epoch (epoch.go) and the packet ids of republishes
	// the broker may still hold (dedupe.go).
	l.Prepare = func(c *mqttconn.Conn, sessionPresent bool) {
		if err := a.epoch.connected(c, sessionPresent); err != nil {
			a.log.Warn("local session epoch cannot be written: relays the broker sends again after an agent restart will not be recognised", "err", err)
		}
		a.in.dedupe.connected(c, sessionPresent)
	}
	l.Up = func(ctx context.Context, c *mqttconn.Conn, sessionPresent bool) error {
		mark(c)
		a.ret.localSession(sessionPresent)
		a.noteSession(sessionPresent) // a discarded session is reported (sys.go)
		subs := map[string]byte{
			sysparse.TopicLog:     0,
			topicClientsTotal:     0,
			topicClientsConnected: 0,
			topicUptime:           0,
			"#":                   2,
			// No-local: whatever arrives here was published by somebody else.
			a.topics.InterestFilter(a.opts.Node): 0,
			// QoS 1: queued in the session behind the stored retained messages (retained.go).
			a.topics.FloodMarker(a.opts.Node): 1,
		}
		if a.sessionsOn() {
			subs[a.topics.Sessions(a.opts.Node)] = 0 // an earlier run's registry (sessionplan.go)
		}
		if strings.HasPrefix(a.opts.ForwardPrefix, "$") {
			for _, f := range a.topics.ForwardFilters() {
				subs[f] = 2
			}
		}
		if sessionPresent {
			// The broker kept the session's subscription to '#'. Subscribing again would make it
			// send every stored retained message, which the agent would take for live publishes
			// and relay: older values over newer ones on the peers. Peers push what it misses.
			delete(subs, "#")
		}
		if err := c.Subscribe(ctx, subs); err != nil {
			a.log.Warn("local subscribe failed", "err", err)
			return err
		}
		a.ret.subscribed(ctx)
		a.dollar.resubscribe(ctx, c) // peers' '$' filters, in bounded packets (dollar.go)
		a.log.Info("local broker connected", "addr", a.opts.Local)
		return nil
	}
	l.Down = func(err error) { a.log.Warn("local broker connection lost", "err", err) }
	return l
}

// dispatch handles local messages in arrival order until ctx ends.
func (a *Agent) dispatch(ctx context.Context, wg *sync.WaitGroup) {
	var batch []*message
	// One timer for the loop: time.After would make one per batch, which is one per message
	// when messages arrive one at a time.
	tick := time.NewTimer(time.Hour)
	defer tick.Stop()
	for {
		wait := 100 * time.Millisecond
		if due, dirty := a.ann.nextSnapshot(); dirty {
			if d := time.Until(due); d < wait {
				wait = max(d, time.Millisecond)
			}
		}
		tick.Reset(wait) // Go 1.23 timers: Reset drops a pending tick, nothing stale is received
		select {
		case <-ctx.Done():
			return
		case <-a.inbox.notify:
		case peers := <-a.reloads:
			a.applyPeers(ctx, wg, peers)
		case <-tick.C:
		}
		a.dollar.kick() // the '$' subscriptions follow in their own goroutine (dollar.go)
		batch = a.inbox.take(batch[:0])
		for _, m := range batch {
			a.handleLocal(ctx, m)
		}
		clear(batch)
		a.afterBatch()
	}
}

// handleLocal handles one message from the local broker, on the dispatcher.
func (a *Agent) handleLocal(ctx context.Context, m *message) {
	if m == reconnected {
		// The broker may have lost our retained snapshot, and log lines were missed.
		a.acct.reset()
		a.model.logGap()
		a.ret.reconnected(func() bool {
			// The broker's start read from its uptime is never earlier than the real one: a
			// start after the last message of the previous connection is a restart. Unknown
			// (the uptime cannot be read) is taken as a restart.
			start, ok := a.ret.brokerStarted(ctx)
			return !ok || start.UnixNano() > a.ret.prevAlive.Load()
		})
		a.setWantAll("local broker connection (re)established: log lines may have been missed")
		a.ann.snapshotNow()
		if a.sessionsOn() {
			a.sess.logGap() // and republished now: the broker may have lost the retained copy
		} else {
			a.publishNoSessions()
		}
		return
	}
	if m.QoS > 0 && m.Conn() != a.localConn() {
		return // from a connection that ended: the broker sends it again on the current one
	}
	topic := m.Topic
	switch {
	case a.ann.isOwn(topic):
		a.ann.checkOwn(topic, m.Payload)
		m.Ack()
	case a.sessionsOn() && topic == a.topics.Sessions(a.opts.Node):
		a.adoptSessions(m.Payload)
		m.Ack()
	case strings.HasPrefix(topic, "$SYS/"):
		a.model.readAt = m.Received
		a.handleSys(ctx, topic, m.Payload)
		m.Ack()
	case a.in.handle(ctx, m): // a relay addressed to this node, republished
	case a.topics.IsReserved(topic):
		m.Ack()
	default:
		// A reconnection since the check above: the connection ended and the broker sends the
		// message again on the current one; a relay without its session's epoch would carry
		// another identity than that redelivery.
		epoch := a.epoch.of(m.Conn())
		if epoch == 0 && m.QoS > 0 {
			return
		}
		if stamp, relay := a.ret.local(ctx, m); relay { // a stored retained value is no write
			a.catchUp.relay(m, epoch, a.peerList(), a.shares, stamp)
		}
	}
}

// afterBatch announces the batch's interest changes as one delta, refreshes the snapshot when
// due, and keeps the state file current.
func (a *Agent) afterBatch() {
	a.settleTickDue()
	if changes, addedAt := a.model.DrainStamped(); len(changes) > 0 {
		a.ann.changed(changes, addedAt)
	}
	if due, dirty := a.ann.nextSnapshot(); dirty && !time.Now().Before(due) {
		a.ann.snapshot()
	}
	if a.journal != nil {
		a.persistState()
	}
	if a.sessionsOn() {
		a.planSessions()
	}
	a.updateStatus()
	if time.Since(a.lastStatus) >= statusInterval {
		a.publishStatus()
	}
}

// reconnected marks, in the inbox, where a new local connection begins.
var reconnected = &message{QoS: 1}

// inbox holds local messages between the connection's reader, which must never block, and the
// dispatcher.
type inbox struct {
	mu      sync.Mutex
	msgs    []*message
	notify  chan struct{}
	dropped atomic.Uint64
}

func (b *inbox) put(m *message) {
	b.mu.Lock()
	// Log lines are never dropped: a lost subscribe line would under-serve its client for good.
	if len(b.msgs) >= maxInbox && m.QoS == 0 && !strings.HasPrefix(m.Topic, "$SYS/") {
		b.mu.Unlock()
		b.dropped.Add(1)
		return
	}
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	b.wake()
}

// empty reports whether the dispatcher has taken every message read so far.
func (b *inbox) empty() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs) == 0
}

func (b *inbox) wake() {
	select {
	case b.notify <- struct{}{}:
	default:
	}
}

// take swaps the waiting messages into buf.
func (b *inbox) take(buf []*message) []*message {
	b.mu.Lock()
	buf, b.msgs = b.msgs, buf
	b.mu.Unlock()
	return buf
}
