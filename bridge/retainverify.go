// retainverify.go owns the verifier: when a local retained write may have reached the broker
// before the agent's republish of an older value although it reached the agent after it (the
// broker queued it behind a full in-flight window), it reads the value the broker holds and,
// when that is the older value, publishes the newer again.

package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// maxVerifications bounds the checks waiting for the verifier; past it a check is dropped and
// counted (Unverified), and the broker may keep the older value until the next write or push.
const maxVerifications = 4096

// verification is one check: the agent republished a value with hash loser on topic, then the
// local write (stamp, hash, qos, payload) arrived after that republish completed.
type verification struct {
	topic       string
	loser       uint64
	stamp, hash uint64
	qos         byte
	payload     []byte
	props       mqttconn.Props
}

// localDialer is how the verifier reaches the local broker.
type localDialer struct {
	addr     string
	tls      *tls.Config
	conn     connSettings
	clientID string
}

// verify queues a check without blocking the dispatcher.
func (r *retainedState) verify(v verification) {
	select {
	case r.verifyq <- v:
	default:
		r.unverified.Add(1)
	}
}

// verifyLoop makes the queued checks, one at a time, on one connection to the local broker (an
// ordinary client: it sees stored retained values with the retain flag), until ctx ends.
func (r *retainedState) verifyLoop(ctx context.Context) {
	var rd *retainedReader
	defer func() {
		if rd != nil {
			rd.c.Close()
		}
	}()
	for {
		var v verification
		select {
		case v = <-r.verifyq:
		case <-ctx.Done():
			return
		}
		if rd == nil {
			var err error
			if rd, err = r.dialReader(ctx); err != nil {
				r.unverified.Add(1)
				r.log.Warn("retained verifier: local broker", "err", err)
				continue
			}
		}
		held, ok, err := rd.read(ctx, v.topic)
		if err != nil {
			rd.c.Close()
			rd = nil
			r.unverified.Add(1)
			continue
		}
		r.verified.Add(1)
		if !ok {
			held = 0 // nothing stored: a deletion
		}
		if held != v.loser {
			continue // the broker holds the newer value, or a write the agent has yet to see
		}
		r.applyMu.Lock()
		if e, ok, _ := r.reg.get(v.topic); ok && e.stamp == v.stamp && e.hash == v.hash {
			r.repaired.Add(1)
			r.publish(ctx, v.topic, v.qos, v.props, v.payload, func() {})
		}
		r.applyMu.Unlock()
	}
}

// retainedReader reads the retained value of one topic at a time.
type retainedReader struct {
	c      *mqttconn.Conn
	marker string
	mu     sync.Mutex
	topic  string
	hash   uint64
	found  bool
	done   chan struct{}
}

func (r *retainedState) dialReader(ctx context.Context) (*retainedReader, error) {
	rd := &retainedReader{marker: r.topics.RetainedMarker(r.node + "/verify")}
	c, _, err := mqttconn.Dial(ctx, r.dialer.addr, r.dialer.conn.options(r.dialer.clientID, 4, true, r.dialer.tls),
		func(m *message) {
			m.Ack()
			rd.mu.Lock()
			defer rd.mu.Unlock()
			switch {
			case m.Topic == rd.marker && rd.done != nil:
				close(rd.done)
				rd.done = nil
			case m.Retain && m.Topic == rd.topic:
				rd.hash, rd.found = valueHash(m.QoS, m.Payload), true
			}
		})
	if err != nil {
		return nil, err
	}
	if err := c.Subscribe(ctx, map[string]byte{rd.marker: 0}); err != nil {
		c.Close()
		return nil, err
	}
	rd.c = c
	return rd, nil
}

var errNoMarker = errors.New("bridge: retained verifier: no marker within 10s")

// read subscribes to topic, takes the stored value the broker sends with the retain flag, and
// ends at its own marker publish, which comes after it; then unsubscribes.
func (rd *retainedReader) read(ctx context.Context, topic string) (hash uint64, found bool, err error) {
	done := make(chan struct{})
	rd.mu.Lock()
	rd.topic, rd.found, rd.done = topic, false, done
	rd.mu.Unlock()
	defer func() {
		rd.mu.Lock()
		rd.topic, rd.done = "", nil
		rd.mu.Unlock()
	}()
	// QoS 2: the value comes with the QoS it is stored with, which is part of its hash.
	if err := rd.c.Subscribe(ctx, map[string]byte{topic: 2}); err != nil {
		return 0, false, err
	}
	rd.c.Publish(rd.marker, 0, false, nil, nil)
	select {
	case <-done:
	case <-rd.c.Done():
		return 0, false, rd.c.Err()
	case <-time.After(10 * time.Second):
		return 0, false, errNoMarker
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
	rd.mu.Lock()
	hash, found = rd.hash, rd.found
	rd.mu.Unlock()
	return hash, found, rd.c.Unsubscribe(ctx, []string{topic})
}

// brokerStarted reads when the local broker started, from its retained $SYS/broker/uptime, on a
// connection of its own (client id "mha-<cluster>-<node>-retained-uptime"), within 5 s.
func (r *retainedState) brokerStarted(ctx context.Context) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got := make(chan time.Time, 1)
	c, _, err := mqttconn.Dial(ctx, r.dialer.addr, r.dialer.conn.options(r.topics.ReaderID(r.node, "uptime"), 4, true, r.dialer.tls),
		func(m *message) {
			m.Ack()
			if secs, err := strconv.Atoi(strings.TrimSuffix(string(m.Payload), " seconds")); err == nil && m.Topic == topicUptime {
				select {
				case got <- time.Now().Add(-time.Duration(secs) * time.Second):
				default:
				}
			}
		})
	if err != nil {
		return time.Time{}, false
	}
	defer c.Close()
	if err := c.Subscribe(ctx, map[string]byte{topicUptime: 0}); err != nil {
		return time.Time{}, false
	}
	select {
	case t := <-got:
		return t, true
	case <-ctx.Done():
		return time.Time{}, false
	}
}
