// The pair: the publisher and the subscriber through the VIP, and check, one run from placement
// through warm-up, publishing, drain and return visits to the report.

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// connCounter numbers a client's TCP connections: it is bumped when the connection is dialled,
// before CONNECT is sent, so anything read later belongs to this connection or a newer one.
type connCounter struct {
	n atomic.Int64
	// skip is the last connection of the placement attempts that landed on the wrong broker.
	skip atomic.Int64
	// cur is the connection dialled last (a net.Conn).
	cur atomic.Value
	// up: connection n completed CONNECT and its loss was not noticed yet.
	up atomic.Bool
}

func (c *connCounter) dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", uri.Host, o.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	c.n.Add(1)
	c.cur.Store(conn)
	return conn, nil
}

// drop closes the current TCP connection, as a network blip would: the client reconnects on
// its own.
func (c *connCounter) drop() {
	if conn, ok := c.cur.Load().(net.Conn); ok {
		conn.Close()
	}
}

func pairOptions(o options, id string, cc *connCounter) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().AddBroker("tcp://" + o.vip).SetClientID(id).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(o.retry).SetMaxReconnectInterval(o.retry).
		SetConnectTimeout(time.Second).SetKeepAlive(o.keepalive).SetPingTimeout(time.Second).
		SetWriteTimeout(2 * time.Second).SetCustomOpenConnectionFn(cc.dial).
		SetConnectionLostHandler(func(mqtt.Client, error) { cc.up.Store(false) })
}

func check(ctx context.Context, o options, brokers brokerList, stdin io.Reader, stderr io.Writer) (*report, error) {
	var runID [8]byte
	binary.BigEndian.PutUint64(runID[:], rand.Uint64())
	run := fmt.Sprintf("%x", runID[:4])
	prefix := o.idPrefix
	if prefix == "" {
		prefix = "lc-" + run
	}
	topic := "labcheck/" + run + "/seq"
	marker := func(role string, n int64) string { return fmt.Sprintf("labcheck/%s/conn/%s/%d", run, role, n) }
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "labcheck: %s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}

	obs, err := startObservers(ctx, brokers, run, o)
	if err != nil {
		return nil, err
	}
	defer obs.stop()

	subID, subB, pubID, pubB, err := place(ctx, obs, o, prefix)
	if err != nil {
		return nil, err
	}
	logf("subscriber %s lands on %s, publisher %s on %s", subID, subB, pubID, pubB)
	// Whatever happens, leave no session behind on any broker labcheck can reach.
	defer deleteSessions(brokers, []string{subID, pubID})

	rec := &recorder{sent: []time.Time{{}}, sentOn: []int64{0}, acks: map[uint64]ack{}, warm: make(chan struct{})}
	var subConns, pubConns connCounter

	onMessage := func(_ mqtt.Client, m mqtt.Message) { rec.record(topic, runID, m, subConns.n.Load(), "") }
	subOpts := pairOptions(o, subID, &subConns).SetDefaultPublishHandler(onMessage)
	subOpts.SetOnConnectHandler(func(c mqtt.Client) {
		if o.subscribe == subscribeOnce {
			// Only the marker: the data topic is subscribed once, below, after placement.
			c.Subscribe(marker("sub", subConns.n.Load()), 0, nil)
			return
		}
		// A session on a broker it never saw starts empty: subscribe on every connection.
		c.SubscribeMultiple(map[string]byte{topic: 1, marker("sub", subConns.n.Load()): 0}, onMessage)
	})
	pubOpts := pairOptions(o, pubID, &pubConns)
	pubOpts.SetOnConnectHandler(func(c mqtt.Client) {
		pubConns.up.Store(true)
		c.Subscribe(marker("pub", pubConns.n.Load()), 0, nil)
	})

	// connectOn connects until the client lands where placement said: always at once behind a
	// client-id hash; behind round robin (the study's HAProxy) only every so often.
	connectOn := func(role, id string, opts *mqtt.ClientOptions, cc *connCounter, want string) (mqtt.Client, error) {
		for attempt := 0; attempt < 12; attempt++ {
			c := mqtt.NewClient(opts)
			tok := c.Connect()
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				c.Disconnect(0)
				return nil, fmt.Errorf("%s %s: connect through %s: %v", role, id, o.vip, tok.Error())
			}
			n := cc.n.Load()
			got := ""
			for deadline := time.Now().Add(2 * time.Second); got == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				got = obs.connections(role, id)[n].Broker
			}
			if got == want {
				return c, nil
			}
			logf("%s %s landed on %q, not %s as when placed (the balancer does not keep ids on brokers): again", role, id, got, want)
			c.Disconnect(50)
			// Leave no session there: it would queue messages for a later reconnection.
			if addr := brokers.addr(got); addr != "" {
				deleteSessions(brokerList{{got, addr}}, []string{id})
			}
			cc.skip.Store(cc.n.Load())
		}
		return nil, fmt.Errorf("%s %s: never landed on %s through %s", role, id, want, o.vip)
	}
	sub, err := connectOn("sub", subID, subOpts, &subConns, subB)
	if err != nil {
		return nil, err
	}
	defer sub.Disconnect(100)
	if o.subscribe == subscribeOnce {
		// The one subscription of its life, on the broker placement chose.
		tok := sub.Subscribe(topic, 1, onMessage)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("sub %s: subscribe %s: %v", subID, topic, tok.Error())
		}
	}
	pub, err := connectOn("pub", pubID, pubOpts, &pubConns, pubB)
	if err != nil {
		return nil, err
	}
	defer pub.Disconnect(100)

	payload := func(seq uint64, t time.Time) []byte {
		b := make([]byte, payloadLen)
		binary.BigEndian.PutUint64(b[0:8], seq)
		binary.BigEndian.PutUint64(b[8:16], uint64(t.UnixNano()))
		copy(b[16:24], runID[:])
		return b
	}

	// Warm-up: sequence 0 until the subscriber gets one.
	warmStart := time.Now()
	warmDeadline := time.After(o.warmup)
	tick := time.NewTicker(100 * time.Millisecond)
