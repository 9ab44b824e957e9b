// catchup.go owns the catch-up of late subscriptions. A subscription takes effect on its own
// broker the moment that broker accepts it, but this agent learns it a moment later (the peer's
// agent reads the log line and publishes a delta; about a millisecond on loopback). A publish
// this broker accepted in between went to no peer, where one broker would have delivered it: a
// client that subscribes and at once asks another, on another broker, to publish (request and
// response, the Paho suite's test_request_response) missed the answer.
//
// So the agent keeps, for catchUpWindow, the local publishes some peer did not get. A delta
// stamped with when its agent read the first subscription it adds (interest wire version 3)
// relays to that peer, before anything routed after it, those read here after the stamp (less
// catchUpSlack) that match an added filter. Both sides stamp with the time their agent read
// the line or publish, so the cut is the brokers' order up to the slack and the hosts' clock
// offset: a publish accepted after the subscriber's SUBACK is not missed, and one accepted
// more than 2 ms (plus the clock offset) before the subscription is not delivered.
//
// A caught-up relay is not one the local broker waits for (its message was acknowledged when no
// peer wanted it): a full buffer may drop it and an agent restart loses it, as before the
// catch-up existed. Retained publishes go to every peer and need none; shared subscriptions are
// not caught up.

package bridge

import (
	"sync"
	"sync/atomic"

	"mosquitto-ha/topictree"
)

const (
	// catchUpWindow is how long a publish stays eligible: far above the propagation of a delta
	// (milliseconds), so only a peer link that is itself late by more loses the catch-up.
	catchUpWindow = int64(2e9)
	// catchUpSlack is how much earlier than the stamp a publish may have been read and still be
	// caught up. Mosquitto writes a SUBACK at once but the subscription's log line to the agent
	// later in its loop: a client that publishes elsewhere as soon as it has its SUBACK can be
	// read there before the line is read here (by 40-241 us in 8 of 180 probes on a loaded
	// 2-core machine, a one-off measurement that logged, in TestLateSubscriptionCaughtUp's probe,
	// how long before the stamp each missed publish was read; with the slack at 0 that test
	// misses 1-4 of 30 per run). A publish read up to this much before the subscription may be
	// delivered too, where one broker would not; no client can tell without a causal chain that
	// crosses the cluster in less.
	catchUpSlack = int64(2e6)
	// catchUpMaxEntries and catchUpMaxBytes bound the memory the window holds; past them the
	// oldest go first, shortening the window under heavy traffic.
	catchUpMaxEntries = 1 << 14
	catchUpMaxBytes   = 8 << 20
)

// recentPub is a local publish that some peer did not get.
type recentPub struct {
	at      int64 // when the agent read it, Unix ns
	topic   string
	payload []byte
	props   *relayProps
	epoch   uint64
	peers   []*peer // the peer list it was routed against
	sent    uint64  // bit i: relayed to peers[i] (peers past 64 count as sent)
	mid     uint16
	qos     byte
}

// catchUp serialises routing with the application of peers' interest messages: a publish is
// either routed with a peer's new interest or held here before the delta's scan.
type catchUp struct {
	mu         sync.Mutex
	ring       []recentPub
	head, n    int
	bytes      int
	caughtUp   atomic.Uint64 // relays sent by a catch-up
	maxEntries int
	maxBytes   int
}

func newCatchUp() *catchUp {
	return &catchUp{ring: make([]recentPub, 256), maxEntries: catchUpMaxEntries, maxBytes: catchUpMaxBytes}
}

// relay routes a local publish (relayToPeers) and keeps it when a peer did not get it.
func (c *catchUp) relay(m *message, epoch uint64, peers []*peer, shares *shareRouter, stamp uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sent, props := relayToPeers(m, epoch, peers, shares, stamp)
	all := uint64(1)<<min(len(peers), 64) - 1
	if len(peers) >= 64 {
		all = ^uint64(0)
	}
	if m.Retain || sent&all == all {
		return
	}
	if props == nil {
		props = propsOf(m)
	}
	c.add(recentPub{at: m.Received, topic: m.Topic, payload: m.Payload, props: props, epoch: epoch,
		peers: peers, sent: sent, mid: m.ID, qos: m.QoS})
}

func (c *catchUp) add(r recentPub) {
	for c.n > 0 && (c.n >= c.maxEntries || c.bytes+len(r.payload) > c.maxBytes || r.at-c.ring[c.head].at > catchUpWindow) {
		c.pop()
	}
	if c.n == len(c.ring) {
		ring := make([]recentPub, 2*len(c.ring))
		for i := 0; i < c.n; i++ {
			ring[i] = c.ring[(c.head+i)%len(c.ring)]
		}
		c.ring, c.head = ring, 0
	}
	c.ring[(c.head+c.n)%len(c.ring)] = r
	c.n++
	c.bytes += len(r.payload)
}

func (c *catchUp) pop() {
	c.bytes -= len(c.ring[c.head].payload)
	c.ring[c.head] = recentPub{}
	c.head = (c.head + 1) % len(c.ring)
	c.n--
}

// apply applies an interest message of peer p (remoteInterest.apply) and, for a stamped delta
// that adds plain filters, relays to p the held publishes read after the stamp that match one.
// Only a stamped delta (small) is applied under the lock that routing takes: a snapshot of a
// large interest set does not hold up the relays.
func (c *catchUp) apply(p *peer, msg interestMsg, maxFilters int) bool {
	if msg.Stamp == 0 || msg.Snapshot {
		return p.interest.apply(msg, maxFilters)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	inSync := p.interest.apply(msg, maxFilters)
	if c.n == 0 {
		return inSync
	}
	var added *topictree.Tree
	for _, ch := range msg.Changes {
		if ch.Add && ch.Group == "" {
			if added == nil {
				added = topictree.New()
			}
			if _, err := added.Add(ch.Filter); err != nil {
				added.Add("#") // a filter the tree cannot hold: the peer's broker accepted it
			}
		}
	}
	if added == nil {
		return inSync
	}
	// The held publishes are in the order they were read: find the first after the stamp, less
	// the slack.
	from := msg.Stamp - catchUpSlack
	first := c.n
	for first > 0 && c.ring[(c.head+first-1)%len(c.ring)].at > from {
		first--
	}
	for i := first; i < c.n; i++ {
		r := &c.ring[(c.head+i)%len(c.ring)]
		k := -1
		for j, q := range r.peers {
			if q == p {
				k = j
				break
			}
		}
		if k < 0 || k >= 64 || r.sent&(1<<k) != 0 || !added.Match(r.topic) {
			continue
		}
		r.sent |= 1 << k
		c.caughtUp.Add(1)
		p.enqueue(&relay{topic: r.topic, payload: r.payload, qos: r.qos, props: r.props,
			mid: r.mid, epoch: r.epoch})
	}
	return inSync
}
