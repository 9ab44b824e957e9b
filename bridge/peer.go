package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// peer is the link to one peer broker: it learns that broker's interest and carries relays to it.
type peer struct {
	name     string
	addr     string
	tls      *tls.Config
	log      *slog.Logger
	interest *remoteInterest
	queue    *relayQueue
	client   mqtt.Client
	inflight int
	stop     context.CancelFunc // ends the sender; set by startPeer

	mu    sync.Mutex
	up    bool
	ready chan struct{} // closed while up
	lost  chan struct{} // closed when the current connection is lost

	// Counters, read by Stats.
	relayed, relayedBytes, refused, forged, retries atomic.Uint64
	upSince, downSince                              atomic.Int64 // unix nanoseconds
}

func newPeer(pa PeerAddr, a *Agent) *peer {
	p := &peer{
		name:     pa.Name,
		addr:     pa.Address,
		tls:      pa.TLS,
		log:      a.log.With("peer", pa.Name),
		interest: newRemoteInterest(),
		queue:    newRelayQueue(a.opts.BufferMessages, a.opts.BufferBytes),
		inflight: a.opts.MaxInflight,
		ready:    make(chan struct{}),
		lost:     make(chan struct{}),
	}
	p.downSince.Store(time.Now().UnixNano())
	return p
}

// disconnect closes the link, if it was ever opened.
func (p *peer) disconnect() {
	if p.client != nil {
		p.client.Disconnect(250)
	}
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
	p.lost = make(chan struct{})
	close(p.ready)
	p.upSince.Store(time.Now().UnixNano())
}

func (p *peer) setDown() {
	p.mu.Lock()
	if !p.up {
		p.mu.Unlock()
		return
	}
	p.up = false
	p.ready = make(chan struct{})
	close(p.lost)
	p.downSince.Store(time.Now().UnixNano())
	p.mu.Unlock()
	// The local broker must not wait for a peer that is gone: what is queued stays queued
	// (bounded) and is sent when the peer returns.
	p.queue.parkAll()
}

// waitUp blocks until the connection is up and returns the channel closed when it is lost.
func (p *peer) waitUp(ctx context.Context) (lost chan struct{}, ok bool) {
	for {
		p.mu.Lock()
		up, ready, lost := p.up, p.ready, p.lost
		p.mu.Unlock()
		if up {
			return lost, true
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, false
		}
	}
}

// enqueue hands a relay to the peer. A QoS 0 relay to a peer that is down is dropped, as a
// QoS 0 publish to a broker that is down would be.
func (p *peer) enqueue(r *relay) {
	if !p.Up() {
		if r.qos == 0 {
			p.queue.dropped.Add(1)
			r.settle()
			return
		}
		r.settle() // parked: the peer is down
	}
	if n := p.queue.push(r); n > 0 {
		p.log.Warn("relay buffer full, dropped oldest", "dropped", n, "buffered", p.queue.Len())
	}
}

type pending struct {
	tok  mqtt.Token
	r    *relay
	lost chan struct{}
}

// send publishes queued relays, at most p.inflight unacknowledged at a time, until ctx ends.
func (p *peer) send(ctx context.Context, wg *sync.WaitGroup) {
	inflight := make(chan pending, p.inflight)
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.ack(ctx, inflight)
	}()
	for {
		r, ok := p.queue.pop(ctx)
		if !ok {
			close(inflight)
			return
		}
		lost, ok := p.waitUp(ctx)
		if !ok {
			close(inflight)
			return
		}
		tok := p.client.Publish(r.topic, r.qos, false, r.payload)
		p.relayed.Add(1)
		p.relayedBytes.Add(uint64(len(r.payload)))
		if r.qos == 0 {
			r.settle()
			continue
		}
		select {
		case inflight <- pending{tok: tok, r: r, lost: lost}:
		case <-ctx.Done():
			close(inflight)
			return
		}
	}
}

// ack waits for each relay's acknowledgement in order; relays cut off by a lost connection go
// back to the head of the queue (at least once: the peer may see a duplicate).
func (p *peer) ack(ctx context.Context, inflight <-chan pending) {
	for pd := range inflight {
		var err error
		select {
		case <-pd.tok.Done():
			err = pd.tok.Error()
		case <-pd.lost:
			err = errors.New("connection lost")
		case <-ctx.Done():
			return
		}
		if err != nil {
			p.retries.Add(1)
			p.log.Debug("relay not acknowledged, retrying", "err", err)
			if !p.Up() {
				pd.r.settle() // parked until the peer returns
			}
			p.queue.pushFront(pd.r)
			continue
		}
		pd.r.settle()
	}
}
