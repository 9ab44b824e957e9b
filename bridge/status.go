package bridge

import "time"

// PeerStatus is the state of one peer link.
type PeerStatus struct {
	Name string
	Up   bool
	// Since is when the link last went up or down.
	Since time.Time
	// InterestKnown is false while the peer's interest is unknown or "everything".
	InterestKnown bool
	Filters       int
	Buffered      int
	Dropped       uint64
	Relayed       uint64
	RelayedBytes  uint64
	Refused       uint64
	Retries       uint64
}

// Status is a snapshot of an agent's state, for tests, logs and metrics.
type Status struct {
	Node string
	// LocalFilters is the number of distinct filters of the local clients.
	LocalFilters int
	LocalClients int
	// WantAll is true while the agent advertises interest in everything, for WantAllReason.
	WantAll       bool
	WantAllReason string
	// Lines that widened the interest.
	Ambiguous, Truncated, Malformed uint64
	// Republished counts relays from peers published on the local broker.
	Republished uint64
	// InboxDropped counts local QoS 0 publishes dropped because the agent fell behind.
	InboxDropped uint64
	Peers        []PeerStatus
}

// Status returns the agent's current state. Safe for concurrent use.
func (a *Agent) Status() Status {
	a.statsMu.Lock()
	s := a.status
	a.statsMu.Unlock()
	s.Node = a.opts.Node
	s.Republished = a.republished.Load()
	s.InboxDropped = a.inbox.dropped.Load()
	s.Peers = make([]PeerStatus, len(a.peers))
	for i, p := range a.peers {
		up := p.Up()
		since := p.downSince.Load()
		if up {
			since = p.upSince.Load()
		}
		s.Peers[i] = PeerStatus{
			Name: p.name, Up: up, Since: time.Unix(0, since),
			InterestKnown: p.interest.Known(), Filters: p.interest.Len(),
			Buffered: p.queue.Len(), Dropped: p.queue.dropped.Load(),
			Relayed: p.relayed.Load(), RelayedBytes: p.relayedBytes.Load(),
			Refused: p.refused.Load(), Retries: p.retries.Load(),
		}
	}
	return s
}

// updateStatus copies the dispatcher-owned state for Status.
func (a *Agent) updateStatus() {
	a.statsMu.Lock()
	defer a.statsMu.Unlock()
	a.status.LocalFilters = a.model.tree.Len()
	a.status.LocalClients = a.model.KnownClients()
	a.status.WantAll = a.wantAll
	a.status.WantAllReason = a.wantAllReason
	a.status.Ambiguous = a.model.Ambiguous
	a.status.Truncated = a.model.Truncated
	a.status.Malformed = a.model.Malformed
}
