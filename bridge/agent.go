// agent.go owns the Agent's lifecycle: New wires the workers together, Run starts the local and
// peer links and the dispatcher and waits for them, Reload swaps peers and limits, Close says the
// last word. What each worker does lives in its own file (see the list in doc.go).

package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mosquitto-ha/bridge/mqttconn"
	"mosquitto-ha/sysparse"
)

// ErrNoLog means the local broker does not publish the log lines the agent needs.
var ErrNoLog = errors.New("bridge: broker does not publish the needed $SYS/broker/log lines")

// Agent is the sidecar of one broker. Create it with New and run it with Run.
type Agent struct {
	opts    Options
	log     *slog.Logger
	topics  Topics
	localID string
	// peers is replaced, never changed in place, when a reload adds or removes nodes.
	peers atomic.Pointer[[]*peer]
	// peerEnv is what every peer is built with.
	peerEnv *peerEnv
	// limits can change on reload; peer goroutines and the dispatcher read them.
	limits atomic.Pointer[Limits]
	// reloads carries peer changes to the dispatcher, which owns starting and stopping links.
	reloads  chan []PeerAddr
	reloadMu sync.Mutex

	local  *mqttconn.Link
	epoch  *localEpoch // of the local session, for the relays' identity
	signer *signer
	dollar *dollarSubs
	in     *relayIn
	ret    *retainedState
	ann    *announcer
	parser *sysparse.Parser
	model  *localInterest
	shares *shareRouter // relay choice for shared subscriptions, on the dispatcher
	// catchUp routes local publishes and holds those a peer missed for its late subscriptions.
	catchUp *catchUp

	inbox inbox

	// Sessions that follow their client (sessions.go); sess is nil when they are off.
	sessOpts                              SessionOptions
	sess                                  *sessionRegistry // owned by the dispatcher, but for its locked parts
	sessWork                              *sessionWorker
	sessChanged                           atomic.Bool       // a peer's registry arrived
	sessPlanned                           time.Time         // dispatcher's
	sessNewest                            map[string]heldBy // dispatcher's: the peers' registries merged (sessionplan.go)
	sessHeld, sessConnected, sessReplicas atomic.Int64
	sessBytes                             atomic.Uint64

	// localOnce: the local connection came up before; sessionLost: a later one found no
	// session (noteSession, sys.go).
	localOnce, sessionLost atomic.Bool
	// countNudging: a connection that makes the broker publish its client counts is up;
	// countsRead: the dispatcher has both counts (countnudge.go).
	countNudging, countsRead atomic.Bool

	// Owned by the dispatch goroutine.
	journal     *journal // nil without a state file
	brokerStart time.Time
	acct        sysAccount // $SYS ticks and the clients accounted for, see accounting.go
	lastStatus  time.Time
	takeovers   map[string]takeoverLog // cluster ids taken over, for the rate of the Warn (sys.go)
	authRefused bool                   // the local broker refuses the agent's credentials, see checkLocalAuth

	// The status as the dispatcher last copied it, for Status.
	statsMu sync.Mutex
	status  Status

	closeOnce sync.Once
}

// connSettings are what every connection of the agent shares: keepalive and credentials.
type connSettings struct {
	keepalive          time.Duration
	username, password string
	readPause          time.Duration // Options.ReadPause
}

// options are the CONNECT options of one agent connection.
func (s connSettings) options(clientID string, protocol byte, clean bool, tlsConf *tls.Config) mqttconn.ConnectOptions {
	return mqttconn.ConnectOptions{ClientID: clientID, Protocol: protocol, CleanSession: clean,
		Keepalive: s.keepalive, Username: s.username, Password: s.password, TLS: tlsConf, ReadPause: s.readPause}
}

