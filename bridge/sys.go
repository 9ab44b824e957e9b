// sys.go owns what the agent learns from its broker's $SYS tree: log lines applied to the local
// interest (and journaled), broker restarts, and the count of clients that decides when the
// agent knows its interest exactly instead of wanting everything.

package bridge

import (
	"context"
	"strconv"
	"strings"
	"time"

	"mosquitto-ha/sysparse"
)

// logPrefix starts every log line topic.
var logPrefix = strings.TrimSuffix(sysparse.TopicLog, "#")

func (a *Agent) handleSys(ctx context.Context, topic string, payload []byte) {
	switch {
	case topic == topicClientsTotal:
		if n, err := strconv.Atoi(strings.TrimSpace(string(payload))); err == nil {
			a.clientsTotal(n)
		}
		return
	case topic == topicClientsConnected:
		if n, err := strconv.Atoi(strings.TrimSpace(string(payload))); err == nil {
			a.acct.connected = n
			a.countsRead.Store(a.acct.countsKnown())
		}
		return
	case topic == topicUptime:
		// "<n> seconds": a broker that started again lost every clean session.
		secs, err := strconv.Atoi(strings.TrimSuffix(string(payload), " seconds"))
		if err != nil {
			return
		}
		start := time.Now().Add(-time.Duration(secs) * time.Second)
		restarted := !a.brokerStart.IsZero() && start.Sub(a.brokerStart) > 5*time.Second
		if restarted {
			a.log.Info("local broker restarted: dropping clean sessions")
			a.model.brokerRestarted()
			if a.sessionsOn() {
				a.sess.brokerRestarted()
			}
			a.record(journalEntry{Op: "restart"})
		}
		if a.sessionLost.Swap(false) && !restarted && !a.brokerStart.IsZero() {
			// The agent's persistent session is gone although its broker kept running: a
			// client connected with the agent's id and a clean session [MQTT-3.1.2-6], which
			// discarded whatever was queued for the agent (see topics.go on client ids).
			a.log.Warn("the agent's session on its broker was discarded while the broker kept running: another client used the agent's client id; messages queued for the agent were lost", "client", a.localID)
		}
		a.brokerStart = start
		a.sysTick(ctx)
		return
	case !strings.HasPrefix(topic, logPrefix):
		return
	}
	ev, err := a.parser.Parse(topic, payload)
	if err != nil {
		if topic == sysparse.TopicSubscribe {
			a.model.MalformedSubscribe()
			a.record(journalEntry{Op: "malformed"})
			a.log.Warn("unparsable subscribe line: relaying everything here from now on", "line", string(payload), "err", err)
		} else {
			a.log.Warn("unparsable log line", "topic", topic, "line", string(payload), "err", err)
		}
		return
	}
	if ev.Kind == sysparse.Ignored {
		return
	}
	if ev.Kind == sysparse.TakenOver && strings.HasPrefix(ev.ClientID, a.topics.ClientPrefix()) {
		// [MQTT-3.1.4-2] a second connection with the id closed the first: an agent whose old
		// connection the broker still held, or a client that knows the id (see topics.go).
		// The agent reconnects and takes it back; peers relay everything meanwhile.
		// At most one line a minute per id, with the count since: a fight over an id (both
		// sides reconnecting) must not flood the log.
		if last, ok := a.takeovers[ev.ClientID]; !ok || time.Since(last.at) >= time.Minute {
			a.log.Warn("a connection took over a cluster client id: if no agent reconnected just now, someone else uses it", "client", ev.ClientID, "not_logged_since", last.n)
			if a.takeovers == nil || len(a.takeovers) > 1000 {
				a.takeovers = map[string]takeoverLog{}
			}
			a.takeovers[ev.ClientID] = takeoverLog{at: time.Now()}
		} else {
			last.n++
			a.takeovers[ev.ClientID] = last
		}
	}
	a.log.Debug("log event", "kind", ev.Kind, "client", ev.ClientID, "filter", ev.Filter, "readings", len(ev.Readings))
	if len(ev.Readings) > 1 {
		a.log.Warn("ambiguous log line: taking every reading", "line", string(payload), "readings", len(ev.Readings))
	}
	if ev.Truncated {
		a.log.Warn("truncated log line: widening", "line_bytes", len(payload), "widened", ev.Widened)
	}
	own, fresh := false, false
	if a.sessionsOn() {
		// Mosquitto logs a takeover right before the connect line of the newer connection.
		if ev.Kind == sysparse.Connected {
			own, fresh = a.sess.ownAddr(connectAddress(string(payload)), a.sess.takenOver == ev.ClientID)
		}
		a.sess.takenOver = ""
		if ev.Kind == sysparse.TakenOver {
			a.sess.takenOver = ev.ClientID
		}
	}
	a.model.Apply(ev)
	a.model.markOwn(ev, own)
	a.record(journalEntry{Event: &ev, Own: own})
	if a.sessionsOn() {
		if fresh && len(ev.Readings) <= 1 && !ev.Truncated {
			// The agent's previous connection with this id ended its session (clean): the
			// one this connect starts has only the subscriptions the log shows next.
			a.model.freshSession(ev.ClientID)
		}
		a.sess.event(ev, own)
	}
}

// takeoverLog is when a takeover of a cluster id was last logged, and how many since were not.
type takeoverLog struct {
	at time.Time
	n  int
}

// noteSession runs when the local connection comes up: a connection after the first that finds
// no session means the broker discarded it (a restart without saving it, or a takeover).
func (a *Agent) noteSession(present bool) {
	if a.localOnce.Swap(true) && !present {
		a.sessionLost.Store(true)
	}
}

// record queues a journal entry for the event just applied to the model.
func (a *Agent) record(e journalEntry) {
	if a.journal != nil {
		a.journal.add(e)
	}
}

// setWantAll makes the agent advertise interest in everything, for reason.
func (a *Agent) setWantAll(reason string) {
	a.model.setUncertain(true)
	a.ann.wantEverything(reason)
}

// linkIDs are the long-lived connections of the cluster to this broker, which the broker counts
// in $SYS/broker/clients/total even when their connect lines came before the agent's.
func (a *Agent) linkIDs() []string {
	ids := []string{a.localID}
	for _, p := range a.peerList() {
		ids = append(ids, a.topics.LinkID(p.name, a.opts.Node))
	}
	return ids
}

// ownIDs are the ids of every cluster connection to this broker: links, peers' retained pulls,
// and this agent's own retained readers.
func (a *Agent) ownIDs() []string {
	ids := a.linkIDs()
	for _, p := range a.peerList() {
		ids = append(ids, a.topics.PullID(p.name, a.opts.Node), a.topics.ReaderID(a.opts.Node, p.name))
	}
	return ids
}
