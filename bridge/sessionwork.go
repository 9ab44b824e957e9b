// sessionwork.go owns the connections the agent makes to its own broker with a client's id
// (sessions.go): a takeover (connect, acknowledge nothing, disconnect: the broker closes the
// older connection and keeps the session with everything unacknowledged in it), a replica sync
// (subscribe or unsubscribe the holder's filters), a drain (acknowledge what the replica queued
// while its client was connected elsewhere) and a removal (connect clean). One connection at a
// time, at most ConnectRate a second, takeovers first.

package bridge

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

type sessionJobKind int

const (
	jobTakeover sessionJobKind = iota
	jobSync
	jobDrain
	jobRemove
)

func (k sessionJobKind) String() string {
	return [...]string{"takeover", "replica sync", "drain", "remove"}[k]
}

// sessionJob is one connection with a client's id.
type sessionJob struct {
	kind  sessionJobKind
	id    string
	want  map[string]byte // jobSync: the holder's filters
	clean bool
	since uint64 // jobTakeover: the stamp of the newer connect elsewhere
	add   map[string]byte
	del   []string
	// drain: acknowledge what the broker sends (the client is connected elsewhere, its holder
	// is reachable); otherwise nothing is acknowledged and it stays in the session.
	drain bool
	// check, with drain or a removal, is asked when the job starts and before each batch of
	// acknowledgements (sessionplan.go stillHeld): once the cluster no longer says what the
	// plan saw (the client went offline or moved, its holder or its registry went stale),
	// nothing more is acknowledged or removed and the job ends.
	check func() bool
	// holderAnswers, with drain, proves the holder's broker reachable now, before each batch of
	// acknowledgements (drainAcks): check alone trusts a link that has not noticed a cut yet.
	holderAnswers func(context.Context) bool
	// at is when the plan made the job: a drain or removal older than a plan period is
	// dropped (the next plan decides again on what the cluster says then).
	at time.Time
	// forward hands a message the broker sends the job's connection to the node where the
	// client is connected (jobTakeover: where it connected later), as a relay that acknowledges
	// it once that node's broker has it (sessionplan.go forwardTo): with jobTakeover what the
	// older connection never acknowledged, with a drain what a session the client left here had
	// in flight (replicaState.handOver).
	forward *handOverTarget
	// fresh, with drain (jobSync): the session is first ended (a clean connect: it holds only
	// duplicates, its client being connected to a reachable holder), then made anew, so that
	// its subscriptions are exactly the ones the log shows (a session the agent cannot account
	// for after a gap in its log keeps it wanting everything, accounting.go).
	fresh bool
}

// Drain timing: after CONNACK Mosquitto sends the queued messages at once (its in-flight window,
// then one per acknowledgement, about 20 us each here). While no other job waits, a drain keeps
// its connection and acknowledges the client's messages as they come, one round trip to the
// holder per drainCycle at most: a failover then delivers again only what came in the last
// cycle or so, not what a whole drain_interval collected. Once another job waits, it ends after
// drainQuiet without a message, or after drainMax when live traffic keeps coming (the client
// gets that at its holder; a shorter drain only leaves more duplicates, never a loss).
const (
	drainQuiet = 20 * time.Millisecond
	drainMax   = 300 * time.Millisecond
	drainCycle = 50 * time.Millisecond
	// drainLag: a message is acknowledged only once it reached the drain this long before the
	// round trip to the holder began, so the holder's copy had that long to reach its client.
	drainLag = 20 * time.Millisecond
	// drainWindow: held messages that make a round trip due before drainCycle (Mosquitto's
	// default max_inflight_messages is 20), so a drain keeps up with about 20 per drainLag.
	drainWindow = 16
	// syncRetry is the least time between two syncs of one replica (the log must show the
	// first before the plan sees it done).
	syncRetry = 2 * time.Second
	// drainBusyKeep: a replica a drain took messages from this recently is busy: when its drain
	// lets go for another job it is due again at once, also when it let go in a lull (nothing
	// came for drainQuiet). Otherwise an idle replica's drain took the worker and held it for a
	// drain_interval, and the busy one collected that long (1.15 s in a chaos run).
	drainBusyKeep = time.Second
	// refusedRetry is how long a client id the broker refused is left alone.
	refusedRetry = time.Minute
)

