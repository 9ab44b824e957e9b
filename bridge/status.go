package bridge

import (
	"encoding/json"
	"time"
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
	// InterestUpdated is when the peer's last interest message was applied.
	InterestUpdated time.Time `json:"interest_updated"`
}

// Status is a snapshot of an agent's state, for tests, logs and metrics.
type Status struct {
	Node string `json:"node"`
	// AgentUp is false in the will the broker publishes when the agent vanishes.
	AgentUp bool `json:"agent_up"`
	// LocalUp is true while the agent's connection to its own broker is up.
	LocalUp bool      `json:"local_up"`
	Time    time.Time `json:"time"`
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
	Peers       []PeerStatus  `json:"peers"`
}

// Status returns the agent's current state. Safe for concurrent use.
func (a *Agent) Status() Status {
	a.statsMu.Lock()
	s := a.status
	a.statsMu.Unlock()
	s.Node = a.opts.Node
	s.AgentUp = true
	s.LocalUp = a.localConn() != nil
	s.Time = time.Now().UTC()
	s.Republished = a.in.republished.Load()
	s.InboxDropped = a.inbox.dropped.Load()
	s.Forged = a.in.forged.Load()
	s.ControlBytes = a.ann.controlBytes.Load()
	s.Oversized = a.in.oversized.Load()
	s.ForgedInterest = a.ann.forgedInterest.Load()
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
			Refused: p.refused.Load(), Forged: p.forged.Load(), Retries: p.retries.Load(),
			InterestUpdated: time.Unix(0, p.interest.updated.Load()),
		}
	}
	return s
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
}

// statusInterval is how often the agent refreshes its retained status message.
const statusInterval = 2 * time.Second

func (a *Agent) publishStatus() {
	c := a.localConn()
	if c == nil {
		return
	}
	b, err := json.Marshal(a.Status())
	if err != nil {
		return
	}
	c.Publish(a.topics.Status(a.opts.Node), 0, true, b, nil)
	a.lastStatus = time.Now()
}

// willPayload is the status the broker publishes for an agent that vanished.
func (a *Agent) willPayload() []byte {
	b, _ := json.Marshal(Status{Node: a.opts.Node})
	return b
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
