// sessionplan.go owns what the dispatcher does with the session registries (sessions.go): it
// publishes this node's registry, takes in the peers' ones, and plans the worker's jobs
// (sessionwork.go): take over a connection whose client id connected later elsewhere, keep
// this node's replicas of sessions held elsewhere subscribed as their holder says, drain them
// while their client is connected and its holder reachable, remove them when their client
// started clean.

package bridge

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"
)

// sessionsOn reports whether sessions follow their client.
func (a *Agent) sessionsOn() bool { return a.sess != nil }

// publishSessions publishes this node's registry when it changed, at most every
// sessionsMinInterval, once the earlier run's registry was read (adoptSessions).
func (a *Agent) publishSessions(newest map[string]heldBy) {
	r := a.sess
	if !r.loaded && !r.upAt.IsZero() && time.Since(r.upAt) >= sessionsStartGrace {
		r.loaded, r.dirty = true, true // no earlier registry came: this run's is the first
	}
	if time.Since(r.last) >= sessionsRepublish {
		// Unchanged, again: peers act on a registry only while it keeps coming (registryFresh),
		// and a broker that lost the retained copy gets it back.
		r.dirty = true
	}
	// A large registry is published less often: 1 ms per KiB of the last one, at least
	// sessionsMinInterval (10,000 clients, about 1 MiB: once a second at most).
	if !r.dirty || time.Since(r.last) < max(sessionsMinInterval, time.Duration(r.lastBytes/1024)*time.Millisecond) {
		return
	}
	if !r.loaded {
		return
	}
	c := a.localConn()
	if c == nil {
		return
	}
	msg := sessionsMsg{Version: registryVersion, Node: a.opts.Node, Sessions: []sessionEntry{}}
	drained := a.drainedFilters(newest)
	for _, id := range slices.Sorted(maps.Keys(r.own)) {
		s := r.own[id]
		if h, ok := newest[id]; ok && h.newer(s.since, a.opts.Node) {
			continue // held elsewhere now
		}
		// A connection not seen connecting in this run may be gone: not connected for peers.
		e := sessionEntry{ID: id, Conn: s.conn && s.seen, Since: s.since, Clean: s.clean, Proto: s.proto, Drained: drained[id]}
		if cl := a.model.clients[id]; cl != nil {
			e.SubsUnknown = cl.SubsUnknown
			for f, q := range cl.Subs {
				if registryFilterOK(f, q) {
					if e.Subs == nil {
						e.Subs = map[string]byte{}
					}
					e.Subs[f] = q
				}
			}
			if len(e.Subs) > maxRegistryFilters {
				e.Subs, e.NoReplica = nil, true
				if !r.warned[id] {
					r.warned[id] = true
					a.log.Warn("client holds more filters than a session registry carries: its session is not replicated", "client", id, "filters", len(cl.Subs), "limit", maxRegistryFilters)
				}
			}
		}
		msg.Sessions = append(msg.Sessions, e)
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return
	}
	if lim := a.limits.Load().MaxInterestBytes; len(b) > lim && len(drained) > 0 {
		// Without the drained filters rather than not at all: hand-overs then relay
		// everything (duplicates), while a registry not published stops every drain.
		for i := range msg.Sessions {
			msg.Sessions[i].Drained = nil
		}
		if b, err = json.Marshal(msg); err != nil {
			return
		}
	}
	if lim := a.limits.Load().MaxInterestBytes; len(b) > lim {
		// Not published, and tried again (still dirty) as the size spaces it: peers stop
		// draining on the last one they have once it ages (registryFresh).
		if time.Since(r.oversizeWarned) >= time.Minute {
			r.oversizeWarned = time.Now()
			a.log.Warn("session registry over the size peers accept: not published, peers stop draining replicas of this node's sessions (raise limits.max_interest_bytes)", "bytes", len(b), "limit", lim)
		}
		r.last, r.lastBytes = time.Now(), len(b)
		return
	}
	topic := a.topics.Sessions(a.opts.Node)
	a.log.Debug("session registry published", "sessions", len(msg.Sessions), "bytes", len(b))
	c.Publish(topic, 1, true, a.signer.sealJSON(topic, b), nil)
	a.sessBytes.Add(uint64(len(b)))
	r.last, r.dirty, r.lastBytes = time.Now(), false, len(b)
}

