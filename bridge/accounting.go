// accounting.go owns contract 7's proof: when the agent may stop wanting everything, by naming
// every client its broker counts, and which clients it may forget once the count proves them gone.

package bridge

import (
	"mosquitto-ha/bridge/mqttconn"
	"mosquitto-ha/sysparse"

	"context"
	"fmt"
	"time"
)

// This file decides when the agent may stop wanting everything (contract 7): only when every
// client its broker holds is one the model names and whose subscriptions it knows.
//
// The broker's only account of its clients is $SYS/broker/clients/total, the number of client
// ids it holds (connected, and persistent sessions of disconnected clients), published at each
// $SYS tick (every sys_interval) when it changed, retained. A count proves nothing by itself,
// so the agent counts the clients it can prove by identity (localInterest.accounted): each has
// an unambiguous connect line on the current log subscription (ignored clients: any
// unambiguous line) and no line since that may have ended its session, and its subscriptions
// are all in the log. Every such client is in the broker, so when the broker's count equals
// their number, they are all of its clients. Nothing else counts: a client first seen
// subscribing (it connected before the agent), a client restored from the state file, every
// reading of an ambiguous line, a client whose session may have ended. They keep their
// interest but not the count, so a count can only be matched by the real set of clients.
//
// The race with the log. Mosquitto is single-threaded: a client id enters or leaves its table
// in the same step that logs the connect or disconnect line, and the $SYS tick runs between
// steps, publishing $SYS/broker/uptime first and $SYS/broker/clients/total right after (when it
// changed). Log lines and $SYS values are queued to the agent's one connection in that order,
// both at QoS 0. So at the uptime message of tick T, the model has applied exactly the lines
// written before T: the agent counts the clients it accounts for right there (tickKnown, with
// tickLine, the number of lines applied), and compares once the count for T is final, at the
// next uptime message: the clients/total that followed uptime T, or, when none did, the last
// one received (it was unchanged). Restored connections (sessions) are compared sooner, at
// sysSettle. The first uptime after a (re)subscription is the retained
// value, older than the subscription: it starts nothing. A broker that drops log lines for a
// slow agent breaks the order's premise; a count below what the agent accounts for shows it,
// and the agent goes back to wanting everything.
//
// Lines that proved presence before a gap in the log (agent restart, local reconnection) prove
// nothing after it: logGap makes every client unaccounted for until it connects again.

// sysAccount follows the broker's $SYS ticks on the current log subscription.
type sysAccount struct {
	rounds      int // $SYS/broker/uptime messages
	total       int // last $SYS/broker/clients/total, -1 none yet
	tick        bool
	tickKnown   int       // clients accounted for at the last fresh tick
	tickPresent int       // clients proven present then, accounted for or not
	tickLine    uint64    // lines applied then
	tickAt      time.Time // when its uptime message was read
	// connsPending: the last tick's restored connections are not compared yet.
	connsPending bool
	known        int // tickKnown of the last compared tick, for Status
	// connected: the last $SYS/broker/clients/connected, -1 none yet; tickConnected,
	// tickHeld and tickHeldMax: the clients the model said were connected, and the least and
	// most sessions it said the broker held, at the last fresh tick (verifyConnections).
	connected                            int
	tickConnected, tickHeld, tickHeldMax int
	tickConnectedIDs                     []string // while restored connections are unproven
}

func (s *sysAccount) reset() { *s = sysAccount{total: -1, connected: -1, known: s.known} }

// clientsTotal records $SYS/broker/clients/total.
func (a *Agent) clientsTotal(n int) {
	a.acct.total = n
	a.countsRead.Store(a.acct.countsKnown())
}

