// peerlink.go owns the connection to one peer broker and what arrives on it: the peer's interest
// (snapshots and deltas, decoded by interestwire.go), the sync marker that says the retained
// interest has arrived, and the peer agent's status. Each time the link comes up it starts the
// retained pull (retained.go).

package bridge

import (
	"context"
	"encoding/json"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// newLink builds the connection to the peer broker: a clean session that follows the peer's
// interest topics and carries relays.
func (p *peer) newLink() *mqttconn.Link {
	env := p.env
	marker := env.topics.Synced(env.node, p.name)
	l := &mqttconn.Link{
		Addr:    p.addr,
		Options: env.conn.options(env.topics.LinkID(env.node, p.name), 4, true, p.tls),
		Log:     p.log,
		// Relays buffered for a peer broker that restarts flow again within a second of its
		// return, into the replicas its agent then drains.
		MaxBackoff: time.Second,
	}
	status := env.topics.Status(p.name)
	sessions := env.topics.Sessions(p.name)
	var statusTime time.Time // of the newest status accepted; the reader is one goroutine
	var gapLog gapLogger     // the same reader's
	l.OnPublish = func(m *message) {
		switch m.Topic {
		case marker:
			// Every retained interest message of the subscription came before the marker.
			m.Ack()
			p.interest.setSynced(true)
			p.agentSeen.CompareAndSwap(0, 1) // no status: the peer's agent has not run yet
		case status:
			p.statusMessage(m, &statusTime)
		case sessions:
			if env.sessions != nil {
				p.sessionsMessage(m)
			} else {
				m.Ack()
			}
		default:
			p.interestMessage(m, &gapLog)
		}
	}
	l.Up = func(ctx context.Context, c *mqttconn.Conn, _ bool) error {
		// Until the marker returns, the retained snapshot may be behind: send everything.
		p.interest.setSynced(false)
		subs := map[string]byte{env.topics.InterestFilter(p.name): 1, marker: 1, status: 0}
		if env.sessions != nil {
			subs[sessions] = 1
		}
		if err := c.Subscribe(ctx, subs); err != nil {
			p.log.Warn("peer subscribe failed", "err", err)
			return err
		}
		c.Publish(marker, 1, false, nil, nil)
		p.setUp()
		p.log.Info("peer connected", "addr", p.addr)
		p.agentSeen.Store(0)
		p.requestPush()
		return nil
	}
	l.Down = func(err error) {
		p.setDown()
		p.log.Warn("peer lost", "addr", p.addr, "err", err, "buffered", p.queue.Len())
	}
	return l
}

// trustedStatusWindow: a live agent signs a status every statusInterval; one that sent none for
// this long may be an older release (see statusMessage).
const trustedStatusWindow = 5 * statusInterval

// statusMessage applies the peer agent's status: only "agent_up" matters (doc.go). With a
// cluster secret a status must carry its tag (auth.go), or it is dropped and counted as forged;
// a status saying the agent is up must also be newer than every one accepted before, so a
// replayed old one cannot end the relay-everything fallback while the agent is down. A status
// saying it is down (the will) is always taken: it only makes this agent send more.
func (p *peer) statusMessage(m *message, newest *time.Time) {
	var st struct {
		AgentUp   bool      `json:"agent_up"`
		Time      time.Time `json:"time"`
		RelayWire int       `json:"relay_wire"`
		// InterestWire: the interest message version it reads; absent before version 3.
		InterestWire int `json:"interest_wire"`
	}
	payload, err := p.env.signer.openJSON(m.Topic, m.Payload)
	if err != nil {
		p.forged.Add(1)
		p.log.Warn("forged status message dropped", "topic", m.Topic, "err", err)
		// An agent of the release before status signing sends unsigned statuses without a relay
		// wire version: relays to it go in version 1, which it reads, so a rolling upgrade (or a
		// rollback) loses nothing. An unsigned status can only lower the version (no dedupe),
		// never raise it, and not while the peer's own signed statuses keep coming: a client
		// that forges one cannot strip the identity off relays to a live, upgraded agent.
		recent := time.Since(time.Unix(0, p.signedAt.Load())) < trustedStatusWindow
		if !recent && json.Unmarshal(m.Payload, &st) == nil {
			if max(st.RelayWire, 1) < p.wireVersion() {
				p.wire.Store(int32(max(st.RelayWire, 1)))
			}
			if int32(st.InterestWire) < p.interestWire.Load() {
				p.interestWire.Store(int32(st.InterestWire))
			}
		}
		return
	}
	if p.env.signer != nil {
		p.signedAt.Store(time.Now().UnixNano())
	}
	if json.Unmarshal(payload, &st) != nil {
		return
	}
	// The relay wire version first: an agent of an earlier release sends no time, so its statuses
	// all look like replays below, yet its wire version must be known.
	p.wire.Store(int32(max(st.RelayWire, 1)))
	p.interestWire.Store(int32(st.InterestWire))
	if st.AgentUp && !st.Time.After(*newest) {
		return // a replay, or the retained copy of one already taken
	}
	if st.Time.After(*newest) {
		*newest = st.Time
	}
	if st.AgentUp {
		p.statusSeen.Store(time.Now().UnixNano())
	}
	p.agentStatus(st.AgentUp)
	if !st.AgentUp {
		p.sessionsSeen.Store(0) // its registry is the stopped run's: no drain acts on it (sessionplan.go)
	}
	if p.interest.agentDown.Swap(!st.AgentUp) != !st.AgentUp && !st.AgentUp {
		p.log.Warn("peer's agent is down: relaying everything to its broker, where its session queues it")
	}
}

// gapLogger says "interest gap" once per episode of unknown interest, not once per delta: a
// peer that keeps changing while its interest is unknown sends a delta per batch (issue 10,
// finding 11). The next Info comes when the interest was known again in between, or a minute
// later with the number of deltas not logged.
type gapLogger struct {
	at         time.Time
	suppressed int
}

func (g *gapLogger) log(p *peer, msg interestMsg, filters, limit int) {
	if !g.at.IsZero() && time.Since(g.at) < time.Minute {
		g.suppressed++
		return
	}
	p.log.Info("interest gap or over the filter limit: relaying everything to this peer until its next usable snapshot",
		"epoch", msg.Epoch, "seq", msg.Seq, "filters", filters, "limit", limit, "not_logged_since", g.suppressed)
	g.at, g.suppressed = time.Now(), 0
}

// interestMessage applies an interest message from the peer's broker.
func (p *peer) interestMessage(m *message, gap *gapLogger) {
	m.Ack()
	lim := *p.env.limits.Load()
	if n := len(m.Payload); n > lim.MaxInterestBytes {
		p.refused.Add(1)
		p.log.Warn("interest message over the size limit refused", "bytes", n, "limit", lim.MaxInterestBytes)
		p.interest.markUnknown()
		return
	}
	payload, err := p.env.signer.open(m.Topic, m.Payload)
	if err != nil {
		p.forged.Add(1)
		p.log.Warn("forged interest message dropped", "topic", m.Topic, "err", err)
		return // a forgery does not make the real interest unknown
	}
	if interestWantsAll(payload) {
		p.pingPresence(m.Conn()) // it may be waiting to account for this link
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
	if wantSnapshot := m.Topic == p.env.topics.Interest(p.name); msg.Snapshot != wantSnapshot {
		p.refused.Add(1)
		p.interest.markUnknown()
		p.log.Warn("interest message on the wrong topic refused: relaying everything to this peer", "topic", m.Topic)
		return
	}
	if !p.env.catchUp.apply(p, msg, lim.MaxFilters) {
		gap.log(p, msg, p.interest.Len(), lim.MaxFilters)
	} else if p.interest.Known() {
		gap.at = time.Time{} // the next gap is a new episode
	}
}