// drainedFilters returns the filters of what the drains discarded (drained.go) for the clients
// that connected here within drainedKeep and hold their session here, the newest connects
// first, within drainedBudget bytes.
func (a *Agent) drainedFilters(newest map[string]heldBy) map[string]drainedFilter {
	connects := map[string]time.Time{}
	for id, s := range a.sess.own {
		at := time.UnixMilli(int64(stampMillis(s.since)))
		if h, ok := newest[id]; (!ok || !h.newer(s.since, a.opts.Node)) && s.seen && time.Since(at) < drainedKeep {
			connects[id] = at
		}
	}
	filters := a.sessWork.drainedLog.filters(connects)
	ids := slices.SortedFunc(maps.Keys(filters), func(x, y string) int { return connects[y].Compare(connects[x]) })
	budget := drainedBudget
	for _, id := range ids {
		if budget -= len(filters[id]); budget < 0 {
			delete(filters, id) // not carried: the hand-over forwards everything
		}
	}
	return filters
}

// publishNoSessions runs, with sessions off, on each local (re)connection: this node's registry
// lists no session, retained, so peers stop acting on one an earlier run published.
func (a *Agent) publishNoSessions() {
	c := a.localConn()
	if c == nil {
		return
	}
	b, err := json.Marshal(sessionsMsg{Version: registryVersion, Node: a.opts.Node, Sessions: []sessionEntry{}})
	if err != nil {
		return
	}
	topic := a.topics.Sessions(a.opts.Node)
	c.Publish(topic, 1, true, a.signer.sealJSON(topic, b), nil)
}

// adoptSessions takes in this node's retained registry, published by an earlier run of the
// agent, once: the stamps of its sessions' connects survive the agent's restart.
func (a *Agent) adoptSessions(payload []byte) {
	r := a.sess
	if r.loaded {
		// No-local keeps this run's publications away: somebody else wrote this node's
		// registry. Restored at the next publication.
		r.dirty = true
		a.log.Warn("foreign publish on this node's session registry: restoring it", "bytes", len(payload))
		return
	}
	r.loaded, r.dirty = true, true
	topic := a.topics.Sessions(a.opts.Node)
	p, err := a.signer.openJSON(topic, payload)
	if err != nil {
		a.log.Warn("foreign publish on this node's session registry: ignored", "err", err)
		return
	}
	reg, err := decodeRegistry(p, a.opts.Node, a.limits.Load().MaxInterestBytes, r.clock)
	if err != nil {
		a.log.Warn("this node's earlier session registry unusable", "err", err)
		return
	}
	for id, e := range reg {
		r.clock.advance(e.Since)
		if r.own[id] != nil {
			continue
		}
		s := &localSession{since: e.Since, clean: e.Clean, proto: e.Proto} // not seen in this run
		r.own[id] = s
		cl := a.model.clients[id]
		r.setConn(id, s, e.Conn && cl != nil && cl.Connected)
		a.log.Debug("session of the earlier run adopted", "client", id, "listed_connected", e.Conn,
			"model_knows", cl != nil, "model_connected", cl != nil && cl.Connected)
	}
}

// heldBy is the newest entry of a client id among the peers' registries.
type heldBy struct {
	e    sessionEntry
	node string
	p    *peer
}

// newer reports whether h is newer than a local session stamped since on node.
func (h heldBy) newer(since uint64, node string) bool {
	return h.e.Since > since || h.e.Since == since && h.node > node
}

// newestHeld gathers the newest entry of every client id the peers' registries list.
func (a *Agent) newestHeld() map[string]heldBy {
	out := map[string]heldBy{}
	for _, p := range a.peerList() {
		reg := p.sessions.Load()
		if reg == nil {
			continue
		}
		for id, e := range *reg {
			if h, ok := out[id]; !ok || (heldBy{e, p.name, p}).newer(h.e.Since, h.node) {
				out[id] = heldBy{e, p.name, p}
			}
		}
	}
	return out
}

// sessionPlanEvery is how often the plan runs without a registry change (drains come due): a
// quarter of the default drain interval, so a drain is at most that late. The plan walks every
// session the peers list (about 100 ns each: 100,000 sessions cost 10 ms of the dispatcher).
const sessionPlanEvery = 250 * time.Millisecond