// sysTick handles $SYS/broker/uptime: it settles the previous tick (its connections, if
// sysSettle did not) and counts this one. Two ticks without the broker's counts, it has them
// published again (countnudge.go).
func (a *Agent) sysTick(ctx context.Context) {
	s := &a.acct
	s.rounds++
	if s.rounds >= 2 && !s.countsKnown() {
		a.nudgeCounts(ctx) // the first tick's retained counts did not come: expired
	}
	if a.sessionsOn() && a.sess.unproven() > 0 {
		a.log.Debug("tick with restored connections unproven", "round", s.rounds, "total", s.total,
			"connected", s.connected, "pending", s.connsPending, "unproven", a.sess.unproven())
	}
	if s.tick && s.total >= 0 {
		a.compareTick(s.total, s.tickKnown, s.tickLine)
		if s.total == s.tickPresent && s.tickPresent > s.tickKnown {
			a.dropAbsent(s.tickLine)
		}
	}
	a.settleConnections()
	if s.rounds >= 2 {
		s.tick, s.tickKnown, s.tickLine = true, a.accountedNow(), a.model.line
		s.connsPending = true
		s.tickAt = time.Unix(0, a.model.readAt)
		s.tickPresent = a.model.presentClients() + a.ownLocalUncounted()
		s.tickConnected, s.tickHeld, s.tickHeldMax = a.model.connectedAndHeld()
		s.tickConnectedIDs = nil
		if a.sessionsOn() && a.sess.unproven() > 0 {
			s.tickConnectedIDs = a.model.connectedIDs() // for the debug line when nothing is proven
		}
		if c := a.model.clients[a.localID]; c == nil || !c.Connected {
			s.tickConnected++ // the agent's own local connection: its connect line is never read
			if c == nil || !c.Persistent && !c.mqtt5 {
				s.tickHeld++
				s.tickHeldMax++
			} else if c.mqtt5 {
				s.tickHeld++
			}
		}
	}
}

// sysSettle is how long after a tick's uptime message was read its counts are taken as final
// for restored connections (settleConnections), once the dispatcher has handled everything read
// so far: Mosquitto publishes them in the same step as the uptime, so they are on the
// connection within microseconds. Without it a tick would be compared only at the next one, a
// sys_interval later (10 s by default): an agent restarted with its clients still connected
// would prove them 10 to 20 s after its start instead of within one interval, and its peers
// would keep every replica of those clients undrained meanwhile. The accounting of contract 7
// (compareTick, dropAbsent) still waits for the next tick: taken early, it ended a fresh
// agent's "want everything" before a subscription made right then was known to its peers
// (TestLateSubscriptionCaughtUp failed 4 runs in 6).
const sysSettle = 250 * time.Millisecond

// settleTickDue proves the last tick's restored connections when its counts are final
// (sysSettle); the dispatcher asks after each batch.
func (a *Agent) settleTickDue() {
	if s := &a.acct; s.connsPending && time.Since(s.tickAt) >= sysSettle && a.inbox.empty() {
		a.settleConnections()
	}
}

// settleConnections compares the broker's connection counts for the last tick with what the
// model said then, once: at sysSettle after it, or at the next tick.
func (a *Agent) settleConnections() {
	s := &a.acct
	if !s.connsPending || s.total < 0 {
		return
	}
	s.connsPending = false
	// Connections the agent never saw (a client that connected before its log subscription,
	// e.g. right after a broker restart) add as many sessions as connections: what is left
	// over must be exactly that, so that none of the connections the model counts is missing.
	if dc := s.connected - s.tickConnected; s.connected >= 0 && dc >= 0 && s.total-s.tickHeldMax <= dc && dc <= s.total-s.tickHeld {
		a.verifyConnections()
	} else if a.sessionsOn() && a.sess.unproven() > 0 {
		a.log.Debug("restored connections not proven at this tick: the broker's counts differ from the model's",
			"connected", s.connected, "model_connected", s.tickConnected, "total", s.total,
			"model_held_min", s.tickHeld, "model_held_max", s.tickHeldMax, "unproven", a.sess.unproven(),
			"model_connected_ids", s.tickConnectedIDs)
	}
}

// verifyConnections runs when, at a tick, the broker counted the connected clients and the
// held sessions the model says it has, plus as many connections as sessions it does not know
// (clients that connected unseen with a new id): the connections the model restored from an
// earlier run of the agent, or kept across a gap in its log, are then still there (a client
// that disconnected unseen would leave the broker one connection short, and its session, kept,
// would not make up for it), and the session registry says so again, so its replicas elsewhere
// are drained again. What this cannot tell apart: in the same gap, a restored client
// disconnected and another client whose offline session the model knew connected
// (docs/semantics.md#sessions).
func (a *Agent) verifyConnections() {
	if !a.sessionsOn() {
		return
	}
	if n := a.sess.verifyRestored(); n > 0 {
		a.log.Info("connections restored from before a gap in the log are still there (the broker's count of connected clients agrees): peers drain their replicas again", "clients", n)
	}
}

// accountedNow counts the clients accounted for, with this agent's own local session, which
// the broker always holds (it is persistent) and whose connect line the agent never reads.
func (a *Agent) accountedNow() int { return a.model.KnownClients() + a.ownLocalUncounted() }

// ownLocalUncounted is 1 when the agent's own local session is not among the clients the model
// proves present (its connect line is never read), else 0.
func (a *Agent) ownLocalUncounted() int {
	if c := a.model.clients[a.localID]; c == nil || !c.present {
		return 1
	}
	return 0
}

