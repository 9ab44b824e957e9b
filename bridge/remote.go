// remote.go owns what one peer's clients want, as its snapshots and deltas tell it: the tree the
// relay path asks, its gaps, and whether it is known.

package bridge

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mosquitto-ha/topictree"
)

// maxPendingDeltas bounds the deltas kept while a peer waits for a snapshot after a gap.
const maxPendingDeltas = 1024

// remoteInterest is what one peer's clients want, as learned from its snapshot and deltas.
// Wants is called on the relay hot path from one goroutine while the peer's connection applies
// updates from another: the tree is swapped atomically and flags are atomic, so readers never
// wait for a writer.
type remoteInterest struct {
	tree    atomic.Pointer[topictree.Tree]
	all     atomic.Bool // the peer asked for everything
	unknown atomic.Bool // no usable snapshot yet, or a gap: relay everything until the next one
	synced  atomic.Bool // every retained message of the current subscription has arrived
	// shares holds its clients' shared subscriptions (share.go), swapped like tree.
	shares atomic.Pointer[topictree.Shared]
	// agentDown: the peer's agent is gone (its will says so): nobody there tells us what its
	// clients want, so they get everything, queued in the agent's persistent session.
	agentDown atomic.Bool
	updated   atomic.Int64 // unix nanoseconds of the last applied message

	mu      sync.Mutex // serialises writers
	epoch   uint64
	seq     uint64
	pending []interestMsg // deltas after a gap, waiting for a snapshot
	// dollar holds the peer's filters that start with '$': '#' never matches those topics, so
	// the agent subscribes to each of them locally. dollarChanged tells the agent to look.
	dollar        map[string]bool
	dollarChanged atomic.Bool
}

// isDollarFilter reports whether a filter names '$' topics the local '#' subscription misses.
func isDollarFilter(f string) bool {
	return len(f) > 0 && f[0] == '$' && !strings.HasPrefix(f, "$SYS")
}

// DollarFilters returns the peer's '$' filters.
func (r *remoteInterest) DollarFilters() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.dollar))
	for f := range r.dollar {
		out = append(out, f)
	}
	return out
}

func newRemoteInterest() *remoteInterest {
	r := &remoteInterest{}
	r.tree.Store(topictree.New())
	r.shares.Store(topictree.NewShared())
	r.unknown.Store(true)
	return r
}

// Wants reports whether the peer must receive a publish on topic.
func (r *remoteInterest) Wants(topic string) bool {
	if r.all.Load() || r.unknown.Load() || !r.synced.Load() || r.agentDown.Load() {
		return true
	}
	return r.tree.Load().Match(topic)
}

// Known reports whether the interest is exact (a snapshot and every delta since).
func (r *remoteInterest) Known() bool {
	return !r.unknown.Load() && !r.all.Load() && r.synced.Load() && !r.agentDown.Load()
}

// setSynced records whether the retained state of the peer's interest topics has fully arrived
// since the link (re)connected.
func (r *remoteInterest) setSynced(v bool) { r.synced.Store(v) }

// Len is the number of distinct filters the peer holds, shared subscriptions included.
func (r *remoteInterest) Len() int { return r.tree.Load().Len() + r.shares.Load().Len() }

// markUnknown makes the peer receive everything until its next usable snapshot.
func (r *remoteInterest) markUnknown() { r.unknown.Store(true) }

// apply takes one decoded message. It returns false when the message exposed a gap or left the
// peer over maxFilters; the peer is then sent everything until a usable snapshot arrives.
func (r *remoteInterest) apply(m interestMsg, maxFilters int) (inSync bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updated.Store(time.Now().UnixNano())
	if !r.applyMsg(m) {
		return false
	}
	if maxFilters > 0 && r.Len() > maxFilters {
		r.unknown.Store(true)
		return false
	}
	return true
}