// replicaState is the worker's memory of one client id.
type replicaState struct {
	drained, synced, refused time.Time
	draining                 bool            // a drain of it holds its connection now (no second one is planned)
	syncedSubs               map[string]byte // the holder's filters the last sync was for
	removedSince             uint64          // the holder's stamp a removal was done for
	takenSince               uint64          // the holder's stamp a takeover was done for
	// takeoverQueued: a takeover waits or runs; takeoverTried, takeoverFails: the last attempt
	// and the failures in a row since the last success (takeoverBackoff).
	takeoverQueued bool
	takeoverTried  time.Time
	takeoverFails  int
	// handOver: the client left this node's session (it connected later elsewhere); what the
	// session had in flight to its last connection is handed to its new node by the next drain
	// (sessionwork.go handOverInFlight) instead of being acknowledged.
	handOver bool
	// busyAt: when a drain of it last acknowledged something (drainBusyKeep).
	busyAt time.Time
	// leftAt: when the client was last seen leaving this node's session. For drainedKeep after
	// it, every drain of the session relays what the client's new node drained (its registry's
	// filter) instead of acknowledging it: a drain that let go for another job leaves the rest
	// of the backlog to the next one.
	leftAt time.Time
}

// prune forgets the ids keep refuses that no job waits for.
func (w *sessionWorker) prune(keep func(id string) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, st := range w.state {
		if !w.pending[id] && !st.takeoverQueued && !keep(id) {
			delete(w.state, id)
		}
	}
}

// sessionWorker runs session jobs against the local broker.
type sessionWorker struct {
	addr string
	tls  *tls.Config
	conn connSettings
	reg  *sessionRegistry
	log  *slog.Logger
	rate int
	// live reports whether the client is connected to the local broker now (the dispatcher's
	// view, see sessionRegistry.live): a job for such a client is skipped.
	live func(id string) bool

	mu      sync.Mutex
	urgent  []sessionJob // takeovers
	queue   []sessionJob
	pending map[string]bool
	state   map[string]*replicaState
	notify  chan struct{}

	takeovers, drains, drained, syncs, removed, refused, failed atomic.Uint64
	// stale counts drains and removals dropped because what they were decided on changed;
	// closedLive the session connections that found their client connected here unseen.
	stale, closedLive atomic.Uint64
	// forwarded counts the messages takeovers handed to the client's newer connection.
	forwarded atomic.Uint64
	// forwardSkipped counts the messages hand-overs acknowledged without forwarding: the
	// client's new node did not drain them (handOverTarget.wants), so it has them there.
	forwardSkipped atomic.Uint64
	// drainedLog records what the drains discarded, for the registry's filters (drained.go).
	drainedLog drainedLog
	// replan: a drain let go for another job with messages still coming; it is due again at
	// once, and the plan (sessionplan.go) runs at the next batch instead of up to
	// sessionPlanEvery later. Meanwhile the job that took the worker holds its connection while
	// nothing waits, so without it the busy replica went undrained 250 ms at a time: 25 of its
	// messages repeated on a move at 100 msg/s (chaos runs, 15-30 per fault).
	replan atomic.Bool
}

func newSessionWorker(addr string, tlsConf *tls.Config, conn connSettings, reg *sessionRegistry, rate int, log *slog.Logger) *sessionWorker {
	return &sessionWorker{addr: addr, tls: tlsConf, conn: conn, reg: reg, log: log, rate: rate,
		pending: map[string]bool{}, state: map[string]*replicaState{}, notify: make(chan struct{}, 1),
		live: reg.liveHere}
}

// stateOf returns the worker's memory of id (created), under w.mu.
func (w *sessionWorker) stateOf(id string) *replicaState {
	s := w.state[id]
	if s == nil {
		s = &replicaState{}
		w.state[id] = s
	}
	return s
}

// submit queues a job unless one for the id waits already. It reports whether it was queued.
func (w *sessionWorker) submit(j sessionJob) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending[j.id] && j.kind != jobTakeover {
		return false
	}
	w.pending[j.id] = true
	j.at = time.Now()
	if j.kind == jobTakeover {
		w.urgent = append(w.urgent, j)
	} else {
		w.queue = append(w.queue, j)
	}
	select {
	case w.notify <- struct{}{}:
	default:
	}
	return true
}

