package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// result is the report; its JSON field names are the tool's interface.
type result struct {
	Publishers  int      `json:"publishers"`
	Subscribers int      `json:"subscribers"`
	Count       int      `json:"count"`
	Size        int      `json:"size"`
	QoS         int      `json:"qos"`
	SubQoS      int      `json:"sub_qos"`
	Topic       string   `json:"topic"`
	PubBrokers  []string `json:"pub_brokers"`
	SubBrokers  []string `json:"sub_brokers"`
	Rate        float64  `json:"rate"`
	Inflight    int      `json:"inflight"`

	// Published is the number of messages handed to the client library; Acked those completed
	// without error (PUBACK for QoS 1, PUBCOMP for QoS 2, written to the socket for QoS 0).
	Published     int64 `json:"published"`
	Acked         int64 `json:"acked"`
	PublishErrors int64 `json:"publish_errors"`
	// PublishDurationS runs from the first publish to the last completion; PublishRate is
	// Acked / PublishDurationS.
	PublishDurationS float64 `json:"publish_duration_s"`
	PublishRate      float64 `json:"publish_rate"`
	// E2EDurationS runs from the first publish to the last delivery at any subscriber;
	// DeliveryRate is Received / E2EDurationS.
	E2EDurationS float64 `json:"e2e_duration_s"`
	DeliveryRate float64 `json:"delivery_rate"`

	// Expected is the sum of the subscribers' expected distinct (publisher, sequence) pairs;
	// Received counts every valid delivery (duplicates included), Distinct the first ones;
	// Lost = sum of max(0, expected - distinct), Unexpected = sum of max(0, distinct - expected);
	// Invalid counts payloads that are not this run's (too short, wrong size, foreign run id,
	// publisher or sequence out of range).
	Expected   int64 `json:"expected"`
	Received   int64 `json:"received"`
	Distinct   int64 `json:"received_distinct"`
	Lost       int64 `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	Unexpected int64 `json:"unexpected"`
	Invalid    int64 `json:"invalid"`

	// Latency from the payload's send time to arrival, over first deliveries, in milliseconds.
	LatencyP50Ms   float64 `json:"latency_p50_ms"`
	LatencyP99Ms   float64 `json:"latency_p99_ms"`
	LatencyMaxMs   float64 `json:"latency_max_ms"`
	LatencyMeanMs  float64 `json:"latency_mean_ms"`
	LatencySamples uint64  `json:"latency_samples"`

	// PerSubMin/Max are the received counts over the subscribers that expect messages (over all
	// subscribers when none does).
	PerSubMin           int64 `json:"per_sub_min"`
	PerSubMax           int64 `json:"per_sub_max"`
	MatchingSubscribers int   `json:"matching_subscribers"`

	PublishError    string  `json:"publish_error,omitempty"` // the first one
	ConnectionsLost int     `json:"connections_lost"`
	TimedOut        bool    `json:"timed_out"`
	Complete        bool    `json:"complete"`
	WallS           float64 `json:"wall_s"`
	RunID           string  `json:"run_id"`

	Subs []subResult `json:"subs"`
}

type subResult struct {
	Index          int    `json:"index"`
	Broker         string `json:"broker"`
	Filter         string `json:"filter"`
	Expected       int64  `json:"expected"`
	Received       int64  `json:"received"`
	Distinct       int64  `json:"received_distinct"`
	Lost           int64  `json:"lost"`
	Duplicates     int64  `json:"duplicates"`
	Invalid        int64  `json:"invalid"`
	ConnectionLost bool   `json:"connection_lost"`
	ConnectionErr  string `json:"connection_error,omitempty"`
}

// subscriber is one subscribing client and its counters, guarded by mu.
type subscriber struct {
	idx    int
	broker string
	filter string
	client mqtt.Client

	// set before the handler can run, read-only afterwards
	pubs, count, size int
	runID             []byte // nil when the payload has no room for it

	mu       sync.Mutex
	received int64
	distinct int64
	dups     int64
	invalid  int64
	bits     []uint64 // (publisher*count + seq) bitmap, allocated on the first delivery
	hist     histogram
	lastNs   int64 // arrival of the last valid delivery
	expected int64 // -1 while still unknown
	connLost error
}

func (s *subscriber) onMessage(_ mqtt.Client, m mqtt.Message) {
	now := time.Now().UnixNano()
	p := m.Payload()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(p) != s.size || len(p) < headerLen {
		s.invalid++
		return
	}
	pub := binary.BigEndian.Uint64(p[0:8])
	seq := binary.BigEndian.Uint64(p[8:16])
	sent := int64(binary.BigEndian.Uint64(p[16:24]))
	if pub >= uint64(s.pubs) || seq >= uint64(s.count) ||
		(s.runID != nil && string(p[headerLen:headerLen+runIDLen]) != string(s.runID)) {
		s.invalid++
		return
	}
	s.received++
	if s.bits == nil {
		s.bits = make([]uint64, (s.pubs*s.count+63)/64)
	}
	bit := pub*uint64(s.count) + seq
	w, mask := bit/64, uint64(1)<<(bit%64)
	if s.bits[w]&mask != 0 {
		s.dups++
	} else {
		s.bits[w] |= mask
		s.distinct++
		s.hist.record(now - sent)
	}
	if now > s.lastNs {
		s.lastNs = now
	}
}

func (s *subscriber) onConnectionLost(_ mqtt.Client, err error) {
	s.mu.Lock()
	if err == nil {
		err = fmt.Errorf("connection lost")
	}
	s.connLost = err
	s.mu.Unlock()
}

// publisher is one publishing client; its counters are atomics because a publisher stuck in the
// client library may still be running when the report is made.
type publisher struct {
	idx    int
	broker string
	client mqtt.Client

	sent     atomic.Int64
	acked    atomic.Int64
	errs     atomic.Int64
	lastNs   atomic.Int64
	connLost atomic.Bool
	firstErr atomic.Value // string
}

// run publishes cfg.count messages starting at t0, paced by cfg.rate, with at most cfg.inflight
// publishes not yet completed.
func (p *publisher) run(ctx context.Context, cfg *config, t0 time.Time, runID []byte) {
	sem := make(chan struct{}, cfg.inflight)
	toks := make(chan mqtt.Token, cfg.inflight)
	waiter := make(chan struct{})
	go func() {
		defer close(waiter)
		for tok := range toks {
			select {
			case <-tok.Done():
			case <-ctx.Done():
				return
			}
			if err := tok.Error(); err != nil {
				p.errs.Add(1)
				p.firstErr.CompareAndSwap(nil, err.Error())
			} else {
				p.acked.Add(1)
				p.lastNs.Store(time.Now().UnixNano())
			}
			<-sem
		}
	}()
	// Paced publishers keep a fixed schedule (no drift), each shifted by a fraction of the
	// interval so that they do not all publish at the same instant.
	var interval, phase time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.rate)
		phase = interval * time.Duration(p.idx) / time.Duration(cfg.publishers)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	topic, qos := cfg.topic, byte(cfg.qos)
loop:
	for seq := 0; seq < cfg.count; seq++ {
		if ctx.Err() != nil {
			break
		}
		if interval > 0 {
			if d := time.Until(t0.Add(phase + time.Duration(seq)*interval)); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					break loop
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		// paho keeps the slice until the message is written (and stored for QoS>0): one per message.
		buf := make([]byte, cfg.size)
		binary.BigEndian.PutUint64(buf[0:8], uint64(p.idx))
		binary.BigEndian.PutUint64(buf[8:16], uint64(seq))
		if runID != nil {
			copy(buf[headerLen:], runID)
		}
		binary.BigEndian.PutUint64(buf[16:24], uint64(time.Now().UnixNano()))
		tok := p.client.Publish(topic, qos, false, buf)
		p.sent.Add(1)
		toks <- tok
	}
	close(toks)
	<-waiter
}

// bench runs the measurement; an error is a setup error.
func bench(cfg *config, progress io.Writer) (*result, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()

	var runID [runIDLen]byte
	if _, err := rand.Read(runID[:]); err != nil {
		return nil, err
	}
	var payloadRunID []byte
	if cfg.size >= headerLen+runIDLen {
		payloadRunID = runID[:]
	}
	idBase := cfg.clientPrefix + hex.EncodeToString(runID[:3])

	subs := make([]*subscriber, cfg.subscribers)
	for i := range subs {
		subs[i] = &subscriber{idx: i, broker: cfg.subBrokers[i%len(cfg.subBrokers)], filter: cfg.filterFor(i),
			pubs: cfg.publishers, count: cfg.count, size: cfg.size, runID: payloadRunID, expected: -1}
	}
	pubs := make([]*publisher, cfg.publishers)
	for i := range pubs {
		pubs[i] = &publisher{idx: i, broker: cfg.pubBrokers[i%len(cfg.pubBrokers)]}
	}
	var clientsMu sync.Mutex
	var clients []mqtt.Client
	defer func() {
		clientsMu.Lock()
		cs := clients
		clientsMu.Unlock()
		_ = parallel(len(cs), 32, func(i int) error { cs[i].Disconnect(100); return nil })
		if cfg.subPersistent {
			// Nothing stays behind: a clean connect with each subscriber's id ends its session.
			_ = parallel(len(subs), 32, func(i int) error {
				o := mqtt.NewClientOptions().AddBroker("tcp://" + subs[i].broker).
					SetClientID(fmt.Sprintf("%s-s%d", idBase, i)).SetCleanSession(true).
					SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
				c := mqtt.NewClient(o)
				if tok := c.Connect(); tok.WaitTimeout(6*time.Second) && tok.Error() == nil {
					c.Disconnect(50)
				}
				return nil
			})
		}
	}()
	connect := func(role string, i int, broker string, setup func(*mqtt.ClientOptions)) (mqtt.Client, error) {
		deadline, _ := ctx.Deadline()
		ct := min(10*time.Second, time.Until(deadline))
		if ct <= 0 {
			return nil, fmt.Errorf("setup did not finish within --timeout %s", cfg.timeout)
		}
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + broker).
			SetClientID(fmt.Sprintf("%s-%s%d", idBase, role[:1], i)).
			SetCleanSession(role != "subscriber" || !cfg.subPersistent).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(ct).SetKeepAlive(30 * time.Second).SetWriteTimeout(min(10*time.Second, cfg.timeout))
		setup(opts)
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(ct + time.Second) {
			return nil, fmt.Errorf("cannot connect %s %d to broker %s: no CONNACK within %s", role, i, broker, ct)
		}
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("cannot connect %s %d to broker %s: %v", role, i, broker, err)
		}
		clientsMu.Lock()
		clients = append(clients, c)
		clientsMu.Unlock()
		return c, nil
	}

	// Subscribers first, every SUBACK received before anyone publishes.
	err := parallel(len(subs), 16, func(i int) error {
		s := subs[i]
		c, err := connect("subscriber", i, s.broker, func(o *mqtt.ClientOptions) {
			o.SetConnectionLostHandler(s.onConnectionLost)
		})
		if err != nil {
			return err
		}
		s.client = c
		tok := c.Subscribe(s.filter, byte(cfg.subQoS), s.onMessage)
		if !tok.WaitTimeout(time.Until(deadlineOf(ctx))) {
			return fmt.Errorf("subscriber %d: no SUBACK from broker %s for %q", i, s.broker, s.filter)
		}
		if err := tok.Error(); err != nil {
			return fmt.Errorf("subscriber %d: subscribe %q on broker %s: %v", i, s.filter, s.broker, err)
		}
		if st, ok := tok.(*mqtt.SubscribeToken); ok {
			if rc, ok := st.Result()[s.filter]; ok && rc >= 0x80 {
				return fmt.Errorf("subscriber %d: broker %s refused the subscription to %q", i, s.broker, s.filter)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// In a cluster a subscription must reach the other brokers before publishes there can match it.
	if cfg.settle > 0 {
		select {
		case <-time.After(cfg.settle):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	err = parallel(len(pubs), 16, func(i int) error {
		p := pubs[i]
		c, err := connect("publisher", i, p.broker, func(o *mqtt.ClientOptions) {
			o.SetConnectionLostHandler(func(mqtt.Client, error) { p.connLost.Store(true) })
		})
		p.client = c
		return err
	})
	if err != nil {
		return nil, err
	}

	// Expected deliveries are final once the publishers stop; until then they are the plan.
	matching := 0
	for _, s := range subs {
		if cfg.expectPerSub < 0 && topicMatches(s.filter, cfg.topic) {
			matching++
		}
	}
	if cfg.expectPerSub >= 0 {
		matching = 0
		if cfg.expectPerSub > 0 {
			matching = len(subs)
		}
	}
	setExpected := func(sent int64) {
		for _, s := range subs {
			e := int64(0)
			switch {
			case cfg.expectPerSub >= 0:
				e = int64(cfg.expectPerSub)
			case topicMatches(s.filter, cfg.topic):
				e = sent
			}
			s.mu.Lock()
			s.expected = e
			s.mu.Unlock()
		}
	}
	setExpected(int64(cfg.publishers) * int64(cfg.count))

	if cfg.phaseFile != "" {
		if err := phaseHandshake(ctx, cfg.phaseFile, "ready"); err != nil {
			return nil, err
		}
	}

	t0 := time.Now()
	var pubWG sync.WaitGroup
	for _, p := range pubs {
		pubWG.Add(1)
		go func() { defer pubWG.Done(); p.run(ctx, cfg, t0, payloadRunID) }()
	}
	pubsDone := make(chan struct{})
	go func() { pubWG.Wait(); close(pubsDone) }()

	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if cfg.quiet {
			return
		}
		reportProgress(progress, t0, start, pubs, subs, stopProgress)
	}()
	defer func() { close(stopProgress); <-progressDone }()

	timedOut := false
	select {
	case <-pubsDone:
	case <-ctx.Done():
		timedOut = true
		// A publisher blocked inside the client library gets a moment; the report does not wait
		// for it beyond that.
		select {
		case <-pubsDone:
		case <-time.After(time.Second):
		}
	}
	var totalSent int64
	for _, p := range pubs {
		totalSent += p.sent.Load()
	}
	setExpected(totalSent)

	// Drain: until every subscriber has what it expects, --drain passes, or --timeout.
	if !timedOut {
		drainEnd := time.Now().Add(cfg.drain)
		tick := time.NewTicker(5 * time.Millisecond)
	drain:
		for !allArrived(subs) {
			select {
			case <-ctx.Done():
				timedOut = true
				break drain
			case <-tick.C:
				if !time.Now().Before(drainEnd) {
					break drain
				}
			}
		}
		tick.Stop()
	}
	// The load is over; the caller may read its counters before the clients disconnect. A run
	// that reached --timeout does not wait.
	if cfg.phaseFile != "" {
		if err := phaseHandshake(ctx, cfg.phaseFile, "done"); err != nil {
			timedOut = true
		}
	}

	res := &result{
		Publishers: cfg.publishers, Subscribers: cfg.subscribers, Count: cfg.count, Size: cfg.size,
		QoS: cfg.qos, SubQoS: cfg.subQoS, Topic: cfg.topic, PubBrokers: cfg.pubBrokers,
		SubBrokers: cfg.subBrokers, Rate: cfg.rate, Inflight: cfg.inflight,
		MatchingSubscribers: matching, TimedOut: timedOut, RunID: hex.EncodeToString(runID[:]),
		Subs: make([]subResult, 0, len(subs)),
	}
	var lastPubNs int64
	for _, p := range pubs {
		res.Published += p.sent.Load()
		res.Acked += p.acked.Load()
		res.PublishErrors += p.errs.Load()
		lastPubNs = max(lastPubNs, p.lastNs.Load())
		if p.connLost.Load() {
			res.ConnectionsLost++
		}
		if e, ok := p.firstErr.Load().(string); ok && res.PublishError == "" {
			res.PublishError = fmt.Sprintf("publisher %d (%s): %s", p.idx, p.broker, e)
		}
	}
	if lastPubNs > 0 {
		res.PublishDurationS = float64(lastPubNs-t0.UnixNano()) / 1e9
		res.PublishRate = rate(res.Acked, res.PublishDurationS)
	}
	var agg aggHistogram
	var lastSubNs int64
	res.PerSubMin = math.MaxInt64
	counted := 0
	for _, s := range subs {
		s.mu.Lock()
		sr := subResult{Index: s.idx, Broker: s.broker, Filter: s.filter, Expected: s.expected,
			Received: s.received, Distinct: s.distinct, Duplicates: s.dups, Invalid: s.invalid,
			ConnectionLost: s.connLost != nil}
		if s.connLost != nil {
			sr.ConnectionErr = s.connLost.Error()
		}
		agg.merge(&s.hist)
		lastSubNs = max(lastSubNs, s.lastNs)
		s.mu.Unlock()
		sr.Lost = max(0, sr.Expected-sr.Distinct)
		res.Expected += sr.Expected
		res.Received += sr.Received
		res.Distinct += sr.Distinct
		res.Lost += sr.Lost
		res.Duplicates += sr.Duplicates
		res.Unexpected += max(0, sr.Distinct-sr.Expected)
		res.Invalid += sr.Invalid
		if sr.ConnectionLost {
			res.ConnectionsLost++
		}
		if sr.Expected > 0 || matching == 0 {
			res.PerSubMin = min(res.PerSubMin, sr.Received)
			res.PerSubMax = max(res.PerSubMax, sr.Received)
			counted++
		}
		res.Subs = append(res.Subs, sr)
	}
	if counted == 0 {
		res.PerSubMin = 0
	}
	if lastSubNs > 0 {
		res.E2EDurationS = float64(lastSubNs-t0.UnixNano()) / 1e9
		res.DeliveryRate = rate(res.Received, res.E2EDurationS)
	}
	res.LatencyP50Ms = agg.quantileMs(0.50)
	res.LatencyP99Ms = agg.quantileMs(0.99)
	res.LatencyMaxMs = agg.maxMs()
	res.LatencyMeanMs = agg.meanMs()
	res.LatencySamples = agg.n
	res.Complete = res.Lost == 0 && !timedOut && res.Published == int64(cfg.publishers)*int64(cfg.count)
	res.WallS = time.Since(start).Seconds()
	return res, nil
}

// phaseHandshake writes word to path, then waits until the caller removes the file (or ctx ends).
func phaseHandshake(ctx context.Context, path, word string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := os.WriteFile(path, []byte(word+"\n"), 0o644); err != nil {
		return fmt.Errorf("--phase-file: %v", err)
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		select {
		case <-ctx.Done():
			_ = os.Remove(path)
			return fmt.Errorf("--phase-file %s (%s) was not removed within --timeout", path, word)
		case <-tick.C:
		}
	}
}

func rate(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// allArrived reports whether every subscriber has its expected distinct messages.
func allArrived(subs []*subscriber) bool {
	for _, s := range subs {
		s.mu.Lock()
		ok := s.expected >= 0 && s.distinct >= s.expected
		s.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// reportProgress prints one line a second to w, starting once the run has lasted 3 s.
func reportProgress(w io.Writer, t0, start time.Time, pubs []*publisher, subs []*subscriber, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastDelivered int64
	lastAt := t0
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			var sent, acked, delivered, expected int64
			for _, p := range pubs {
				sent += p.sent.Load()
				acked += p.acked.Load()
			}
			for _, s := range subs {
				s.mu.Lock()
				delivered += s.received
				expected += max(0, s.expected)
				s.mu.Unlock()
			}
			if now.Sub(start) >= 3*time.Second {
				fmt.Fprintf(w, "mqbench: %5.1fs published %d (completed %d), delivered %d of %d expected, %.0f deliveries/s\n",
					now.Sub(t0).Seconds(), sent, acked, delivered, expected,
					float64(delivered-lastDelivered)/now.Sub(lastAt).Seconds())
			}
			lastDelivered, lastAt = delivered, now
		}
	}
}

// parallel runs f(0..n-1) with at most width at once and returns the first error; after an error
// it starts no more calls.
func parallel(n, width int, f func(i int) error) error {
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := 0; i < n; i++ {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil {
		return nil
	}
	return first
}
