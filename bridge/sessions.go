// sessions.go owns the session registry (issue 13, contract 6): which client ids this node's
// broker holds as their newest holder, ordered across the cluster by the hybrid logical clock,
// published retained and signed on $HA/<cluster>/<node>/sessions; and the registries peers
// publish, checked and bounded as the hostile input they may be. What the agent does with them
// (take a connection over, keep replicas, drain them) is planned in sessionplan.go and done by
// the worker in sessionwork.go.

package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"mosquitto-ha/sysparse"
)

// SessionOptions turn on sessions that follow their client across the cluster. The zero value
// turns them off (DefaultSessionOptions is what `mosquitto-ha` runs with).
type SessionOptions struct {
	// Enabled turns on the registry, the takeover of a client id connected on two brokers, and
	// replicas of persistent sessions.
	Enabled bool
	// Clients are path.Match patterns of the client ids whose persistent sessions are
	// replicated; nil or empty: every client id. The takeover applies to every client id.
	Clients []string
	// Replicas is how many nodes besides the holder keep a replica of a persistent session
	// (0: every other node; negative: none, only the takeover).
	Replicas int
	// DrainInterval is how often a replica is emptied while its client is connected elsewhere:
	// it bounds the duplicates a failover delivers (DefaultDrainInterval).
	DrainInterval time.Duration
	// ConnectRate bounds the connections the agent makes with clients' ids to its broker, per
	// second (DefaultSessionConnectRate).
	ConnectRate int
}

// Defaults of SessionOptions and the registry's bounds.
const (
	// DefaultDrainInterval: a replica holds at most about this long of its client's messages
	// when its broker takes the client over (the duplicate bound, docs/failover.md). One short
	// connection per replica per interval; at ConnectRate connections a second the interval
	// stretches to (replicas / ConnectRate) seconds.
	DefaultDrainInterval = time.Second
	// DefaultSessionConnectRate bounds the connections made with clients' ids, per broker: a
	// drain costs Mosquitto about as much as a client's reconnect, and 50 a second is under 1%
	// of one core here (a connect and disconnect costs about 100 us of broker CPU).
	DefaultSessionConnectRate = 50
	// maxRegistrySessions bounds the sessions one peer's registry may list: past it the
	// registry is refused (counted, logged) and the last accepted one kept.
	maxRegistrySessions = 1 << 18
	// maxRegistryFilters bounds the filters of one session in a peer's registry.
	maxRegistryFilters = 4096
	// sessionsMinInterval is the least time between two registry publications: a client id
	// that connects on a second broker is taken over within about this plus a round trip.
	sessionsMinInterval = 100 * time.Millisecond
	// sessionsRepublish: the registry is published again this often unchanged, and on every
	// local (re)connection: a retained copy a broker lost comes back, and peers can tell a
	// registry that stopped coming (registryFresh) from one that did not change.
	sessionsRepublish = 10 * time.Second
	// sessionsStartGrace: after its local connection comes up the agent waits this long for
	// its own retained registry (an earlier run's) before it publishes one.
	sessionsStartGrace = 2 * time.Second
)

// DefaultSessionOptions are the settings `mosquitto-ha` runs with unless configured: every
// persistent 3.1/3.1.1 session is replicated on every other node, so a client that reconnects
// through the load balancer finds its session on whichever broker it reaches.
func DefaultSessionOptions() SessionOptions {
	return SessionOptions{Enabled: true, Clients: []string{"*"}, DrainInterval: DefaultDrainInterval,
		ConnectRate: DefaultSessionConnectRate}
}

func (o SessionOptions) withDefaults() SessionOptions {
	o.DrainInterval = orDefault(o.DrainInterval, DefaultDrainInterval)
	o.ConnectRate = orDefault(o.ConnectRate, DefaultSessionConnectRate)
	return o
}

// ErrSessionPattern marks a client-id pattern path.Match cannot use.
var ErrSessionPattern = errors.New("bridge: invalid client id pattern")