// New checks the options and prepares an agent; it opens no connection.
func New(opts Options) (*Agent, error) {
	opts = opts.withDefaults()
	if opts.Cluster == "" || opts.Node == "" || opts.Local == "" {
		return nil, errors.New("bridge: Cluster, Node and Local are required")
	}
	a := &Agent{
		opts:   opts,
		log:    opts.Logger.With("node", opts.Node),
		topics: NewTopics(opts.Cluster, opts.ForwardPrefix).WithIDSecret(opts.ClusterSecret),
		parser: sysparse.NewParser(),
		acct:   sysAccount{total: -1, connected: -1},
		status: Status{Version: opts.Version, Started: time.Now().UTC()},
	}
	a.localID = a.topics.LocalID(opts.Node)
	a.signer = newSigner(opts.ClusterSecret)
	lim := opts.Limits
	a.limits.Store(&lim)
	ignore := map[string]bool{}
	for _, id := range opts.IgnoreClients {
		ignore[id] = true
	}
	prefix := a.topics.ClientPrefix()
	a.model = newLocalInterest(func(id string) bool { return ignore[id] || strings.HasPrefix(id, prefix) })
	a.shares = newShareRouter(a.model.shares)
	a.inbox.notify = make(chan struct{}, 1)
	conn := connSettings{keepalive: opts.Keepalive, username: opts.Username, password: opts.Password, readPause: opts.ReadPause}
	a.dollar = newDollarSubs(a.topics, a.log)
	a.local = a.localLink(conn)
	epochPath := ""
	if opts.StatePath != "" {
		epochPath = opts.StatePath + ".epoch"
	}
	a.epoch = newLocalEpoch(epochPath)
	wire := relayWire{topics: a.topics, node: opts.Node, signer: a.signer}
	a.in = &relayIn{local: a.local, wire: wire, limits: &a.limits, log: a.log,
		qos1: make(chan struct{}, republishWindowQoS1), qos2: make(chan struct{}, opts.MaxInflight),
		dedupe: newDedupe(opts.StatePath, DefaultDedupeWindow, a.log)}
	// Run adds the register's file.
	a.ret = newRetainedState(opts.Node, a.topics, newRetainReg(DefaultMaxRetainedTopics, retainedTombstoneTTL), a.in, a.log)
	a.ret.dialer = localDialer{addr: opts.Local, tls: opts.LocalTLS, conn: conn, clientID: a.topics.ReaderID(opts.Node, "verify")}
	a.in.ret = a.ret
	a.ann = &announcer{node: opts.Node, topics: a.topics, signer: a.signer, local: a.local,
		model: a.model, limits: &a.limits, log: a.log, minInterval: opts.SnapshotInterval,
		// Epochs grow with each run, so a peer can tell an earlier run's retained delta.
		epoch: uint64(time.Now().UnixNano())}
	a.catchUp = newCatchUp()
	a.ann.stampOK = a.peersReadStamps
	a.peerEnv = &peerEnv{node: opts.Node, topics: a.topics, conn: conn, wire: wire, signer: a.signer,
		catchUp: a.catchUp, limits: &a.limits, log: a.log, bufferMessages: opts.BufferMessages,
		bufferBytes: opts.BufferBytes, maxInflight: opts.MaxInflight,
		push: &retainedPush{node: opts.Node, topics: a.topics, conn: conn, localAddr: opts.Local,
			localTLS: opts.LocalTLS, state: a.ret}}
	if opts.Sessions.Enabled {
		if err := CheckSessionPatterns(opts.Sessions.Clients); err != nil {
			return nil, err
		}
		a.sessOpts = opts.Sessions
		a.sess = newSessionRegistry(a.model.ignore)
		a.sessWork = newSessionWorker(opts.Local, opts.LocalTLS, conn, a.sess, opts.Sessions.ConnectRate, a.log.With("worker", "sessions"))
		a.peerEnv.sessions = a.sess
		a.peerEnv.sessionsChanged = func() {
			a.sessChanged.Store(true)
			a.inbox.wake()
		}
	}
	var peers []*peer
	for _, p := range opts.Peers {
		peers = append(peers, newPeer(p, a.peerEnv))
	}
	a.peers.Store(&peers)
	a.reloads = make(chan []PeerAddr, 1)
	// Until the dispatcher copies its first state, Status says what peers assume of an agent
	// they have not heard yet: it wants everything.
	a.status.WantAll, a.status.WantAllReason = true, "starting: the broker's clients are not known yet"
	return a, nil
}

