// share.go owns the relay choice for shared subscriptions ("$share/<group>/<filter>"): which
// peers a local publish goes to so that each shared subscription gets it once across the
// cluster, and the count of the deliveries where that cannot be so.
//
// One Mosquitto delivers a message once per shared subscription, to one of its members; a
// subscription is its share name and its filter together (MQTT 5 section 4.8.2). Across the
// cluster every broker that has members of a subscription and receives the message delivers
// it once, so for each shared subscription (group, filter) that matches a local publish:
//
//   - the local broker has members: it serves them; the publish is not relayed for it;
//   - otherwise, when a peer with members gets the publish anyway (a plain subscriber there, or
//     a retained publish, which goes to every peer), that peer serves it;
//   - otherwise exactly one peer with members gets it: among those whose link is up and whose
//     interest is known, round robin (any holder when none is; a peer whose members are all
//     gone no longer holds the subscription and is never chosen).
//
// Where the publish reaches k > 1 brokers with members (local and peers) because it must go
// there for other subscribers, the subscription gets k deliveries: k - 1 are counted in
// shareRouter.extra (Status.SharedExtra).

package bridge

import (
	"slices"
	"strings"
	"sync/atomic"

	"mosquitto-ha/topictree"
)

// shareRouter is used by the dispatcher only, apart from its counter.
type shareRouter struct {
	local *topictree.Shared // the local clients' shared subscriptions (localInterest.shares)
	next  uint64            // round robin among the peers that hold a subscription
	extra atomic.Uint64     // deliveries beyond one per shared subscription and message
	pairs []topictree.Share // scratch
}

func newShareRouter(local *topictree.Shared) *shareRouter { return &shareRouter{local: local} }

// route returns to with the peers added that topic must reach for the shared subscriptions
// matching it. to holds the peers that get the publish for other reasons. A nil router, or
// no shared subscription anywhere, leaves to as it is.
func (s *shareRouter) route(topic string, peers, to []*peer) []*peer {
	if s == nil {
		return to
	}
	pairs := s.local.AppendMatching(s.pairs[:0], topic)
	for _, p := range peers {
		pairs = p.interest.shares.Load().AppendMatching(pairs, topic)
	}
	if len(pairs) == 0 {
		s.pairs = pairs
		return to
	}
	slices.SortFunc(pairs, compareShare)
	pairs = slices.Compact(pairs)
	s.pairs = pairs

	// First the subscriptions the local broker or a peer that gets the publish anyway serves,
	// then one peer for each of the others, preferring a peer already chosen for another.
	var holdersBuf [16]*peer
	served := make([]bool, len(pairs))
	for i, sh := range pairs {
		served[i] = s.local.Count(sh) > 0 || anyHolds(to, sh)
	}
	for i, sh := range pairs {
		if served[i] || anyHolds(to, sh) {
			continue
		}
		holders := holdersBuf[:0]
		for _, p := range peers {
			if p.interest.shares.Load().Count(sh) > 0 {
				holders = append(holders, p)
			}
		}
		if len(holders) == 0 {
			continue
		}
		to = append(to, s.pick(holders))
	}
	// Count what Mosquitto will deliver: once per broker with members that gets the publish.
	for _, sh := range pairs {
		n := 0
		if s.local.Count(sh) > 0 {
			n++
		}
		for _, p := range to {
			if p.interest.shares.Load().Count(sh) > 0 {
				n++
			}
		}
		if n > 1 {
			s.extra.Add(uint64(n - 1))
		}
	}
	return to
}

// pick chooses one of the holders, round robin among the best placed: link up and interest
// known, else link up, else any (its relay waits in the peer's queue).
func (s *shareRouter) pick(holders []*peer) *peer {
	best := holders[:0:0]
	for _, want := range []func(*peer) bool{
		func(p *peer) bool { return p.Up() && p.interest.Known() },
		func(p *peer) bool { return p.Up() },
	} {
		for _, p := range holders {
			if want(p) {
				best = append(best, p)
			}
		}
		if len(best) > 0 {
			break
		}
	}
	if len(best) == 0 {
		best = holders
	}
	p := best[s.next%uint64(len(best))]
	s.next++
	return p
}

func anyHolds(ps []*peer, sh topictree.Share) bool {
	for _, p := range ps {
		if p.interest.shares.Load().Count(sh) > 0 {
			return true
		}
	}
	return false
}

func compareShare(a, b topictree.Share) int {
	if c := strings.Compare(a.Filter, b.Filter); c != 0 {
		return c
	}
	return strings.Compare(a.Group, b.Group)
}

// splitShares lists the local shared subscriptions that peers hold too, with those peers:
// a publish that must reach several of these brokers anyway is delivered once on each.
func splitShares(local *topictree.Shared, peers []*peer) []SharedSplit {
	var out []SharedSplit
	for _, sh := range local.Shares() {
		var names []string
		for _, p := range peers {
			if p.interest.shares.Load().Count(sh) > 0 {
				names = append(names, p.name)
			}
		}
		if len(names) > 0 {
			out = append(out, SharedSplit{Share: sh.String(), Peers: names})
		}
	}
	return out
}

// SharedSplit is a shared subscription whose members sit on this broker and on Peers.
type SharedSplit struct {
	Share string   `json:"share"` // "$share/<group>/<filter>"
	Peers []string `json:"peers"`
}