func (w *sessionWorker) pendingCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.urgent) + len(w.queue)
}

func (w *sessionWorker) next() (sessionJob, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var j sessionJob
	switch {
	case len(w.urgent) > 0:
		j, w.urgent = w.urgent[0], w.urgent[1:]
	case len(w.queue) > 0:
		j, w.queue = w.queue[0], w.queue[1:]
	default:
		return j, false
	}
	delete(w.pending, j.id)
	return j, true
}

// run does the jobs until ctx ends: one connection at a time, at most rate a second.
func (w *sessionWorker) run(ctx context.Context) {
	gap := time.Second / time.Duration(w.rate)
	// Takeovers do not wait for the rate (within a second of the newer connect), up to rate of
	// them in a second: a burst beyond goes at the rate.
	burstAt, burst := time.Now(), 0
	for {
		j, ok := w.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-w.notify:
				continue
			}
		}
		start := time.Now()
		if !w.do(ctx, j) {
			continue
		}
		if j.kind == jobTakeover {
			if time.Since(burstAt) >= time.Second {
				burstAt, burst = time.Now(), 0
			}
			if burst++; burst <= w.rate {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(gap - time.Since(start)):
		}
	}
}

// do runs one job. It reports whether it connected (spent the connect rate).
func (w *sessionWorker) do(ctx context.Context, j sessionJob) bool {
	if j.kind != jobTakeover && w.live(j.id) {
		return false // the client is here now: its session is its own
	}
	w.mu.Lock()
	st := w.stateOf(j.id)
	refused := time.Since(st.refused) < refusedRetry
	w.mu.Unlock()
	if refused && j.kind != jobTakeover {
		return false
	}
	if acts := j.drain || j.kind == jobRemove; acts && (time.Since(j.at) > sessionPlanEvery || j.check != nil && !j.check()) {
		// Decided on what the cluster said then; the next plan decides again. A sync still
		// subscribes, acknowledging nothing.
		w.stale.Add(1)
		if j.kind != jobSync || j.fresh {
			return false
		}
		j.drain = false
	}
	// The agent's connections with clients' ids are MQTT 3.1.1 (mqttconn speaks no 3.1) without
	// a will; the broker tells them from the client's by their address (sessions.go).
	if j.kind != jobTakeover && (j.clean || j.fresh) {
		// A clean connect ends the session: first make sure the client is not connected here
		// unseen (connected, its line not read yet), with a connect that keeps it.
		if !w.probe(ctx, j.id) {
			w.stale.Add(1)
			return true
		}
	}
	if j.fresh {
		o := w.conn.options(j.id, 4, true, w.tls)
		o.Dialed = func(a net.Addr) { w.reg.addOwn(a.String(), false) }
		c, _, err := mqttconn.Dial(ctx, w.addr, o, func(*message) {})
		if err != nil {
			w.failed.Add(1)
			return true
		}
		c.Close()
	}
	start, released, replanAfter := time.Now(), false, false
	// Runs after draining is cleared (deferred first, so run last): a plan in between would
	// skip the replica as still draining.
	defer func() {
		if replanAfter {
			w.replan.Store(true)
		}
	}()
	if j.drain {
		w.setDraining(j.id, true)
		defer w.setDraining(j.id, false)
	}
	o := w.conn.options(j.id, 4, j.clean, w.tls)
	var oc *ownConn
	o.Dialed = func(a net.Addr) { oc = w.reg.addOwn(a.String(), j.fresh) }
	var got atomic.Uint64
	var last atomic.Int64
	var stopped atomic.Bool
	last.Store(time.Now().UnixNano())
	held := &heldMessages{}
	// A drain of a session its client left here: the messages Mosquitto sends again (DUP) were
	// in flight to the client's last connection here, and the ones the client's new node
	// drained from its replica (its filter) may never have reached the client.
	handOver := j.drain && j.forward != nil && w.handOverDue(j.id)
	leftHere := j.drain && j.forward != nil && w.leftRecently(j.id)
	inFlight := &heldMessages{}
	onPublish := func(m *message) {
		last.Store(time.Now().UnixNano())
		if j.kind == jobTakeover && j.forward != nil && m.QoS > 0 {
			held.add(m) // what the older connection never acknowledged: handed to the client
			return
		}
		if handOver && m.QoS > 0 && (m.Dup || j.forward.drainedThere(m)) && inFlight.addOpen(m) {
			return // handed over by handOverInFlight; what comes after it, by drainAcks
		}
		if j.drain && !stopped.Load() {
			held.add(m) // acknowledged by drainAcks once the holder answers
		}
		// Otherwise nothing is acknowledged: it stays in the session (in flight, sent again on
		// the next connect [MQTT-4.4.0-1]).
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, _, err := mqttconn.Dial(dctx, w.addr, o, onPublish)
	if err == nil {
		// Until the agent read this connection's own connect line, what comes may be a live
		// client's (its connection closed by this one): nothing is acknowledged, subscribed or
		// unsubscribed before the line shows the connection closed nobody's.
		mine := true
		if j.drain || j.kind == jobSync {
			if mine = w.ownLine(dctx, oc, j.id); !mine {
				stopped.Store(true)
			}
		}
		if mine && len(j.add) > 0 {
			err = c.Subscribe(dctx, j.add)
		}
		if mine && err == nil && len(j.del) > 0 {
			err = c.Unsubscribe(dctx, j.del)
		}
		if j.kind == jobTakeover && j.forward != nil {
			w.forwardUnacked(dctx, c, j, held, &last, &got)
		}
		if mine && err == nil && j.drain && handOver {
			if !w.handOverInFlight(dctx, c, j, inFlight) {
				stopped.Store(true) // not all handed over: nothing else is acknowledged either
			}
		}
		if mine && err == nil && j.drain && !stopped.Load() {
			w.drains.Add(1)
			w.log.Debug("session drain begun", "client", j.id, "job", jobDrain, "with", j.kind)
			// Not bounded by dctx: a drain holds its connection while nothing else waits.
			released = w.drainAcks(ctx, c, j, leftHere, held, &last, &stopped, &got)
		}
		c.Close()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st = w.stateOf(j.id)
	if j.kind == jobTakeover {
		st.takeoverQueued, st.takeoverTried = false, time.Now()
		if c == nil {
			st.takeoverFails++ // tried again after takeoverBackoff
		} else {
			st.takenSince, st.takeoverFails = max(st.takenSince, j.since), 0
		}
	}
	switch {
	case errors.Is(err, mqttconn.ErrRefused):
		w.refused.Add(1)
		if st.refused.IsZero() { // once per client id
			w.log.Warn("the broker refuses the agent acting for a client id: its session is not replicated or taken over; allow the agent's account to use every client id (see `mosquitto-ha acl`)",
				"client", j.id, "job", j.kind, "err", err)
		}
		st.refused = time.Now()
		return true
	case err != nil && c == nil:
		w.failed.Add(1)
		w.log.Debug("session connection failed", "client", j.id, "job", j.kind, "err", err)
		return true
	case err != nil:
		// A client connecting while the agent drains takes the connection over: normal.
		w.log.Debug("session connection ended early", "client", j.id, "job", j.kind, "err", err)
	}
	switch j.kind {
	case jobTakeover:
		w.takeovers.Add(1)
		w.log.Info("client id connected on another broker: closed its older connection here", "client", j.id)
	case jobSync:
		w.syncs.Add(1)
		st.synced, st.syncedSubs = time.Now(), j.want
	case jobRemove:
		w.removed.Add(1)
		st.synced = time.Time{}
	}
	if j.drain {
		// Due again drain_interval after this one began: one that held its connection that
		// long (nothing else waited) is due at once when something else made it let go. A
		// busy replica (messages taken within drainBusyKeep) that let go for another job is
		// due at once, and the plan runs at once (replan): the replicas that take messages
		// share the worker in turns, the idle ones once a drain_interval.
		st.drained = start
		if got.Load() > 0 {
			st.busyAt = time.Now()
		}
		if released && time.Since(st.busyAt) < drainBusyKeep {
			st.drained = time.Time{}
			replanAfter = true
		}
	}
	for _, m := range append(held.closeAndTake(), inFlight.closeAndTake()...) {
		if !m.Acked() {
			w.trace(j, "left in session", m)
		}
	}
	filter := -1 // no hand-over
	if j.forward != nil {
		filter = len(j.forward.drained)
	}
	w.log.Debug("session job done", "client", j.id, "job", j.kind, "acknowledged", got.Load(), "filter_bytes", filter)
	return true
}

// ownLineWait bounds the wait for the agent's own connect line (read in milliseconds normally).
const ownLineWait = time.Second

// ownLine waits until the dispatcher read oc's connect line, and reports whether the connection
// closed nobody's: false when the line did not come within ownLineWait, or when Mosquitto logged
// right before it that the id was connected (the client connected here and the agent had not read
// its line yet: the connection closed the client's, which reconnects to its session, intact
// since the agent connects with clean session false).
func (w *sessionWorker) ownLine(ctx context.Context, oc *ownConn, id string) bool {
	if oc == nil {
		return false
	}
	select {
	case <-oc.line:
	case <-ctx.Done():
		return false
	case <-time.After(ownLineWait):
		w.log.Debug("own connect line not read in time: nothing acknowledged", "client", id)
		return false
	}
	if oc.tookOver {
		w.closedLive.Add(1)
		w.log.Info("a session connection found its client connected here unseen: closed at once, nothing acknowledged", "client", id)
		return false
	}
	return true
}

// probe connects as id with clean session false and disconnects, and reports whether that
// closed nobody's connection (ownLine): a clean connect after it ends no live client's session,
// but for a client that connects in the milliseconds between the two.
func (w *sessionWorker) probe(ctx context.Context, id string) bool {
	o := w.conn.options(id, 4, false, w.tls)
	var oc *ownConn
	o.Dialed = func(a net.Addr) { oc = w.reg.addOwn(a.String(), false) }
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, _, err := mqttconn.Dial(pctx, w.addr, o, func(*message) {})
	if err != nil {
		return false
	}
	defer c.Close()
	return w.ownLine(pctx, oc, id)
}

// setDraining records whether a drain of id holds its connection.
func (w *sessionWorker) setDraining(id string, on bool) {
	w.mu.Lock()
	w.stateOf(id).draining = on
	w.mu.Unlock()
}

// heldMessages are what a drain received and has not acknowledged yet, in the order they came.
type heldMessages struct {
	mu     sync.Mutex
	ms     []*message
	at     []time.Time
	closed bool // closeAndTake: addOpen takes no more
}

// addOpen adds m unless the messages were taken for good (closeAndTake); it reports whether.
func (h *heldMessages) addOpen(m *message) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.ms = append(h.ms, m)
	h.at = append(h.at, time.Now())
	return true
}

// closeAndTake removes and returns every message, and takes no more.
func (h *heldMessages) closeAndTake() []*message {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := h.ms
	h.ms, h.at, h.closed = nil, nil, true
	return ms
}

func (h *heldMessages) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ms)
}