// CheckSessionPatterns reports the first pattern path.Match refuses.
func CheckSessionPatterns(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("%w %q: %w", ErrSessionPattern, p, err)
		}
	}
	return nil
}

// replicated reports whether id's persistent session is replicated under the patterns.
func (o SessionOptions) replicated(id string) bool {
	if len(o.Clients) == 0 {
		return true
	}
	for _, p := range o.Clients {
		if ok, _ := path.Match(p, id); ok {
			return true
		}
	}
	return false
}

// ErrRegistryRefused marks a peer's session registry the agent does not take.
var ErrRegistryRefused = errors.New("bridge: session registry refused")

// sessionEntry is one client id in a registry (the wire form, doc.go).
type sessionEntry struct {
	ID string `json:"id"`
	// Conn: the client is connected to the publishing node's broker.
	Conn bool `json:"conn"`
	// Since is the hybrid logical clock stamp (hlc.go) of the client's last connect there: the
	// node with the largest holds the session.
	Since uint64 `json:"since"`
	Clean bool   `json:"clean,omitempty"`
	// Proto is the protocol level of its connect line: 3 (MQTT 3.1) or 4 (3.1.1).
	Proto int             `json:"proto"`
	Subs  map[string]byte `json:"subs,omitempty"`
	// SubsUnknown: the session may hold subscriptions its agent never saw (they predate it).
	SubsUnknown bool `json:"subs_unknown,omitempty"`
	// NoReplica: its filters are more than a registry carries (maxRegistryFilters): peers keep
	// no replica of it (one without them would tell its client "session present" and deliver
	// nothing); the takeover still applies.
	NoReplica bool `json:"no_replica,omitempty"`
	// Drained is a filter of the messages the publishing node's drains discarded from its
	// replica within drainedWindow before the client connected there (drained.go), carried
	// for drainedKeep after the connect: the node the client left hands over those it still
	// holds. Absent: not known, and a hand-over forwards everything.
	Drained drainedFilter `json:"drained,omitempty"`
}

// sessionsMsg is a registry message.
type sessionsMsg struct {
	Version  int            `json:"version"`
	Node     string         `json:"node"`
	Sessions []sessionEntry `json:"sessions"`
}

// registryVersion is the registry's wire version.
const registryVersion = 1

// decodeRegistry checks a peer's registry: its node, its size and every entry.
func decodeRegistry(payload []byte, node string, maxBytes int, clock *hlc) (map[string]sessionEntry, error) {
	if len(payload) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrRegistryRefused, len(payload), maxBytes)
	}
	var m sessionsMsg
	if err := json.Unmarshal(payload, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRegistryRefused, err)
	}
	if m.Version != registryVersion || m.Node != node {
		return nil, fmt.Errorf("%w: version %d of node %q, want version %d of %q", ErrRegistryRefused, m.Version, m.Node, registryVersion, node)
	}
	if len(m.Sessions) > maxRegistrySessions {
		return nil, fmt.Errorf("%w: %d sessions, limit %d", ErrRegistryRefused, len(m.Sessions), maxRegistrySessions)
	}
	out := make(map[string]sessionEntry, len(m.Sessions))
	for _, e := range m.Sessions {
		switch {
		case e.ID == "" || len(e.ID) > 65535 || !utf8.ValidString(e.ID):
			return nil, fmt.Errorf("%w: client id %q: empty, over 65535 bytes or not UTF-8 [MQTT-3.1.3-4]", ErrRegistryRefused, e.ID)
		case e.Proto != 3 && e.Proto != 4:
			return nil, fmt.Errorf("%w: client %q: protocol %d (want 3 or 4)", ErrRegistryRefused, e.ID, e.Proto)
		case len(e.Subs) > maxRegistryFilters:
			return nil, fmt.Errorf("%w: client %q: %d filters, limit %d", ErrRegistryRefused, e.ID, len(e.Subs), maxRegistryFilters)
		case e.Drained != nil && (len(e.Drained) < drainedMinBytes || len(e.Drained) > drainedMaxBytes):
			return nil, fmt.Errorf("%w: client %q: drained filter of %d bytes (want %d to %d)", ErrRegistryRefused, e.ID, len(e.Drained), drainedMinBytes, drainedMaxBytes)
		}
		for f, q := range e.Subs {
			if !registryFilterOK(f, q) {
				return nil, fmt.Errorf("%w: client %q: filter %q QoS %d", ErrRegistryRefused, e.ID, f, q)
			}
		}
		if err := clock.observe(e.Since); err != nil {
			return nil, fmt.Errorf("%w: client %q: %w", ErrRegistryRefused, e.ID, err)
		}
		out[e.ID] = e
	}
	return out, nil
}