warm:
	for {
		pub.Publish(topic, 1, false, payload(0, time.Now()))
		select {
		case <-rec.warm:
			break warm
		case <-tick.C:
		case <-warmDeadline:
			tick.Stop()
			return nil, fmt.Errorf("warm-up: the subscriber on %s received nothing from the publisher on %s within %s (do the agents relay?)", subB, pubB, o.warmup)
		case <-ctx.Done():
			tick.Stop()
			return nil, ctx.Err()
		}
	}
	tick.Stop()
	warmup := time.Since(warmStart)

	// Marks from stdin, stamped when read.
	var marksMu sync.Mutex
	var marks []mark
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			label := strings.TrimSpace(sc.Text())
			if label == "" {
				continue
			}
			marksMu.Lock()
			marks = append(marks, mark{Label: label, t: time.Now()})
			marksMu.Unlock()
			if strings.Fields(label)[0] == "reconnect-sub" {
				logf("mark %q: closing the subscriber's connection %d", label, subConns.n.Load())
				subConns.drop()
			}
		}
	}()

	interval := time.Duration(float64(time.Second) / o.rate)
	start := time.Now()
	logf("ready: publishing %.0f msg/s for %s (warm-up took %s)", o.rate, o.duration, warmup.Round(time.Millisecond))
	var pending sync.WaitGroup
	var unacked atomic.Int64
	end := start.Add(o.duration)
	for seq := uint64(1); ; seq++ {
		next := start.Add(time.Duration(seq-1) * interval)
		if !next.Before(end) || ctx.Err() != nil {
			break
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		now := time.Now()
		rec.mu.Lock()
		rec.sent = append(rec.sent, now)
		on := int64(0) // sent while no connection was up: paho sends it once, on the next one
		if pubConns.up.Load() {
			on = pubConns.n.Load()
		}
		rec.sentOn = append(rec.sentOn, on)
		rec.mu.Unlock()
		tok := pub.Publish(topic, 1, false, payload(seq, now))
		pending.Add(1)
		unacked.Add(1)
		go func(seq uint64) {
			defer pending.Done()
			select {
			case <-tok.Done():
			case <-ctx.Done():
				return
			}
			if tok.Error() != nil {
				return
			}
			conn := pubConns.n.Load()
			unacked.Add(-1)
			rec.mu.Lock()
			rec.acks[seq] = ack{t: time.Now(), conn: conn}
			rec.mu.Unlock()
		}(seq)
	}
	stopPub := time.Now()
	logf("published %d messages; draining (at most %s)", len(rec.sent)-1, o.drain)

	// Drain: until every acknowledged message arrived and nothing is pending, or --drain.
	drainEnd := time.Now().Add(o.drain)
	for time.Now().Before(drainEnd) && ctx.Err() == nil {
		if unacked.Load() == 0 && rec.allAckedReceived() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Return visits: the subscriber's persistent session on each broker it left holds what was
	// routed there after it left (see the package doc). A real client gets those messages when it
	// connects to that broker again; labcheck goes there directly and collects them.
	subConnsNow := obs.connectionsAfter("sub", subID, subConns.skip.Load())
	if o.subscribe == subscribeOnce {
		// A visit connects as the subscriber: in a cluster with one connection per client id it
		// would close the live one, which would come back and close the visit. The subscriber
		// leaves first (a clean DISCONNECT: its session stays), as a client that moves does.
		sub.Disconnect(100)
	}
	for _, b := range brokersLeft(subConnsNow) {
		n, err := returnVisit(ctx, brokers.addr(b), subID, func(m mqtt.Message) { rec.record(topic, runID, m, 0, b) })
		if err != nil {
			logf("return visit to %s: %v", b, err)
			continue
		}
		logf("return visit to %s: %d messages were waiting in the session left there", b, n)
	}
	finished := time.Now()

	marksMu.Lock()
	ms := append([]mark(nil), marks...)
	marksMu.Unlock()

	rec.mu.Lock()
	in := analysisInput{
		sent:      append([]time.Time(nil), rec.sent...),
		sentOn:    append([]int64(nil), rec.sentOn...),
		acks:      make(map[uint64]ack, len(rec.acks)),
		arrivals:  append([]arrival(nil), rec.arrivals...),
		invalid:   rec.invalid,
		subConns:  obs.connectionsAfter("sub", subID, subConns.skip.Load()),
		pubConns:  obs.connectionsAfter("pub", pubID, pubConns.skip.Load()),
		dead:      o.dead,
		interval:  interval,
		gap:       o.gap,
		marks:     ms,
		start:     start,
		stopPub:   stopPub,
		finished:  finished,
		warmup:    warmup,
		subBroker: subB,
		pubBroker: pubB,
		subID:     subID,
		pubID:     pubID,
		run:       run,
		rate:      o.rate,
		subscribe: o.subscribe,
		dupMsgs:   o.dupMsgs,
		dupAge:    o.dupAge,
	}
	for k, v := range rec.acks {
		in.acks[k] = v
	}
	rec.mu.Unlock()
	rep := analyse(in)
	logf("sent %d acked %d received %d lost %d duplicates %d dead letters %d stranded %d (waiting in left sessions %d) lost on survivors %d",
		rep.Sent, rep.Acked, rep.Received, rep.Lost, rep.Duplicates, rep.DeadLetters, rep.Stranded, rep.WaitingInLeftSessions, rep.LostOnSurvivors)
	if !rep.DupBoundOK {
		logf("duplicate bound exceeded: %s", strings.Join(rep.DupBoundViolations, "; "))
	}
	return rep, nil
}