func (h *heldMessages) add(m *message) { h.addOpen(m) }

// takeBefore removes and returns the messages that came before t.
func (h *heldMessages) takeBefore(t time.Time) []*message {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for n < len(h.at) && h.at[n].Before(t) {
		n++
	}
	ms := h.ms[:n:n]
	h.ms, h.at = h.ms[n:], h.at[n:]
	return ms
}

// drainAcks acknowledges what the drain receives, a batch at a time (at most the broker's
// in-flight window, 20 by default), each batch only after the holder's broker answered a round
// trip begun at least drainLag after the batch arrived: a holder whose link was cut a moment ago
// fails it (within drainProbeTimeout), and its client, which may be moving here, finds every
// message since. While no other job waits it holds the connection, a round trip per drainCycle
// at most, asking j.check every cycle; otherwise it returns once the broker sent nothing for
// drainQuiet, or after drainMax. It also returns when the holder does not answer (stopped:
// nothing more is acknowledged; the rest stays in flight in the session), when the cluster no
// longer says what the drain was planned on, or when the broker closes the connection (its
// client connected here). With leftHere (a session its client left here lately), a message
// the client's new node drained from its replica goes there instead of being acknowledged.
func (w *sessionWorker) drainAcks(ctx context.Context, c *mqttconn.Conn, j sessionJob, leftHere bool, held *heldMessages,
	last *atomic.Int64, stopped *atomic.Bool, got *atomic.Uint64) (released bool) {
	deadline := time.Now().Add(drainMax)
	var trip time.Time // the last round trip (or check) begun
	for !stopped.Load() {
		hold := w.pendingCount() == 0
		// A round trip per drainCycle, or sooner once the broker's in-flight window (20 by
		// default) is nearly full: it sends no more until something is acknowledged.
		if now := time.Now(); !hold || now.Sub(trip) >= drainCycle || held.len() >= drainWindow {
			if ms := held.takeBefore(now.Add(-drainLag)); len(ms) > 0 {
				trip = now
				if (j.check != nil && !j.check()) || (j.holderAnswers != nil && !j.holderAnswers(ctx)) {
					stopped.Store(true) // the holder is gone: what it held back may be the client's
					return false
				}
				for _, m := range ms {
					if leftHere && j.forward.drainedThere(m) {
						// Queued behind the hand-over's first messages: the client's new
						// node drained it, so the client may never have got it. Noted as
						// drained all the same: it leaves this session undelivered, and the
						// filter may have said so falsely (about 1%): should the client come
						// back here, its node then hands this message over again.
						w.drainedLog.note(j.id, m)
						j.forward.send(m) // acknowledged once that node's broker has it
						w.forwarded.Add(1)
						w.trace(j, "handed over", m)
						continue
					}
					// Noted before the acknowledgement: the client's connect, which ends the
					// drain, is read after the broker took the acknowledgement, and its
					// registry's filter must hold the message (a note whose acknowledgement
					// fails only repeats it).
					w.drainedLog.note(j.id, m)
					m.Ack()
					w.trace(j, "drained", m)
				}
				got.Add(uint64(len(ms)))
				w.drained.Add(uint64(len(ms)))
				continue
			}
			if hold && now.Sub(trip) >= drainCycle {
				trip = now
				if j.check != nil && !j.check() {
					return false // the client went offline or moved, or its holder went stale
				}
			}
		}
		quiet := time.Since(time.Unix(0, last.Load()))
		if !hold && (quiet >= max(drainQuiet, drainLag) || !time.Now().Before(deadline)) {
			return true // another job waits
		}
		select {
		case <-ctx.Done():
			return false
		case <-c.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
	return false
}

// handOverDue reports whether a session the client left here still has its in-flight messages
// to hand over.
func (w *sessionWorker) handOverDue(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stateOf(id).handOver
}

// leftRecently reports whether the client left this node's session within drainedKeep.
func (w *sessionWorker) leftRecently(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	at := w.stateOf(id).leftAt
	return !at.IsZero() && time.Since(at) < drainedKeep
}

// handOverInFlight forwards what a session the client left here had in flight to its last
// connection here (sent again with DUP when the drain connected) to the client's node, and
// acknowledges each once that node's broker has it. A connection of the client that died
// unseen, while its replicas elsewhere were drained (this node still said it was connected),
// had those in flight and never got them; one broker would send them again when the client
// reconnects. It reports whether every one was handed over (then the hand-over is done).
func (w *sessionWorker) handOverInFlight(ctx context.Context, c *mqttconn.Conn, j sessionJob, inFlight *heldMessages) bool {
	time.Sleep(drainQuiet)        // the broker sends them at once after CONNACK: all came by now
	ms := inFlight.closeAndTake() // what comes later (the backlog behind) goes to drainAcks
	if j.check != nil && !j.check() {
		return false
	}
	if n, _ := w.forwardAll(ctx, c, j, ms, time.Now().Add(forwardWait)); n < len(ms) {
		return false
	}
	w.mu.Lock()
	w.stateOf(j.id).handOver = false
	w.mu.Unlock()
	if len(ms) > 0 {
		w.log.Info("a session its client left here had messages in flight: handed to the client's node", "client", j.id, "messages", len(ms))
	}
	return true
}

// handOverTarget is where a hand-over relays a session's messages: the node where the client
// connected after leaving this one, with the filter of what that node's drains discarded from
// its replica before the connect (drained.go; nil: not known).
type handOverTarget struct {
	send    func(*message)
	drained drainedFilter
}

// wants reports whether a hand-over relays m: a message the client's new node drained may
// never have reached the client; one it did not drain the client gets there. What was in
// flight (DUP) goes too: the filter covers drainedWindow only. Without a filter, everything.
func (t *handOverTarget) wants(m *message) bool {
	return t.drained == nil || m.Dup || t.drained.has(messageHash(m))
}

// drainedThere reports whether the client's new node says it drained m (false without a filter).
func (t *handOverTarget) drainedThere(m *message) bool {
	return t.drained != nil && t.drained.has(messageHash(m))
}

// forwardAll hands ms to the client's node (j.forward) and waits until each is acknowledged (its
// relay settled), until deadline. A message the hand-over does not want (the client has it at
// its new node) is acknowledged without forwarding. It returns how many were acknowledged, in
// order (the rest stays in the session, unacknowledged), and how many it forwarded.
func (w *sessionWorker) forwardAll(ctx context.Context, c *mqttconn.Conn, j sessionJob, ms []*message, deadline time.Time) (acked, sent int) {
	after := make([]bool, len(ms)) // acknowledged here, not forwarded
	for i, m := range ms {
		// Each leaves this session undelivered here: noted as drained, so that a client that
		// comes back here has it handed over from where it was (drainAcks).
		w.drainedLog.note(j.id, m)
		if after[i] = !j.forward.wants(m); after[i] {
			m.Ack()
			w.forwardSkipped.Add(1)
			w.trace(j, "skipped", m)
			continue
		}
		j.forward.send(m)
		w.trace(j, "forwarded", m)
		sent++
	}
	for i, m := range ms {
		for !m.Acked() && time.Now().Before(deadline) && c.Err() == nil && ctx.Err() == nil {
			time.Sleep(2 * time.Millisecond)
		}
		if !m.Acked() {
			return i, sent
		}
		if !after[i] {
			w.forwarded.Add(1)
		}
	}
	return len(ms), sent
}

// trace logs, at debug level, what a session job did with one message, by the first 8 bytes of
// its payload: the trail by which a chaos run's lost or repeated message is followed.
func (w *sessionWorker) trace(j sessionJob, action string, m *message) {
	if !w.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	w.log.Debug("session message", "client", j.id, "job", j.kind, "action", action, "mid", m.ID, "dup", m.Dup,
		"head", hex.EncodeToString(m.Payload[:min(8, len(m.Payload))]))
}

// forwardWait bounds the wait for the relays of a takeover's forwarded messages to be settled.
const forwardWait = 2 * time.Second

// forwardUnacked runs on a takeover's connection: Mosquitto resumes the session and sends again
// what the older connection never acknowledged (in flight when its connection died unseen, then
// what was queued behind). The client has moved to the node of the newer connect, whose replica
// may have been drained of those very messages while this broker still counted the client
// connected; so each goes there as a relay, and is acknowledged here once that node's broker
// took it. What is not settled within forwardWait stays in this session, unacknowledged.
func (w *sessionWorker) forwardUnacked(ctx context.Context, c *mqttconn.Conn, j sessionJob, held *heldMessages,
	last *atomic.Int64, got *atomic.Uint64) {
	deadline := time.Now().Add(forwardWait)
	first := 0 // the first round: what was in flight, at most the broker's in-flight window
	for {
		// The broker sends its in-flight window at once, and what was queued behind it as the
		// acknowledgements free the window, a window at a time: a round ends after drainQuiet
		// without a message, and the backlog with the first round smaller than the first (what
		// comes after it is relayed here after the move: the client has it at its new node).
		for time.Since(time.Unix(0, last.Load())) < drainQuiet && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return
			case <-c.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		ms := held.takeBefore(time.Now().Add(time.Hour))
		if len(ms) == 0 {
			return
		}
		if first == 0 {
			first = len(ms)
		}
		n, sent := w.forwardAll(ctx, c, j, ms, deadline)
		got.Add(uint64(n))
		if n < len(ms) {
			return // not settled in time: the rest stays in this session
		}
		if len(ms) < first || sent == 0 {
			return // the backlog is over, or what comes reached the client at its new node
		}
		last.Store(time.Now().UnixNano())
	}
}

// rendezvous orders nodes for a client id (highest random weight hashing): the first n of the
// order hold its replicas, and a node joining or leaving moves only the replicas it takes or held.
func rendezvous(id string, nodes []string) []string {
	type w struct {
		node string
		h    uint64
	}
	ws := make([]w, len(nodes))
	for i, n := range nodes {
		ws[i] = w{n, fnv64([]byte(id + "\x00" + n))}
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].h > ws[j].h || ws[i].h == ws[j].h && ws[i].node < ws[j].node })
	out := make([]string, len(ws))
	for i, x := range ws {
		out[i] = x.node
	}
	return out
}