// registryFilterOK reports whether a registry may carry filter f at QoS q: the publisher leaves
// out what the reader refuses (a $SYS filter is the broker's own, a replica must not collect it),
// so one client's filter never makes a whole registry refused.
func registryFilterOK(f string, q byte) bool {
	return f != "" && len(f) <= maxFilterBytes && q <= 2 && !strings.HasPrefix(f, "$SYS")
}

// localSession is a client id this node's broker holds as seen from the log.
type localSession struct {
	since uint64 // stamp of its client's last connect here
	conn  bool   // its client is connected here (not one of the agent's own connections)
	// seen: its connect line was read in this run since the last gap in the log. A connection
	// restored from an earlier run, or one from before a gap, may have ended unseen: it is
	// published as not connected (peers drain replicas only while it is), though the agent
	// still never acts on it as if it were gone (liveHere).
	seen  bool
	clean bool
	proto int
}

// sessionRegistry is this node's side of the registry, owned by the dispatcher.
type sessionRegistry struct {
	clock *hlc
	own   map[string]*localSession
	dirty bool
	last  time.Time // of the last publication
	// lastBytes is the size of the last publication, which spaces the next (publishSessions).
	lastBytes int
	// oversizeWarned: the last warning of a registry too large to publish; warned: client ids
	// warned of for filters a registry cannot carry.
	oversizeWarned time.Time
	warned         map[string]bool
	// pruned: when the worker's memory of client ids was last pruned (planSessions).
	pruned time.Time
	// loaded: the agent's own retained registry (an earlier run's) was read, or the grace after
	// the local connection came up passed without one; publications wait for it.
	loaded bool
	upAt   time.Time
	// ignore: health checkers and the cluster's own connections are nobody's session.
	ignore func(id string) bool

	// ownAddrs are the local addresses of the agent's connections made with clients' ids,
	// written by the worker before CONNECT, read by the dispatcher from connect lines.
	addrMu   sync.Mutex
	ownAddrs map[netip.AddrPort]*ownConn
	// takenOver is the client id of the last log line, if it was "already connected, closing
	// old connection" (on the dispatcher).
	takenOver string
	// live mirrors the ids in own with conn set, for the worker (sessionwork.go).
	live sync.Map
}

// liveHere reports whether id's client is connected to the local broker. Safe for concurrent use.
func (r *sessionRegistry) liveHere(id string) bool {
	_, ok := r.live.Load(id)
	return ok
}

// setConn records whether s's client is connected here.
func (r *sessionRegistry) setConn(id string, s *localSession, conn bool) {
	s.conn = conn
	if conn {
		r.live.Store(id, true)
	} else {
		r.live.Delete(id)
	}
	r.dirty = true
}

// drop forgets id.
func (r *sessionRegistry) drop(id string) {
	delete(r.own, id)
	delete(r.warned, id)
	r.live.Delete(id)
	r.dirty = true
}

func newSessionRegistry(ignore func(id string) bool) *sessionRegistry {
	return &sessionRegistry{clock: newHLC(maxClockSkew), own: map[string]*localSession{}, warned: map[string]bool{}, ownAddrs: map[netip.AddrPort]*ownConn{}, ignore: ignore}
}