// dropAbsent runs when the broker's count of clients at a tick equals the clients proven
// present then, although some of them are not accounted for (a resumed session whose
// subscriptions the log did not show keeps the agent wanting everything): the broker holds
// those present clients and nothing else, so a client the model holds but does not prove
// present, and that no line named since, has no session in the broker any more. Its interest
// goes (issue 11: the persistent sessions a broker lost in a kill -9 without autosave; issue
// 10, finding 9: a client known only under a cut id). When the count is higher (a session the
// broker restored from disk, a client that connected before the log subscription), nothing is
// dropped: contract 7.
func (a *Agent) dropAbsent(tickLine uint64) {
	if ids := a.model.dropAbsent(tickLine); len(ids) > 0 {
		a.forgotten(ids)
		a.log.Info("clients the broker no longer holds dropped from the model", "clients", len(ids), "filters", a.model.filterCount())
	}
}

// forgotten journals clients the accounting proved gone, as expiries, so that a restart does
// not restore them from the state file (they would only be dropped again, but their interest
// would be advertised until then).
func (a *Agent) forgotten(ids []string) {
	for _, id := range ids {
		a.record(journalEntry{Event: &sysparse.Event{Kind: sysparse.Expired, ClientID: id}})
	}
}

// compareTick compares the broker's count of clients at a tick with the clients the agent
// accounted for at that tick.
func (a *Agent) compareTick(total, known int, line uint64) {
	a.acct.known = known
	switch {
	case total == known:
		if ids := a.model.settle(line); len(ids) > 0 {
			a.forgotten(ids)
			a.log.Debug("clients the broker no longer holds dropped from the model", "clients", len(ids))
		}
		if !a.ann.wantAll {
			return
		}
		a.log.Info("every client of the broker is accounted for: advertising exact interest", "clients", total, "filters", a.model.filterCount())
		a.model.setUncertain(false)
		a.ann.exact(a.model.Drain())
	case total < known:
		// Every client accounted for is in the broker unless log lines were lost.
		a.log.Warn("the broker holds fewer clients than the agent accounts for: log lines were lost", "clients", total, "accounted", known)
		a.model.logGap()
		if a.sessionsOn() {
			a.sess.logGap()
		}
		a.acct.reset()
		a.setWantAll("log lines were lost: the broker held fewer clients than the agent accounted for")
	case a.ann.wantAll:
		a.ann.stillUnsure(fmt.Sprintf("%d of the broker's %d clients are not accounted for (connected before the agent, or unsure log lines)", total-known, total), a.linksUnproven())
	}
}

// linksUnproven says whether a peer's link to this broker is not yet proven present (it
// connected before this agent's log subscription): then an interest message makes each peer's
// link send a logged unsubscribe (see pingPresence). At most once a tick.
func (a *Agent) linksUnproven() bool {
	for _, p := range a.peerList() {
		id := a.topics.LinkID(p.name, a.opts.Node)
		if c := a.model.clients[id]; c == nil || !c.present {
			return true
		}
	}
	return false
}

// pingMinInterval bounds the presence pings a link sends.
const pingMinInterval = time.Second

// interestWantsAll reports whether an interest message (snapshot or delta) says its node wants
// everything, without decoding its filters.
func interestWantsAll(p []byte) bool {
	_, p, version, ok := interestHeader(p)
	if !ok {
		return false
	}
	var err error
	if _, p, err = uvarint(p, "epoch"); err != nil {
		return false
	}
	if _, p, err = uvarint(p, "seq"); err != nil {
		return false
	}
	if version == 3 {
		if _, p, err = uvarint(p, "stamp"); err != nil {
			return false
		}
	}
	return len(p) > 0 && p[0]&flagAll != 0
}

// pingPresence runs when this agent's link to peer p receives p's interest saying p wants
// everything (p may be waiting to account for the link, see askPresence): it unsubscribes
// from a filter it never subscribed to, which the peer broker logs on M/unsubscribe with the
// link's client id, proving to p's agent, by identity, that the link is one of its broker's
// clients (see accounting.go). At most one a second, never waited on.
func (p *peer) pingPresence(c *mqttconn.Conn) {
	now := time.Now().UnixNano()
	last := p.pingAt.Load()
	if now-last < int64(pingMinInterval) || !p.pingAt.CompareAndSwap(last, now) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Unsubscribe(ctx, []string{p.env.topics.Control() + p.env.node + "/present"})
	}()
}
