package bridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mosquitto-ha/sysparse"
)

// ErrNoLog means the local broker does not publish the log lines the agent needs.
var ErrNoLog = errors.New("bridge: broker does not publish the needed $SYS/broker/log lines")

// PeerAddr names a peer broker.
type PeerAddr struct {
	Name    string
	Address string // host:port
	// TLS, when set, makes the connection to this broker use TLS.
	TLS *tls.Config
}

// Options configure an Agent. Zero values take the defaults of the cluster file.
type Options struct {
	Cluster string
	Node    string
	// Local is this node's broker, host:port; LocalTLS, when set, makes it a TLS connection.
	Local    string
	LocalTLS *tls.Config
	Peers    []PeerAddr
	// Username and Password authenticate every agent connection (optional).
	Username, Password string
	ForwardPrefix      string
	// IgnoreClients never count as interest (health checkers); agent connections never do.
	IgnoreClients []string
	// StatePath is where the local interest is kept across restarts; "" keeps none.
	StatePath        string
	BufferMessages   int
	BufferBytes      int
	MaxInflight      int
	Keepalive        time.Duration
	SnapshotInterval time.Duration
	// ProbeTimeout bounds the wait for the probe's own log lines.
	ProbeTimeout time.Duration
	// ClusterSecret, when set, signs every relay and interest message (HMAC-SHA256); messages
	// without a valid signature are dropped and counted as forged.
	ClusterSecret []byte
	// Limits bound what peers may send.
	Limits Limits
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.ForwardPrefix == "" {
		o.ForwardPrefix = "$forward/"
	}
	if o.BufferMessages <= 0 {
		o.BufferMessages = 100000
	}
	if o.BufferBytes <= 0 {
		o.BufferBytes = 64 << 20
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = 16
	}
	if o.Keepalive <= 0 {
		o.Keepalive = 10 * time.Second
	}
	if o.SnapshotInterval <= 0 {
		o.SnapshotInterval = time.Second
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 5 * time.Second
	}
	if o.Limits.MaxFilters <= 0 {
		o.Limits.MaxFilters = 1 << 20
	}
	if o.Limits.MaxFilterBytes <= 0 {
		o.Limits.MaxFilterBytes = maxFilterBytes
	}
	if o.Limits.MaxInterestBytes <= 0 {
		o.Limits.MaxInterestBytes = 64 << 20
	}
	if o.Limits.MaxPayloadBytes <= 0 {
		o.Limits.MaxPayloadBytes = 268435455 // the MQTT maximum
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// maxInbox bounds the local messages waiting for the dispatcher; past it QoS 0 publishes are
// dropped (as Mosquitto itself drops for a slow subscriber). QoS 1/2 are bounded by the broker's
// in-flight window, since the agent acknowledges them only once relayed.
const maxInbox = 200000

// snapshotBytesPerSecond bounds the retained snapshots an agent publishes while its interest
// keeps changing.
const snapshotBytesPerSecond = 256 << 10

// republishWindowQoS1 bounds unacknowledged QoS 1 republishes on the local connection; QoS 2
// ones are bounded by Options.MaxInflight.
const republishWindowQoS1 = 256

// Agent is the sidecar of one broker. Create it with New and run it with Run.
type Agent struct {
	opts    Options
	log     *slog.Logger
	topics  Topics
	localID string
	// peers is replaced, never changed in place, when a reload adds or removes nodes.
	peers atomic.Pointer[[]*peer]
	// limits can change on reload; peer goroutines and the dispatcher read them.
	limits atomic.Pointer[Limits]
	// reloads carries peer changes to the dispatcher, which owns starting and stopping links.
	reloads  chan []PeerAddr
	reloadMu sync.Mutex

	local  *link
	signer *signer
	// dollar is the set of peers' '$' filters the local connection subscribes to.
	dollarMu    sync.Mutex
	dollar      map[string]bool
	dollarRetry bool // a change to the '$' subscriptions failed; owned by the dispatcher
	// Tokens per unacknowledged republish on the local connection, by QoS.
	republishQoS1, republishQoS2 chan struct{}
	parser                       *sysparse.Parser
	model                        *localInterest
	epoch                        uint64

	inbox inbox

	// Owned by the dispatch goroutine.
	seq           uint64
	wantAll       bool
	wantAllReason string
	snapshotDirty bool
	lastSnapshot  time.Time
	journal       *journal // nil without a state file
	brokerStart   time.Time
	acct          sysAccount // $SYS ticks and the clients accounted for, see accounting.go
	lastStatus    time.Time
	// lastSnapshotPayload is the snapshot as last published, to recognise it when it comes back.
	lastSnapshotPayload atomic.Pointer[[]byte]
	snapshotBusy        atomic.Bool  // a snapshot is being built and published
	snapshotEvery       atomic.Int64 // least nanoseconds between snapshots, grows with their size

	// Counters and status for Stats.
	statsMu        sync.Mutex
	status         Status
	republished    atomic.Uint64
	relayedIn      atomic.Uint64
	forged         atomic.Uint64 // relays that failed the signature check
	oversized      atomic.Uint64 // relays over Limits.MaxPayloadBytes
	controlBytes   atomic.Uint64 // interest snapshots and deltas published
	forgedInterest atomic.Uint64 // foreign publishes on this node's interest topics

	closeOnce sync.Once
}

// New checks the options and prepares an agent; it opens no connection.
func New(opts Options) (*Agent, error) {
	opts.setDefaults()
	if opts.Cluster == "" || opts.Node == "" || opts.Local == "" {
		return nil, errors.New("bridge: Cluster, Node and Local are required")
	}
	a := &Agent{
		opts:   opts,
		log:    opts.Logger.With("node", opts.Node),
		topics: NewTopics(opts.Cluster, opts.ForwardPrefix),
		parser: sysparse.NewParser(),
		// Epochs grow with each run, so a peer can tell an earlier run's retained delta.
		epoch: uint64(time.Now().UnixNano()),
		acct:  sysAccount{total: -1},
	}
	a.localID = a.topics.LocalID(opts.Node)
	a.republishQoS1 = make(chan struct{}, republishWindowQoS1)
	a.republishQoS2 = make(chan struct{}, opts.MaxInflight)
	a.signer = newSigner(opts.ClusterSecret)
	ignore := map[string]bool{}
	for _, id := range opts.IgnoreClients {
		ignore[id] = true
	}
	prefix := a.topics.ClientPrefix()
	a.model = newLocalInterest(func(id string) bool { return ignore[id] || strings.HasPrefix(id, prefix) })
	a.inbox.notify = make(chan struct{}, 1)
	var peers []*peer
	for _, p := range opts.Peers {
		peers = append(peers, newPeer(p, a))
	}
	a.peers.Store(&peers)
	lim := opts.Limits
	a.limits.Store(&lim)
	a.reloads = make(chan []PeerAddr, 1)
	return a, nil
}

// Run connects, relays and announces until ctx ends, then disconnects cleanly. It returns an
// error only when the agent cannot work at all (for example ErrNoLog).
func (a *Agent) Run(ctx context.Context) error {
	if a.opts.StatePath != "" {
		if err := a.restoreState(); err != nil {
			return err
		}
	}
	// The agent's own connections log lines too; their connect lines may predate the log
	// subscription, so the parser is told their ids to split those lines.
	for _, id := range a.ownIDs() {
		a.parser.Remember(id)
	}
	a.setWantAll("fresh start: clients that connected before the agent are unknown until $SYS/broker/clients/total is accounted for")

	// The probe proves the broker publishes the log lines before anything depends on them.
	for {
		res, err := Probe(ctx, a.probeOptions())
		if err == nil && len(res.Missing) > 0 {
			return fmt.Errorf("%w: missing %s", ErrNoLog, strings.Join(res.Missing, ", "))
		}
		if err == nil {
			if res.AnonymousForward {
				a.log.Warn("SECURITY: an anonymous client can publish to the forward prefix; apply the ACL printed by `mosquitto-ha mosquitto`", "prefix", a.opts.ForwardPrefix)
			}
			break
		}
		a.log.Warn("local broker not ready, retrying", "addr", a.opts.Local, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(jitter(time.Second)):
		}
	}

	var wg sync.WaitGroup
	a.local = a.localLink()
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.local.run(ctx)
	}()
	for _, p := range a.peerList() {
		a.startPeer(ctx, &wg, p)
	}
	a.log.Info("agent started", "local", a.opts.Local, "peers", len(a.peerList()), "epoch", a.epoch)

	a.dispatch(ctx, &wg)

	wg.Wait()
	a.Close()
	if a.journal != nil {
		a.compactState()
		a.journal.close()
	}
	a.log.Info("agent stopped")
	return nil
}

// Close disconnects every connection. Safe to call twice.
func (a *Agent) Close() {
	a.closeOnce.Do(func() {
		for _, p := range a.peerList() {
			p.disconnect()
		}
		if c := a.localConn(); c != nil {
			// The agent's last word: it stopped on purpose (the will says the same on a crash).
			said := make(chan error, 1)
			c.Publish(a.topics.Status(a.opts.Node), 1, true, a.willPayload(), func(err error) { said <- err })
			select {
			case <-said:
			case <-time.After(time.Second):
			}
			c.Close()
		}
	})
}

func (a *Agent) peerList() []*peer { return *a.peers.Load() }

// startPeer connects a peer link and starts its sender; p.stop ends both.
func (a *Agent) startPeer(ctx context.Context, wg *sync.WaitGroup, p *peer) {
	pctx, cancel := context.WithCancel(ctx)
	p.stop = cancel
	p.link = a.peerLink(p)
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.link.run(pctx)
	}()
	go func() {
		defer wg.Done()
		p.send(pctx, a)
	}()
}