// ownConn is one of the agent's connections made with a client's id.
type ownConn struct {
	at time.Time
	// fresh: it recreates a session the agent's previous connection ended (clean): the session
	// holds exactly the subscriptions the log shows from now on.
	fresh bool
	// line is closed once the dispatcher read the connection's connect line; tookOver (set
	// before) tells that a "already connected, closing old connection" line for its id came
	// right before it: the connection closed the client's own, live on this broker.
	line     chan struct{}
	tookOver bool
}

// parseAddrPort reads an address as Go writes it ("[::1]:5", "127.0.0.1:5") or as Mosquitto
// logs it ("::1:5", "::ffff:127.0.0.1:5"): the port is after the last colon. A 4-in-6 address is
// its IPv4 address, so both forms of one connection compare equal.
func parseAddrPort(s string) (netip.AddrPort, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s[:i], "["), "]"))
	if err != nil {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(s[i+1:], 10, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap().WithZone(""), uint16(port)), true
}

// addOwn records the local address of one of the agent's connections made with a client's id.
func (r *sessionRegistry) addOwn(addr string, fresh bool) *ownConn {
	c := &ownConn{at: time.Now(), fresh: fresh, line: make(chan struct{})}
	ap, ok := parseAddrPort(addr)
	if !ok {
		return c // never matched: its line never comes, nothing is acknowledged
	}
	r.addrMu.Lock()
	defer r.addrMu.Unlock()
	for a, c := range r.ownAddrs {
		if time.Since(c.at) > time.Minute {
			delete(r.ownAddrs, a)
		}
	}
	r.ownAddrs[ap] = c
	return c
}

// ownAddr reports whether addr is one of the agent's connections, and whether it is fresh.
// On the dispatcher: the connect line of addr was read (tookOver: a takeover line for its id
// came right before).
func (r *sessionRegistry) ownAddr(addr string, tookOver bool) (own, fresh bool) {
	ap, ok := parseAddrPort(addr)
	if !ok {
		return false, false
	}
	r.addrMu.Lock()
	defer r.addrMu.Unlock()
	c, ok := r.ownAddrs[ap]
	if !ok {
		return false, false
	}
	select {
	case <-c.line: // a second line for one address: the first one stands
	default:
		c.tookOver = tookOver
		close(c.line)
	}
	return true, c.fresh
}

// connectAddress is the "<ip>:<port>" of a connect line ("New client connected from <ip>:<port>
// as <id> (...)"): the address has no " as ", so the first " as " after ":<digits>" ends it.
func connectAddress(line string) string {
	_, rest, ok := strings.Cut(line, " connected from ")
	if !ok {
		return ""
	}
	for from := 0; ; {
		i := strings.Index(rest[from:], " as ")
		if i < 0 {
			return ""
		}
		i += from
		j := i
		for j > 0 && rest[j-1] >= '0' && rest[j-1] <= '9' {
			j--
		}
		if j < i && j > 0 && rest[j-1] == ':' {
			return rest[:i]
		}
		from = i + 1
	}
}

// event follows one parsed log line (after the interest model took it). own: a connect line
// of one of the agent's own connections made with the client's id.
func (r *sessionRegistry) event(ev sysparse.Event, own bool) {
	if len(ev.Readings) > 1 || ev.Truncated || r.ignore(ev.ClientID) {
		return // which client is unknown, or one of the cluster's: the registry keeps what it had
	}
	s := r.own[ev.ClientID]
	switch ev.Kind {
	case sysparse.Connected:
		if ev.Protocol == sysparse.ProtocolMQTT5 {
			// MQTT 5: its session expiry is not logged; not replicated (docs/semantics.md).
			if s != nil {
				r.drop(ev.ClientID)
			}
			return
		}
		if own {
			if s != nil && s.conn {
				r.setConn(ev.ClientID, s, false) // the agent's connection closed the client's [MQTT-3.1.4-2]
			}
			return
		}
		s = &localSession{since: r.clock.now(), seen: true, clean: ev.CleanSession, proto: ev.Protocol + 2}
		r.own[ev.ClientID] = s
		r.setConn(ev.ClientID, s, true)
	case sysparse.Disconnected:
		if s == nil || !s.conn {
			return
		}
		r.setConn(ev.ClientID, s, false)
		if s.clean {
			r.drop(ev.ClientID)
		}
	case sysparse.Expired:
		if s != nil {
			r.drop(ev.ClientID)
		}
	case sysparse.Subscribed, sysparse.Unsubscribed:
		if s != nil {
			r.dirty = true
		}
	}
}