// planSessions runs on the dispatcher after each batch.
func (a *Agent) planSessions() {
	if a.sess.upAt.IsZero() && a.localConn() != nil {
		a.sess.upAt = time.Now()
	}
	changed := a.sessChanged.Swap(false)
	replan := a.sessWork.replan.Swap(false)
	if !changed && !replan && !a.sess.dirty && time.Since(a.sessPlanned) < sessionPlanEvery {
		return
	}
	a.sessPlanned = time.Now()
	if changed || a.sessNewest == nil {
		a.sessNewest = a.newestHeld()
	}
	newest := a.sessNewest
	if !a.sess.loaded {
		// Until the earlier run's registry is read, a client connected here may look held
		// elsewhere: acting for it would close its connection.
		a.publishSessions(newest)
		return
	}
	replicas := 0
	w := a.sessWork
	for id, h := range newest {
		s := a.sess.own[id]
		if s != nil && !h.newer(s.since, a.opts.Node) {
			continue // held here
		}
		if s != nil {
			if s.conn {
				// [MQTT-3.1.4-2] the client id connected later on another broker: close the
				// older connection here, as one broker would. The session stays unless either
				// connect was clean (Mosquitto's handle_connect.c: the will is sent then too).
				a.takeover(id, h, s.clean || h.e.Clean)
				continue
			}
			a.sess.drop(id) // it moved: what it left here is a replica, or removed below
			// What its last connection here had in flight may never have reached it (a
			// connection that died unseen): the next drain hands that to its new node.
			w.mu.Lock()
			st := w.stateOf(id)
			st.handOver, st.leftAt = true, time.Now()
			w.mu.Unlock()
		}
		if a.planReplica(id, h, w) {
			replicas++
		}
	}
	a.sessReplicas.Store(int64(replicas))
	if time.Since(a.sess.pruned) >= sessionStatePrune {
		// The worker's memory of ids nobody lists any more (the cluster's registries, this
		// broker's sessions, the log's clients) goes: it would grow with every id ever seen.
		a.sess.pruned = time.Now()
		w.prune(func(id string) bool {
			_, listed := newest[id]
			return listed || a.sess.own[id] != nil || a.model.clients[id] != nil
		})
	}
	a.publishSessions(newest)
	held, conn := 0, 0
	for id, s := range a.sess.own {
		if h, ok := newest[id]; !ok || !h.newer(s.since, a.opts.Node) {
			held++
			if s.conn {
				conn++
			}
		}
	}
	a.sessHeld.Store(int64(held))
	a.sessConnected.Store(int64(conn))
}

// takeover submits a takeover once per newer connect, again after a failed one (the broker
// away, a refusal) with a backoff (takeoverBackoff).
func (a *Agent) takeover(id string, h heldBy, clean bool) {
	w := a.sessWork
	w.mu.Lock()
	st := w.stateOf(id)
	due := st.takenSince < h.e.Since && !st.takeoverQueued && time.Since(st.takeoverTried) >= takeoverBackoff(st.takeoverFails)
	st.takeoverQueued = st.takeoverQueued || due
	w.mu.Unlock()
	if due {
		w.submit(sessionJob{kind: jobTakeover, id: id, clean: clean, since: h.e.Since, forward: forwardTo(h)})
	}
}

// forwardTo relays a message a session connection received (a takeover's, or a drain's handing
// over what was in flight: sessionwork.go) to h's node, where the client is connected now:
// acknowledged once that node's broker has it.
// Its identity is new (an epoch of its own): it is no repeat of a relay that node has seen.
// Made only for a job that is submitted: each draws a random epoch.
func forwardTo(h heldBy) *handOverTarget {
	epoch, p := randomEpoch(), h.p
	return &handOverTarget{
		drained: h.e.Drained,
		send: func(m *message) {
			g := &ackGroup{msg: m}
			g.left.Store(1)
			p.enqueue(&relay{topic: m.Topic, payload: m.Payload, qos: m.QoS, group: g, mid: m.ID, epoch: epoch, props: propsOf(m)})
		},
	}
}

// takeoverBackoff is the wait before a takeover is tried again after fails failures: 250 ms,
// doubling, at most 30 s.
func takeoverBackoff(fails int) time.Duration {
	if fails == 0 {
		return 0
	}
	return min(250*time.Millisecond<<min(fails-1, 8), 30*time.Second)
}

// sessionStatePrune is how often the worker's memory of client ids is pruned.
const sessionStatePrune = 10 * time.Second