// Reload changes what can change while running: the peers (nodes added or removed) and the
// limits. Links to peers whose name and address are unchanged are kept. Safe for concurrent use.
func (a *Agent) Reload(peers []PeerAddr, lim Limits) {
	def := Options{Limits: lim}
	def.setDefaults()
	a.limits.Store(&def.Limits)
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	select {
	case <-a.reloads: // a newer reload replaces one not applied yet
	default:
	}
	a.reloads <- peers
}

// applyPeers runs on the dispatcher: it stops removed or moved peers and starts new ones.
func (a *Agent) applyPeers(ctx context.Context, wg *sync.WaitGroup, want []PeerAddr) {
	old := map[string]*peer{}
	for _, p := range a.peerList() {
		old[p.name] = p
	}
	var next []*peer
	for _, pa := range want {
		if p, ok := old[pa.Name]; ok && p.addr == pa.Address {
			next = append(next, p)
			delete(old, pa.Name)
			continue
		}
		p := newPeer(pa, a)
		a.startPeer(ctx, wg, p)
		next = append(next, p)
		a.log.Info("peer added", "peer", pa.Name, "addr", pa.Address)
	}
	a.peers.Store(&next)
	for _, p := range old {
		p.stop()
		p.queue.setParked(true) // a removed peer: nothing waits for it any more
		p.disconnect()
		a.log.Info("peer removed", "peer", p.name, "dropped_buffered", p.queue.Len())
	}
}