// Run connects, relays and announces until ctx ends, then disconnects cleanly. It returns an
// error only when the agent cannot work at all: ErrNoLog, or ErrProbeRefused when the local
// broker refuses the agent's credentials. It retries transient failures (nothing listening
// yet, timeouts).
func (a *Agent) Run(ctx context.Context) error {
	if a.opts.StatePath != "" {
		if err := a.restoreState(); err != nil {
			return err
		}
		if err := a.ret.load(a.opts.StatePath + ".retained"); err != nil {
			return err
		}
	}
	if err := a.epoch.load(); err != nil {
		return err
	}
	if err := a.in.dedupe.load(); err != nil {
		return err
	}
	defer a.in.dedupe.close()
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
		if errors.Is(err, ErrProbeRefused) {
			// Permanent: the broker answers, and will answer the same until someone changes the
			// credentials or the broker's accounts. Retrying would hide it behind "not ready".
			return fmt.Errorf("local broker refused the agent's credentials (retrying cannot help): %w", err)
		}
		a.log.Warn("local broker not ready, retrying", "addr", a.opts.Local, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(mqttconn.Jitter(time.Second)):
		}
	}

	a.removePlainSession(ctx) // before the local link: see plainid.go

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.local.Run(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.dollar.run(ctx, a.localConn, a.peerList)
	}()
	for _, p := range a.peerList() {
		p.start(ctx, &wg)
	}
	if a.sessionsOn() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.sessWork.run(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.ret.verifyLoop(ctx)
	}()
	a.log.Info("agent started", "local", a.opts.Local, "peers", len(a.peerList()), "epoch", a.ann.epoch)

	a.dispatch(ctx, &wg)

	wg.Wait()
	a.Close()
	if a.journal != nil {
		a.compactState()
		a.journal.close()
	}
	a.ret.reg.close()
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
			c.Publish(a.topics.Status(a.opts.Node), 1, true, a.stopPayload(), func(err error) { said <- err })
			select {
			case <-said:
			case <-time.After(time.Second):
			}
			c.Close()
		}
	})
}

func (a *Agent) peerList() []*peer { return *a.peers.Load() }

// peersReadStamps reports whether every peer's agent reads stamped interest deltas (its signed
// status said interest_wire 3 or more); an older peer would refuse them.
func (a *Agent) peersReadStamps() bool {
	for _, p := range a.peerList() {
		if p.interestWire.Load() < 3 {
			return false
		}
	}
	return true
}

// Reload changes what can change while running: the peers (nodes added or removed) and the
// limits. Links to peers whose name and address are unchanged are kept. Safe for concurrent use.
func (a *Agent) Reload(peers []PeerAddr, lim Limits) {
	lim = lim.withDefaults()
	a.limits.Store(&lim)
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
		p := newPeer(pa, a.peerEnv)
		p.start(ctx, wg)
		next = append(next, p)
		a.log.Info("peer added", "peer", pa.Name, "addr", pa.Address)
	}
	a.peers.Store(&next)
	a.sessNewest = nil // the registries of removed peers no longer count
	for _, p := range old {
		p.stop()
		p.queue.setParked(true) // a removed peer: nothing waits for it any more
		p.disconnect()
		a.log.Info("peer removed", "peer", p.name, "dropped_buffered", p.queue.Len())
	}
}

func (a *Agent) probeOptions() ProbeOptions {
	return ProbeOptions{Address: a.opts.Local, TLS: a.opts.LocalTLS, ClientID: a.topics.ProbeID(a.opts.Node),
		Username: a.opts.Username, Password: a.opts.Password, Timeout: a.opts.ProbeTimeout,
		Topics: a.topics}
}
