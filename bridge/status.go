// status.go owns the agent's state as others see it: Status for tests, metrics and the CLI, the
// signed status messages (live, last live, will, stop) and the local credentials check.

package bridge

import (
	"encoding/json"
	"errors"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// PeerStatus is the state of one peer link.
type PeerStatus struct {
	Name string `json:"name"`
	Up   bool   `json:"up"`
	// Since is when the link last went up or down.
	Since time.Time `json:"since"`
	// InterestKnown is false while the peer's interest is unknown or "everything".
	InterestKnown bool `json:"interest_known"`
	Filters       int  `json:"filters"`
	Buffered      int  `json:"buffered"`
	// BufferedBytes is the payload bytes of the relays waiting, against BufferLimitBytes (past it
	// the queue drops what nobody waits for, see queue.go).
	BufferedBytes    int    `json:"buffered_bytes"`
	BufferLimitBytes int    `json:"buffer_limit_bytes"`
	Dropped          uint64 `json:"dropped"`
	Relayed          uint64 `json:"relayed"`
	// Batches counts forward publishes in the batch envelope (several relays, or a retained QoS 0 one).
	Batches      uint64 `json:"batches"`
	RelayedBytes uint64 `json:"relayed_bytes"`
	Refused      uint64 `json:"refused"`
	Forged       uint64 `json:"forged"`
	Retries      uint64 `json:"retries"`
	// Expired counts relays to this peer whose MQTT 5 Message Expiry Interval ran out while
	// they waited: not sent.
	Expired uint64 `json:"expired_relays,omitempty"`
	// InterestUpdated is when the peer's last interest message was applied.
	InterestUpdated time.Time `json:"interest_updated"`
	// LastError is the link's last failure (connect refused, unreachable, connection lost), kept
	// after it recovers; Up tells whether it is up now.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
}

// Status is a snapshot of an agent's state, for tests, logs and metrics.
type Status struct {
	Node string `json:"node"`
	// AgentUp is false in the will the broker publishes when the agent vanishes.
	AgentUp bool `json:"agent_up"`
	// LocalUp is true while the agent's connection to its own broker is up.
	LocalUp bool `json:"local_up"`
	// LocalAuthRefused is true while the local broker refuses the agent's credentials (a
	// permanent failure until its password_file or the agent's changes; the agent retries).
	LocalAuthRefused bool `json:"local_auth_refused,omitempty"`
	// Time is when this status was taken; in a will it is zero (the broker publishes the will
	// when the agent vanished), in the message of an agent that stopped cleanly it is the stop.
	Time time.Time `json:"time,omitzero"`
	// Version is the agent's build; Started when this run of the agent began.
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started,omitzero"`
	// RelayWire is the relay batch version the agent reads (doc.go); an agent without it reads
	// version 1 only, and its peers send it that.
	RelayWire int `json:"relay_wire,omitempty"`
	// InterestWire is the interest message version the agent reads (interestwire.go): 3 reads
	// stamped deltas, which its peers send only then.
	InterestWire int `json:"interest_wire,omitempty"`
	// LastError is the newest failure of the agent's connections, named "local broker <addr>: "
	// or "peer <name>: ", kept after the connection recovers.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	// LocalFilters is the number of distinct filters of the local clients.
	LocalFilters int `json:"local_filters"`
	// LocalClients is the number of the broker's clients the agent accounted for by identity
	// at the last $SYS tick it compared (see accounting.go).
	LocalClients int `json:"local_clients"`
	// WantAll is true while the agent advertises interest in everything, for WantAllReason.
	WantAll       bool   `json:"want_all"`
	WantAllReason string `json:"want_all_reason,omitempty"`
	// Lines that widened the interest.
	Ambiguous uint64 `json:"ambiguous_lines"`
	Truncated uint64 `json:"truncated_lines"`
	Malformed uint64 `json:"malformed_lines"`
	// Republished counts relays from peers published on the local broker.
	Republished uint64 `json:"republished"`
	// Repeats counts relays from peers recognised as sent before (dedupe.go): dropped, released
	// or sent again with their packet id instead of republished anew.
	Repeats uint64 `json:"repeated_relays"`
	// Expired counts relays from peers whose MQTT 5 Message Expiry Interval ran out on the way:
	// not republished.
	Expired uint64 `json:"expired_relays,omitempty"`
	// CaughtUp counts relays sent to a peer after the fact: local publishes read after a peer's
	// client subscribed, before the news of it arrived (catchup.go).
	CaughtUp uint64 `json:"caught_up_relays,omitempty"`
	// Forged counts relays dropped for a missing or wrong signature; Oversized those over the
	// payload limit.
	Forged    uint64 `json:"forged_relays"`
	Oversized uint64 `json:"oversized_relays"`
	// ForgedInterest counts foreign publishes on this node's own interest topics.
	ForgedInterest uint64 `json:"forged_interest"`
	// ControlBytes counts the interest snapshot and delta bytes this agent published.
	ControlBytes uint64 `json:"control_bytes"`
	// InboxDropped counts local QoS 0 publishes dropped because the agent fell behind.
	InboxDropped uint64 `json:"inbox_dropped"`
	// SharedExtra counts deliveries to shared subscriptions beyond one per message: a local
	// publish that reached several brokers with members of the same subscription (see share.go).
	SharedExtra uint64 `json:"shared_extra_deliveries"`
	// SharedSplit lists the local shared subscriptions whose members sit on peers too.
	SharedSplit []SharedSplit `json:"shared_split,omitempty"`
	// Sessions is the state of sessions that follow their client, when on (sessions.go).
	Sessions *SessionsStatus `json:"sessions,omitempty"`
	// Retained is the state of retained convergence (retained.go).
	Retained RetainedStatus `json:"retained"`
	Peers    []PeerStatus   `json:"peers"`
}

// Status returns the agent's current state. Safe for concurrent use.
func (a *Agent) Status() Status {
	a.statsMu.Lock()
	s := a.status
	a.statsMu.Unlock()
	s.Node = a.opts.Node
	s.AgentUp = true
	s.RelayWire = relayWireVersion
	s.InterestWire = interestWireVersion
	s.LocalUp = a.localConn() != nil
	s.Time = time.Now().UTC()
	s.Republished = a.in.republished.Load()
	s.Repeats = a.in.repeats.Load()
	s.Expired = a.in.expired.Load()
	s.CaughtUp = a.catchUp.caughtUp.Load()
	s.InboxDropped = a.inbox.dropped.Load()
	s.Forged = a.in.forged.Load()
	s.ControlBytes = a.ann.controlBytes.Load()
	s.Oversized = a.in.oversized.Load()
	s.ForgedInterest = a.ann.forgedInterest.Load()
	if e := a.local.LastError(); e != nil {
		s.LastError, s.LastErrorTime = "local broker "+a.opts.Local+": "+e.Err.Error(), e.At.UTC()
	}
	s.Retained = a.ret.status()
	s.Sessions = a.sessionsStatus()
	peers := a.peerList()
	s.SharedExtra = a.shares.extra.Load()
	s.SharedSplit = splitShares(a.model.shares, peers)
	s.Peers = make([]PeerStatus, len(peers))
	for i, p := range peers {
		up := p.Up()
		bufBytes, bufLimit := p.queue.Bytes()
		since := p.downSince.Load()
		if up {
			since = p.upSince.Load()
		}
		s.Peers[i] = PeerStatus{
			Name: p.name, Up: up, Since: time.Unix(0, since),
			InterestKnown: p.interest.Known(), Filters: p.interest.Len(),
			Buffered: p.queue.Len(), Dropped: p.queue.dropped.Load(),
			BufferedBytes: bufBytes, BufferLimitBytes: bufLimit,
			Relayed: p.relayed.Load(), Batches: p.batches.Load(), RelayedBytes: p.relayedBytes.Load(),
			Refused: p.refused.Load(), Forged: p.forged.Load(), Retries: p.retries.Load(), Expired: p.expired.Load(),
			InterestUpdated: time.Unix(0, p.interest.updated.Load()),
		}
		if e := p.link.LastError(); e != nil {
			s.Peers[i].LastError, s.Peers[i].LastErrorTime = e.Err.Error(), e.At.UTC()
			if e.At.After(s.LastErrorTime) {
				s.LastError, s.LastErrorTime = "peer "+p.name+": "+e.Err.Error(), e.At.UTC()
			}
		}
	}
	return s
}

// authRefused reports whether a connection failed because the broker refused the agent's
// credentials (mqttconn.ErrCredentials: in MQTT 3.1.1 or 5).
func authRefused(e *mqttconn.LinkError) bool {
	return e != nil && errors.Is(e.Err, mqttconn.ErrCredentials)
}

// checkLocalAuth runs on the dispatcher: it tells a local broker that refuses the agent's
// credentials (permanent until someone changes them, e.g. a reloaded password_file) from one
// that is down or restarting (transient), logs the change once each way at Error and Info, and
// keeps retrying: the refusal ends by itself when the broker's accounts are put back, and the
// agent's persistent session keeps what peers relay meanwhile.
func (a *Agent) checkLocalAuth() bool {
	refused := a.localConn() == nil && authRefused(a.local.LastError())
	if refused != a.authRefused {
		a.authRefused = refused
		if refused {
			a.log.Error("local broker refuses the agent's credentials: retrying, but only a change of the broker's password_file or of agent.password_file (then restart the agent) can end this",
				"addr", a.opts.Local, "err", a.local.LastError().Err, "user", a.opts.Username)
		} else {
			a.log.Info("local broker no longer refuses the agent's credentials", "addr", a.opts.Local)
		}
	}
	return refused
}

// updateStatus copies the dispatcher-owned state for Status.
func (a *Agent) updateStatus() {
	a.statsMu.Lock()
	defer a.statsMu.Unlock()
	a.status.LocalFilters = a.model.filterCount()
	a.status.LocalClients = a.acct.known
	a.status.WantAll = a.ann.wantAll
	a.status.WantAllReason = a.ann.wantAllReason
	a.status.Ambiguous = a.model.Ambiguous
	a.status.Truncated = a.model.Truncated
	a.status.Malformed = a.model.Malformed
	a.status.LocalAuthRefused = a.checkLocalAuth()
}

// statusInterval is how often the agent refreshes its retained status message.
const statusInterval = 2 * time.Second

// publishStatus publishes the status on the local broker, and its copy as the last live status
// there and on every peer's broker it is connected to (see Topics.LastStatus).
func (a *Agent) publishStatus() {
	a.lastStatus = time.Now()
	b, err := json.Marshal(a.Status())
	if err != nil {
		return
	}
	// Signed like relays when the cluster has a secret (auth.go); peers trust no other.
	status, last := a.topics.Status(a.opts.Node), a.topics.LastStatus(a.opts.Node)
	if c := a.localConn(); c != nil {
		c.Publish(status, 0, true, a.signer.sealJSON(status, b), nil)
		c.Publish(last, 0, true, a.signer.sealJSON(last, b), nil)
	}
	for _, p := range a.peerList() {
		if c := p.link.Conn(); c != nil {
			c.Publish(last, 0, true, a.signer.sealJSON(last, b), nil)
		}
	}
}

// willPayload is the status the broker publishes for an agent that vanished: down, with the
// run's version and start and no time (the last live status tells when it was last seen).
func (a *Agent) willPayload() []byte {
	b, _ := json.Marshal(Status{Node: a.opts.Node, Version: a.opts.Version, Started: a.status.Started,
		RelayWire: relayWireVersion, InterestWire: interestWireVersion})
	return a.signer.sealJSON(a.topics.Status(a.opts.Node), b)
}

// stopPayload is the status the agent publishes when it stops on purpose: down since now, with
// its last error.
func (a *Agent) stopPayload() []byte {
	s := a.Status()
	b, _ := json.Marshal(Status{Node: a.opts.Node, Version: a.opts.Version, Started: s.Started,
		RelayWire: relayWireVersion, InterestWire: interestWireVersion, Time: s.Time, LastError: s.LastError, LastErrorTime: s.LastErrorTime})
	return a.signer.sealJSON(a.topics.Status(a.opts.Node), b)
}

// PeerWants reports whether a local publish on topic would be relayed to the named peer now.
// Safe for concurrent use.
func (a *Agent) PeerWants(peer, topic string) bool {
	for _, p := range a.peerList() {
		if p.name == peer {
			return p.interest.Wants(topic)
		}
	}
	return false
}
