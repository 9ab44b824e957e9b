// peer.go owns one peer: its state (up or down), its relay queue, and what every peer is given
// at construction (peerEnv). Its connection is in peerlink.go, its sender in relayout.go.

package bridge

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// peer is the link to one peer broker: it learns that broker's interest and carries relays to it.
type peer struct {
	name     string
	addr     string
	tls      *tls.Config
	log      *slog.Logger
	interest *remoteInterest
	queue    *relayQueue
	env      *peerEnv
	link     *mqttconn.Link
	inflight chan struct{}      // a token per unacknowledged forward publish
	stop     context.CancelFunc // ends the link and the sender; set by start

	mu    sync.Mutex
	up    bool
	ready chan struct{} // closed while up

	pushReq   chan struct{} // a token asks pushLoop for a retained push (retained.go)
	agentSeen atomic.Int32  // the peer's agent, from its status: see agentStatus

	// Counters, read by Stats.
	relayed, relayedBytes, batches, refused, forged, retries atomic.Uint64
	upSince, downSince                                       atomic.Int64 // unix nanoseconds
	pingAt                                                   atomic.Int64 // last pingPresence
	// wire is the relay wire version the peer's agent announced in its status (relay_wire; 1
	// for an agent that predates it), 0 until its status arrives: relays to it are encoded in
	// that version (relaywire.go), in the current one while it is 0.
	wire atomic.Int32
	// interestWire is the interest message version the peer's agent reads (its status'
	// interest_wire; 0 until a signed status says, or for an agent that predates it).
	interestWire atomic.Int32
	// signedAt is when (unix ns, this clock) the last signed status of the peer was taken: an
	// unsigned one may lower wire only when none came for trustedStatusWindow.
	signedAt atomic.Int64
	expired  atomic.Uint64 // relays whose message expired while they waited: not sent
	// sessions is the peer's last accepted session registry (sessionplan.go), kept while the
	// peer is away: its clients may be moving here.
	sessions        atomic.Pointer[map[string]sessionEntry]
	registryRefused atomic.Uint64
	// sessionsSeen is when (unix ns) the peer's registry was last accepted (its republication
	// re-confirms it); 0 after a refused one: drains need a fresh registry (sessionplan.go).
	sessionsSeen atomic.Int64
	// statusSeen is when (unix ns) the peer's last live status was taken.
	statusSeen atomic.Int64
}

// wireVersion is the relay wire version to write to the peer.
func (p *peer) wireVersion() int {
	if v := int(p.wire.Load()); v != 0 {
		return min(v, relayWireVersion)
	}
	return relayWireVersion
}

// peerEnv is what every peer is built with: the agent's settings and the workers it shares,
// never the Agent itself.
type peerEnv struct {
	node   string // this node
	topics Topics
	conn   connSettings
	wire   relayWire // encodes the relays the sender publishes
	signer *signer   // checks the peer's interest messages
	// catchUp applies the peer's interest messages, and relays what a late subscription missed.
	catchUp *catchUp
	limits  *atomic.Pointer[Limits]
	log     *slog.Logger
	push    *retainedPush // runs when the link comes up or the peer's agent starts
	// sessions, when sessions follow their client, checks the peers' registries' stamps;
	// sessionsChanged tells the dispatcher one arrived.
	sessions        *sessionRegistry
	sessionsChanged func()

	bufferMessages, bufferBytes, maxInflight int
}

func newPeer(pa PeerAddr, env *peerEnv) *peer {
	p := &peer{
		name:     pa.Name,
		addr:     pa.Address,
		tls:      pa.TLS,
		env:      env,
		log:      env.log.With("peer", pa.Name),
		interest: newRemoteInterest(),
		queue:    newRelayQueue(env.bufferMessages, env.bufferBytes),
		inflight: make(chan struct{}, env.maxInflight),
		ready:    make(chan struct{}),
		pushReq:  make(chan struct{}, 1),
	}
	p.downSince.Store(time.Now().UnixNano())
	p.link = p.newLink()
	return p
}

// start runs the peer's link and its sender until ctx ends or p.stop is called.
func (p *peer) start(ctx context.Context, wg *sync.WaitGroup) {
	pctx, cancel := context.WithCancel(ctx)
	p.stop = cancel
	wg.Add(3)
	go func() {
		defer wg.Done()
		p.link.Run(pctx)
	}()
	go func() {
		defer wg.Done()
		p.pushLoop(pctx)
	}()
	go func() {
		defer wg.Done()
		p.send(pctx)
	}()
}

// Up reports whether the connection to the peer broker is established.
func (p *peer) Up() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up
}

func (p *peer) setUp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.up {
		return
	}
	p.up = true
	close(p.ready)
	p.upSince.Store(time.Now().UnixNano())
	p.queue.setParked(false)
}

func (p *peer) setDown() {
	p.mu.Lock()
	if !p.up {
		p.mu.Unlock()
		return
	}
	p.up = false
	p.ready = make(chan struct{})
	p.downSince.Store(time.Now().UnixNano())
	p.mu.Unlock()
	// What the peer's clients want while it is away is unknown: relay everything (the queue
	// keeps it, bounded) until its interest is synced again after it returns.
	p.interest.setSynced(false)
	// The local broker must not wait for a peer that is gone: what is queued stays queued
	// (bounded) and is sent when the peer returns.
	p.queue.setParked(true)
}

// conn is the link's connection while the peer is up, or nil.
func (p *peer) conn() *mqttconn.Conn {
	p.mu.Lock()
	up := p.up
	p.mu.Unlock()
	if !up {
		return nil
	}
	return p.link.Conn()
}

// drainProbeTimeout bounds the round trip that proves a peer's broker reachable (answers): far
// above a LAN's, far below the seconds a keepalive takes to notice a cut.
const drainProbeTimeout = 300 * time.Millisecond

// answers reports whether the peer's broker acknowledges a QoS 1 publish on topic, sent now on
// the link, within drainProbeTimeout.
func (p *peer) answers(ctx context.Context, topic string) bool {
	c := p.conn()
	if c == nil {
		return false
	}
	done := make(chan error, 1)
	c.Publish(topic, 1, false, nil, func(err error) { done <- err })
	select {
	case err := <-done:
		return err == nil
	case <-time.After(drainProbeTimeout):
		return false
	case <-ctx.Done():
		return false
	}
}

// waitConn blocks until the link is up and returns its connection.
func (p *peer) waitConn(ctx context.Context) (*mqttconn.Conn, bool) {
	for {
		if c := p.conn(); c != nil {
			return c, true
		}
		p.mu.Lock()
		ready := p.ready
		p.mu.Unlock()
		select {
		case <-ready:
		case <-time.After(50 * time.Millisecond): // the link may be between connections
		case <-ctx.Done():
			return nil, false
		}
	}
}

// disconnect closes the current connection, if any.
func (p *peer) disconnect() {
	if p.link != nil {
		if c := p.link.Conn(); c != nil {
			c.Close()
		}
	}
}

// enqueue hands a relay to the peer. A QoS 0 relay to a peer that is down is dropped, as a
// QoS 0 publish to a broker that is down would be, unless it sets a retained value.
func (p *peer) enqueue(r *relay) {
	if !p.Up() {
		if !r.retain && r.qos == 0 {
			p.queue.dropped.Add(1)
			r.settle()
			return
		}
	}
	if n := p.queue.push(r); n > 0 {
		p.log.Warn("relay buffer full, dropped the oldest QoS 0 or parked relays", "dropped", n, "buffered", p.queue.Len())
	}
}