// SessionsStatus is the state of sessions that follow their client (issue 13).
type SessionsStatus struct {
	// Held counts the client ids this node's broker holds as their newest holder; Connected
	// those connected here now.
	Held      int `json:"held"`
	Connected int `json:"connected"`
	// Replicas counts the sessions of clients held elsewhere this node keeps a replica of.
	Replicas int `json:"replicas"`
	// Takeovers counts connections closed here because their client id connected later on
	// another broker; Drains the replica drains, DrainedMessages what they took.
	Takeovers       uint64 `json:"takeovers"`
	Drains          uint64 `json:"drains"`
	DrainedMessages uint64 `json:"drained_messages"`
	// ReplicaSyncs counts connections that created or updated a replica's subscriptions;
	// Removed the sessions removed because their client started clean elsewhere or this node is
	// no longer one of their replicas.
	ReplicaSyncs uint64 `json:"replica_syncs"`
	Removed      uint64 `json:"removed"`
	// Refused counts connections or subscriptions the broker refused for a client id (the
	// agent's account may not act for it: ACL, use_username_as_clientid, dynamic security).
	Refused uint64 `json:"refused"`
	// Failed counts other failed session connections (the broker away, a timeout).
	Failed uint64 `json:"failed"`
	// Stale counts drains and removals dropped unrun because what they were planned on no
	// longer held when their turn came (the client went offline or moved, a registry aged).
	Stale uint64 `json:"stale"`
	// ClosedLive counts the agent's connections with a client's id that found the client
	// connected here before the agent read its connect line: closed at once, nothing
	// acknowledged or removed (the client reconnects to its intact session).
	ClosedLive uint64 `json:"closed_live"`
	// RegistryRefused counts peers' registries refused (size, signature, content).
	RegistryRefused uint64 `json:"registry_refused"`
	// Pending is the session work waiting for the worker.
	Pending int `json:"pending"`
	// Forwarded counts the messages takeovers found unacknowledged in the older connection's
	// session and handed to the node where the client connected later.
	Forwarded uint64 `json:"forwarded"`
	// ForwardSkipped counts the messages hand-overs acknowledged without forwarding: the
	// client's new node did not drain them from its replica, so the client gets them there.
	ForwardSkipped uint64 `json:"forward_skipped"`
	// RegistryBytes counts the registry bytes this agent published.
	RegistryBytes uint64 `json:"registry_bytes"`
}

// logGap: log lines may have been missed (the local connection was lost): a connection known
// so far may have ended unseen.
func (r *sessionRegistry) logGap() {
	for _, s := range r.own {
		s.seen = false
	}
	r.dirty = true
}

// verifyRestored marks every connection kept across a gap in the log as seen again (the broker's
// count agrees, accounting.go verifyConnections), and returns how many there were.
func (r *sessionRegistry) verifyRestored() int {
	n := 0
	for _, s := range r.own {
		if s.conn && !s.seen {
			s.seen = true
			n++
		}
	}
	if n > 0 {
		r.dirty = true
	}
	return n
}

// unproven counts the connections kept across a gap in the log and not yet proven (seen).
func (r *sessionRegistry) unproven() int {
	n := 0
	for _, s := range r.own {
		if s.conn && !s.seen {
			n++
		}
	}
	return n
}

// brokerRestarted: the broker lost every connection (and every clean session).
func (r *sessionRegistry) brokerRestarted() {
	for id, s := range r.own {
		r.setConn(id, s, false)
		if s.clean {
			r.drop(id)
		}
	}
}