// planReplica keeps this node's copy of a session held on h.node as the options say. It reports
// whether the broker holds a replica of it.
func (a *Agent) planReplica(id string, h heldBy, w *sessionWorker) (replica bool) {
	cl := a.model.clients[id]
	w.mu.Lock()
	st := w.stateOf(id)
	removedFor, synced, drained, syncedSubs, draining := st.removedSince, st.synced, st.drained, st.syncedSubs, st.draining
	w.mu.Unlock()
	if a.sess.liveHere(id) || cl != nil && cl.Connected && cl.present && !draining {
		// Its client is connected here (or the model says so: an agent that restarted may not
		// have its stamp yet); a connection with its id would close the client's. A
		// connection seen before a gap in the log proves nothing (the agent's own drain may
		// have held it when the agent stopped), nor does the one of a drain that holds now.
		return false
	}
	hp := h.p
	// The holder is reachable: its link is up, its agent up and its status fresh (one comes
	// every statusInterval); a stale status may be an agent that hangs, or a broker going away.
	live := func() bool {
		return hp.Up() && !hp.interest.agentDown.Load() &&
			time.Since(time.Unix(0, hp.statusSeen.Load())) < 3*statusInterval
	}
	// answers proves the holder's broker reachable now, by a round trip on the link (a link
	// that is cut notices only at its keepalive, seconds later).
	answers := func(ctx context.Context) bool { return hp.answers(ctx, a.topics.DrainProbe(a.opts.Node)) }
	// held: the holder still says its client is connected there, with a fresh registry
	// (stillHeld); drains and removals ask again when they start and before each batch of acknowledgements.
	held := a.stillHeld(id, h, true)
	holderLive := live()
	remove := func() {
		if removedFor >= h.e.Since || cl == nil && synced.IsZero() {
			return // nothing here, or removed for this connect already
		}
		if w.submit(sessionJob{kind: jobRemove, id: id, clean: true, check: a.stillHeld(id, h, !h.e.Clean)}) {
			w.mu.Lock()
			w.stateOf(id).removedSince = h.e.Since
			w.mu.Unlock()
		}
	}
	if h.e.Clean {
		// A clean connect anywhere ends the session everywhere, as on one broker [MQTT-3.1.2-6].
		remove()
		return false
	}
	if h.e.NoReplica || !a.inReplicaSet(id, h.node) {
		// Not one of its replicas: a session it left here only collects duplicates. Removed
		// while its client is connected on a reachable holder, never while it may be moving.
		if h.e.Conn && held() {
			remove()
		}
		return false
	}
	if !holderLive {
		// Its client may be moving here: a connection with its id now would close the client's
		// (before the agent reads its connect line) and gains nothing; the replica stays as it is.
		return cl != nil
	}
	// A replica never joins a shared subscription: the broker would hand the group's messages
	// to it, where a drain takes them from the group's live members. (A replica found by its
	// client lacks them: docs/semantics.md.)
	want := map[string]byte{}
	for f, q := range h.e.Subs {
		if !strings.HasPrefix(f, "$share/") {
			want[f] = q
		}
	}
	add := map[string]byte{}
	var del []string
	// What the broker's session of id holds: the log's account, unless the session predates
	// what the agent read and no sync of this run made it.
	known := cl != nil && (!cl.SubsUnknown || !synced.IsZero())
	for f, q := range want {
		if have, ok := cl.subsOf()[f]; !known || !ok || have != q {
			add[f] = q
		}
	}
	if known && !h.e.SubsUnknown {
		for f := range cl.Subs {
			if _, ok := want[f]; !ok {
				del = append(del, f)
			}
		}
	}
	drain := h.e.Conn && holderLive && held()
	switch {
	case cl != nil && cl.SubsUnknown && drain && time.Since(synced) >= syncRetry && !w.leftRecently(id):
		// Made anew: then every subscription it holds is in the log (sessionJob.fresh). Not a
		// session its client left lately: ending it would discard what the hand-over relays.
		w.submit(sessionJob{kind: jobSync, id: id, want: want, add: maps.Clone(want), drain: true, check: held, holderAnswers: answers, fresh: true, forward: forwardTo(h)})
	case cl == nil || len(add) > 0 || len(del) > 0:
		// At once for filters not synced yet; again only after syncRetry for ones a sync sent
		// that the log does not show yet.
		if synced.IsZero() || !maps.Equal(syncedSubs, want) || time.Since(synced) >= syncRetry {
			w.submit(sessionJob{kind: jobSync, id: id, want: want, add: add, del: del, drain: drain, check: held, holderAnswers: answers, forward: forwardTo(h)})
		}
	case drain && !draining && time.Since(drained) >= a.sessOpts.DrainInterval:
		w.submit(sessionJob{kind: jobDrain, id: id, drain: true, check: held, holderAnswers: answers, forward: forwardTo(h)})
	}
	return cl != nil
}

