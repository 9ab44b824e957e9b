// retained.go owns the retained pull: when the link to a peer comes up, the agent reads the
// retained messages of both brokers and republishes locally the peer's values that differ.

package bridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// retainedPull copies peers' retained messages to the local broker.
type retainedPull struct {
	node      string
	topics    Topics
	conn      connSettings
	localAddr string
	localTLS  *tls.Config
	in        *relayIn // republishes on the local connection
}

// run copies a peer broker's retained messages to the local broker when the link to it comes
// up, so a subscriber here gets values published while this node was away (agent or broker
// down, link cut, late join). Only values that differ from the local broker's are republished
// (an unchanged value would reach live subscribers again), and never one this node itself
// relayed while the link was down (the peer's copy is older). Where the same topic changed on
// both sides during a partition, the peer's value wins.
func (r *retainedPull) run(ctx context.Context, p *peer) {
	mine := p.takeRetainedWhileDown()
	local, err := r.read(ctx, r.localAddr, r.localTLS, r.topics.ReaderID(r.node, p.name), r.node+"/local/"+p.name)
	if err != nil {
		p.log.Warn("retained pull: local broker", "err", err)
		return
	}
	theirs, err := r.read(ctx, p.addr, p.tls, r.topics.PullID(r.node, p.name), r.node+"/sync/"+p.name)
	if err != nil {
		p.log.Warn("retained pull: peer broker", "err", err)
		return
	}
	n := 0
	for topic, v := range theirs {
		if mine[topic] {
			continue
		}
		if l, ok := local[topic]; ok && l.qos == v.qos && bytes.Equal(l.payload, v.payload) {
			continue
		}
		n++
		r.in.republish(ctx, topic, v.qos, true, v.payload, func() {})
	}
	p.log.Info("retained messages pulled from peer", "peer_retained", len(theirs), "republished", n)
}

type retainedValue struct {
	payload []byte
	qos     byte
}

// read returns a broker's stored retained messages. A non-bridge client sees stored retained
// messages with the retain flag and live ones without; its own marker publish, which follows
// every retained message queued by its subscription, ends the read.
func (r *retainedPull) read(ctx context.Context, addr string, tlsConf *tls.Config, clientID, markerName string) (map[string]retainedValue, error) {
	marker := r.topics.RetainedMarker(markerName)
	var mu sync.Mutex
	out := map[string]retainedValue{}
	done := make(chan struct{})
	var once sync.Once
	c, _, err := mqttconn.Dial(ctx, addr, r.conn.options(clientID, 4, true, tlsConf),
		func(m *message) {
			m.Ack()
			switch {
			case m.Topic == marker:
				once.Do(func() { close(done) })
			case m.Retain && !r.topics.IsReserved(m.Topic):
				mu.Lock()
				out[m.Topic] = retainedValue{payload: m.Payload, qos: m.QoS}
				mu.Unlock()
			}
		})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Subscribe(ctx, map[string]byte{"#": 2, marker: 1}); err != nil {
		return nil, err
	}
	c.Publish(marker, 1, false, nil, nil)
	select {
	case <-done:
	case <-c.Done():
		return nil, c.Err()
	case <-time.After(30 * time.Second):
		return nil, errors.New("no end marker within 30s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}