// redundant reports whether a snapshot of this epoch and sequence would tell nothing new: the
// peer's view is in sync and already past it.
func (r *remoteInterest) redundant(epoch, seq uint64, all bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.redundantLocked(epoch, seq, all)
}

func (r *remoteInterest) redundantLocked(epoch, seq uint64, all bool) bool {
	return epoch == r.epoch && seq <= r.seq && all == r.all.Load() && !r.unknown.Load() && len(r.pending) == 0
}

func (r *remoteInterest) applyMsg(m interestMsg) (inSync bool) {
	if m.Snapshot && r.redundantLocked(m.Epoch, m.Seq, m.All) {
		return true // a peer in sync already holds everything this snapshot says
	}
	if m.Snapshot {
		t := topictree.New()
		dollar := map[string]bool{}
		for _, f := range m.Filters {
			if t.Count(f) == 0 { // set semantics, as in applyDelta
				_, _ = t.Add(f) // invalid filters were refused when decoding or can never match
			}
			if isDollarFilter(f) {
				dollar[f] = true
			}
		}
		sh := topictree.NewShared()
		for _, s := range m.Shares {
			if sh.Count(s) == 0 {
				_, _ = sh.Add(s) // an invalid filter can never match
			}
			if isDollarFilter(s.Filter) {
				dollar[s.Filter] = true
			}
		}
		r.tree.Store(t)
		r.shares.Store(sh)
		if len(dollar) > 0 || len(r.dollar) > 0 {
			r.dollar = dollar
			r.dollarChanged.Store(true)
		}
		r.epoch, r.seq = m.Epoch, m.Seq
		r.all.Store(m.All)
		// Deltas that arrived after a gap and follow this snapshot can be applied now.
		pending := r.pending
		r.pending = nil
		gap := false
		for _, d := range pending {
			if d.Epoch != r.epoch || d.Seq <= r.seq {
				continue
			}
			if d.Seq != r.seq+1 {
				gap = true
				r.pending = append(r.pending, d)
				continue
			}
			r.applyDelta(d)
		}
		r.unknown.Store(gap)
		return !gap
	}
	switch {
	case m.Epoch < r.epoch:
		return !r.unknown.Load() // an earlier run's retained delta: already superseded
	case m.Epoch == r.epoch && m.Seq <= r.seq:
		return !r.unknown.Load() // a duplicate, or the retained delta the snapshot includes
	case m.Epoch == r.epoch && m.Seq == r.seq+1 && !r.unknown.Load():
		r.applyDelta(m)
		return true
	}
	// A gap or a new epoch without its snapshot: relay everything until a snapshot arrives.
	r.unknown.Store(true)
	if len(r.pending) < maxPendingDeltas {
		r.pending = append(r.pending, m)
	}
	return false
}

func (r *remoteInterest) applyDelta(d interestMsg) {
	t, sh := r.tree.Load(), r.shares.Load()
	for _, c := range d.Changes {
		// Set semantics: a peer's interest holds each filter once, so a change applied twice
		// (a snapshot that already includes it) changes nothing.
		s := topictree.Share{Group: c.Group, Filter: c.Filter}
		switch {
		case c.Group != "" && c.Add && sh.Count(s) == 0:
			_, _ = sh.Add(s)
		case c.Group != "" && !c.Add:
			sh.Remove(s)
		case c.Add && t.Count(c.Filter) == 0:
			_, _ = t.Add(c.Filter)
		case !c.Add && c.Group == "":
			t.Remove(c.Filter)
		}
		if isDollarFilter(c.Filter) {
			if r.dollar == nil {
				r.dollar = map[string]bool{}
			}
			// A plain filter and shared subscriptions may hold the same '$' filter.
			if t.Count(c.Filter) > 0 || sh.HasFilter(c.Filter) {
				r.dollar[c.Filter] = true
			} else {
				delete(r.dollar, c.Filter)
			}
			r.dollarChanged.Store(true)
		}
	}
	r.seq = d.Seq
	r.all.Store(d.All)
}