// registryFresh bounds the age of a holder's registry that drains act on: it is republished every
// sessionsRepublish, so three missed publications (or a refused one) stop the drains.
const registryFresh = 3 * sessionsRepublish

// stillHeld reports, when asked (from the worker, at any time), whether h is still what the
// cluster says of id: the newest entry of every peer's current registry is h's (same holder,
// same connect stamp), its client is not connected here, and, with conn, the holder is
// reachable (link and agent up, status and registry fresh) and says its client is connected
// there. A drain or removal decided on h acts only while this holds: a client that went
// offline (its replicas must keep what they queued for it) or moved stops it.
func (a *Agent) stillHeld(id string, h heldBy, conn bool) func() bool {
	hp, since, node, reg := h.p, h.e.Since, h.node, a.sess
	return func() bool {
		if reg.liveHere(id) {
			return false
		}
		if conn && (!hp.Up() || hp.interest.agentDown.Load() ||
			time.Since(time.Unix(0, hp.statusSeen.Load())) >= 3*statusInterval ||
			time.Since(time.Unix(0, hp.sessionsSeen.Load())) >= registryFresh) {
			return false
		}
		cur := hp.sessions.Load()
		if cur == nil {
			return false
		}
		if e, ok := (*cur)[id]; !ok || e.Since != since || conn && !e.Conn {
			return false
		}
		for _, p := range a.peerList() {
			if r := p.sessions.Load(); p != hp && r != nil {
				if e, ok := (*r)[id]; ok && (heldBy{e, p.name, p}).newer(since, node) {
					return false
				}
			}
		}
		return true
	}
}

// subsOf is c's subscriptions, none for a nil client.
func (c *client) subsOf() map[string]byte {
	if c == nil {
		return nil
	}
	return c.Subs
}

// inReplicaSet reports whether this node keeps a replica of id's session held on holder.
func (a *Agent) inReplicaSet(id, holder string) bool {
	o := a.sessOpts
	if o.Replicas < 0 || !o.replicated(id) {
		return false
	}
	nodes := []string{a.opts.Node}
	for _, p := range a.peerList() {
		if p.name != holder {
			nodes = append(nodes, p.name)
		}
	}
	if o.Replicas == 0 || o.Replicas >= len(nodes) {
		return true
	}
	return slices.Contains(rendezvous(id, nodes)[:o.Replicas], a.opts.Node)
}

// sessionsMessage takes in a peer's registry, on the peer link's reader.
func (p *peer) sessionsMessage(m *message) {
	m.Ack()
	if len(m.Payload) == 0 {
		return // a deleted registry: the last one stands (the node may be gone with its sessions)
	}
	payload, err := p.env.signer.openJSON(m.Topic, m.Payload)
	if err == nil {
		var reg map[string]sessionEntry
		reg, err = decodeRegistry(payload, p.name, p.env.limits.Load().MaxInterestBytes, p.env.sessions.clock)
		if err == nil {
			p.sessions.Store(&reg)
			p.sessionsSeen.Store(time.Now().UnixNano())
			p.env.sessionsChanged()
			return
		}
	}
	p.registryRefused.Add(1)
	p.sessionsSeen.Store(0) // what the peer holds now is unknown: no drain acts on the last one
	p.log.Warn("session registry refused: the last accepted one stands for takeovers and replicas, not for drains", "topic", m.Topic, "bytes", len(m.Payload), "err", err)
}

// sessionsStatus is the Status part of sessions.
func (a *Agent) sessionsStatus() *SessionsStatus {
	if !a.sessionsOn() {
		return nil
	}
	w := a.sessWork
	s := &SessionsStatus{Replicas: int(a.sessReplicas.Load()), Takeovers: w.takeovers.Load(), Drains: w.drains.Load(),
		DrainedMessages: w.drained.Load(), ReplicaSyncs: w.syncs.Load(), Removed: w.removed.Load(),
		Refused: w.refused.Load(), Failed: w.failed.Load(), Stale: w.stale.Load(), ClosedLive: w.closedLive.Load(), Pending: w.pendingCount(),
		Forwarded: w.forwarded.Load(), ForwardSkipped: w.forwardSkipped.Load(),
		Held: int(a.sessHeld.Load()), Connected: int(a.sessConnected.Load()), RegistryBytes: a.sessBytes.Load()}
	for _, p := range a.peerList() {
		s.RegistryRefused += p.registryRefused.Load()
	}
	return s
}