func (a *Agent) probeOptions() ProbeOptions {
	return ProbeOptions{Address: a.opts.Local, TLS: a.opts.LocalTLS, ClientID: a.topics.ClientPrefix() + a.opts.Node + "-probe",
		Username: a.opts.Username, Password: a.opts.Password, Timeout: a.opts.ProbeTimeout,
		Topics: a.topics}
}

// dispatch handles local messages in arrival order until ctx ends.
func (a *Agent) dispatch(ctx context.Context, wg *sync.WaitGroup) {
	var batch []*message
	for {
		wait := 100 * time.Millisecond
		if a.snapshotDirty {
			if d := time.Until(a.lastSnapshot.Add(a.snapshotInterval())); d < wait {
				wait = max(d, time.Millisecond)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-a.inbox.notify:
		case peers := <-a.reloads:
			a.applyPeers(ctx, wg, peers)
		case <-time.After(wait):
		}
		a.syncDollarSubs(ctx)
		batch = a.inbox.take(batch[:0])
		for _, m := range batch {
			a.handleLocal(ctx, m)
		}
		clear(batch)
		a.afterBatch()
	}
}

// checkOwnInterest handles a message on this node's own interest topics. No-local keeps the
// agent's live publishes away, so it is either the retained snapshot of this or an earlier run of
// the agent, or somebody else's write: then the snapshot is restored at once.
func (a *Agent) checkOwnInterest(topic string, payload []byte) {
	if last := a.lastSnapshotPayload.Load(); last != nil && bytes.Equal(payload, *last) {
		return
	}
	foreign := true
	if p, err := a.signer.open(topic, payload); err == nil {
		msg, err := decodeInterest(p, *a.limits.Load())
		// An earlier run's snapshot or delta, or this run's own (retained, sent again when the
		// local connection comes back), is ours.
		if err == nil && (msg.Epoch != a.epoch || msg.Seq <= a.seq) {
			foreign = false
		}
	}
	if foreign {
		a.forgedInterest.Add(1)
		a.log.Warn("foreign publish on this node's interest topic: restoring the snapshot", "topic", topic, "bytes", len(payload))
	}
	a.publishSnapshot()
}

func (a *Agent) handleSys(topic string, payload []byte) {
	switch {
	case topic == "$SYS/broker/clients/total":
		if n, err := strconv.Atoi(strings.TrimSpace(string(payload))); err == nil {
			a.clientsTotal(n)
		}
		return
	case topic == "$SYS/broker/uptime":
		// "<n> seconds": a broker that started again lost every clean session.
		secs, err := strconv.Atoi(strings.TrimSuffix(string(payload), " seconds"))
		if err != nil {
			return
		}
		start := time.Now().Add(-time.Duration(secs) * time.Second)
		if !a.brokerStart.IsZero() && start.Sub(a.brokerStart) > 5*time.Second {
			a.log.Info("local broker restarted: dropping clean sessions")
			a.model.brokerRestarted()
			a.record(journalEntry{Op: "restart"})
		}
		a.brokerStart = start
		a.sysTick()
		return
	case !strings.HasPrefix(topic, "$SYS/broker/log/"):
		return
	}
	ev, err := a.parser.Parse(topic, payload)
	if err != nil {
		if strings.HasSuffix(topic, "/subscribe") {
			a.model.MalformedSubscribe()
			a.record(journalEntry{Op: "malformed"})
			a.log.Warn("unparsable subscribe line: relaying everything here from now on", "line", string(payload), "err", err)
		} else {
			a.log.Warn("unparsable log line", "topic", topic, "line", string(payload), "err", err)
		}
		return
	}
	if ev.Kind == sysparse.Ignored {
		return
	}
	a.log.Debug("log event", "kind", ev.Kind, "client", ev.ClientID, "filter", ev.Filter, "readings", len(ev.Readings))
	if len(ev.Readings) > 1 {
		a.log.Warn("ambiguous log line: taking every reading", "line", string(payload), "readings", len(ev.Readings))
	}
	if ev.Truncated {
		a.log.Warn("truncated log line: widening", "line_bytes", len(payload), "widened", ev.Widened)
	}
	a.model.Apply(ev)
	a.record(journalEntry{Event: &ev})
}

// record queues a journal entry for the event just applied to the model.
func (a *Agent) record(e journalEntry) {
	if a.journal != nil {
		a.journal.add(e)
	}
}

// linkIDs are the long-lived connections of the cluster to this broker, which the broker counts
// in $SYS/broker/clients/total even when their connect lines came before the agent's.
func (a *Agent) linkIDs() []string {
	ids := []string{a.localID}
	for _, p := range a.peerList() {
		ids = append(ids, a.topics.LinkID(p.name, a.opts.Node))
	}
	return ids
}

// ownIDs are the ids of every cluster connection to this broker: links, peers' retained pulls,
// and this agent's own retained readers.
func (a *Agent) ownIDs() []string {
	ids := a.linkIDs()
	for _, p := range a.peerList() {
		ids = append(ids, a.topics.PullID(p.name, a.opts.Node), a.topics.ReaderID(a.opts.Node, p.name))
	}
	return ids
}

func (a *Agent) setWantAll(reason string) {
	a.wantAllReason = reason
	a.model.uncertain = true
	if a.wantAll {
		return
	}
	a.log.Info("advertising interest in everything", "reason", reason)
	a.wantAll = true
	// A delta, not only the snapshot: peers in sync skip a snapshot of a sequence they hold.
	a.seq++
	a.publishDelta(nil)
}

// afterBatch announces the batch's interest changes as one delta, refreshes the snapshot when
// due, and keeps the state file current.
func (a *Agent) afterBatch() {
	if changes := a.model.Drain(); len(changes) > 0 {
		a.seq++
		a.publishDelta(changes)
	}
	if a.snapshotDirty && time.Since(a.lastSnapshot) >= a.snapshotInterval() {
		a.publishSnapshot()
	}
	if a.journal != nil {
		a.persistState()
	}
	a.updateStatus()
	if time.Since(a.lastStatus) >= statusInterval {
		a.publishStatus()
	}
}

func (a *Agent) publishDelta(changes []Change) {
	a.snapshotDirty = true
	c := a.localConn()
	if c == nil {
		return // peers will see the gap and wait for the snapshot sent on reconnect
	}
	t := a.topics.InterestDelta(a.opts.Node)
	// Retained, so a peer that subscribes sees whether the snapshot it gets is behind.
	p := a.signer.seal(t, encodeDelta(a.epoch, a.seq, a.wantAll, changes))
	a.controlBytes.Add(uint64(len(p)))
	c.Publish(t, 1, true, p, nil)
}

func (a *Agent) publishSnapshot() {
	c := a.localConn()
	if c == nil || !a.snapshotBusy.CompareAndSwap(false, true) {
		return // still dirty: retried after a later batch
	}
	seq, all := a.seq, a.wantAll
	a.snapshotDirty = false
	a.lastSnapshot = time.Now()
	// Built aside, so a large interest set does not hold up the log lines behind it. The tree may
	// already hold changes after seq; peers apply changes with set semantics, so replaying those
	// deltas on top changes nothing.
	go func() {
		defer a.snapshotBusy.Store(false)
		t := a.topics.Interest(a.opts.Node)
		p := a.signer.seal(t, encodeSnapshot(a.epoch, seq, all, a.model.tree.Filters()))
		a.lastSnapshotPayload.Store(&p)
		c.Publish(t, 1, true, p, nil)
		a.controlBytes.Add(uint64(len(p)))
		// Large interest sets are resent less often: at most about 256 KiB/s of snapshots while
		// the interest keeps changing (deltas carry the changes; a joining peer relays everything
		// until the next snapshot, so this trades traffic for a longer wide window, never for
		// delivery).
		a.snapshotEvery.Store(int64(max(a.opts.SnapshotInterval, time.Duration(len(p))*time.Second/snapshotBytesPerSecond)))
	}()
}

// snapshotInterval is the least time between two snapshots.
func (a *Agent) snapshotInterval() time.Duration {
	return max(a.opts.SnapshotInterval, time.Duration(a.snapshotEvery.Load()))
}

// reconnected marks, in the inbox, where a new local connection begins.
var reconnected = &message{QoS: 1}

// inbox holds local messages between paho's handler, which must never block, and the dispatcher.
type inbox struct {
	mu      sync.Mutex
	msgs    []*message
	notify  chan struct{}
	dropped atomic.Uint64
}

func (b *inbox) put(m *message) {
	b.mu.Lock()
	// Log lines are never dropped: a lost subscribe line would under-serve its client for good.
	if len(b.msgs) >= maxInbox && m.QoS == 0 && !strings.HasPrefix(m.Topic, "$SYS/") {
		b.mu.Unlock()
		b.dropped.Add(1)
		return
	}
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	b.wake()
}

func (b *inbox) wake() {
	select {
	case b.notify <- struct{}{}:
	default:
	}
}

// take swaps the waiting messages into buf.
func (b *inbox) take(buf []*message) []*message {
	b.mu.Lock()
	buf, b.msgs = b.msgs, buf
	b.mu.Unlock()
	return buf
}

func jitter(d time.Duration) time.Duration {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return d/2 + time.Duration(binary.LittleEndian.Uint16(b[:]))*d/65536
}
