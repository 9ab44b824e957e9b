// interest.go owns the local interest model: the clients of this node's broker, their
// subscriptions (plain and shared) as the log lines tell them, and the changes to announce.

package bridge

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"mosquitto-ha/sysparse"
	"mosquitto-ha/topictree"
)

// unknownClient holds interest taken from lines that could not be attributed with certainty
// (a malformed subscribe line). It never disconnects, so that interest is never lost.
const unknownClient = "\x00unknown"

// client is what the agent knows of one client of its broker.
type client struct {
	Persistent bool            `json:"persistent"`
	Connected  bool            `json:"connected"`
	Subs       map[string]byte `json:"subs"` // filter as logged (with any $share prefix) -> QoS
	// SubsUnknown: a session that may hold subscriptions the agent never saw (a persistent
	// session resumed after a gap in the log, or one that predates the agent); it keeps the
	// agent wanting everything while it exists.
	SubsUnknown bool `json:"subs_unknown,omitempty"`
	// OwnConn: its current connection is one the agent made with its id (a session drain,
	// sync or takeover). It closes with the agent's process, so a restarted agent takes it
	// as gone (ownConnsClosed): counted connected, it would keep the broker's count of
	// connections one short of the model's, and no restored connection would be proven.
	OwnConn bool `json:"own_conn,omitempty"`
	// present: this log stream proves the broker holds this client id now (see accounting.go):
	// its unambiguous connect line was read on the current log subscription and nothing read
	// since may have ended its session. Only present clients with known subscriptions count as
	// accounted for. Never saved: a restored client is not present until it connects again.
	present bool
	// mqtt5: its connect line said p5. Its session expiry interval is not logged, so whether
	// its session outlives a disconnect is unknown, whatever its clean flag.
	mqtt5 bool
	// line is the number of the last log line that named this client (any reading);
	// unknownAt the line that set SubsUnknown. See localInterest.settle.
	line, unknownAt uint64
}

// localInterest is the interest of this node's clients, built from log events. It is owned by
// the agent's dispatch goroutine.
type localInterest struct {
	tree    *topictree.Tree   // plain filters
	shares  *topictree.Shared // shared subscriptions, read by the relay path (share.go)
	clients map[string]*client
	ignore  func(clientID string) bool
	changes []Change // since the last drain
	// readAt is when the agent read the log line being applied (Unix ns); addedAt is readAt of
	// the first line since the last drain that added a filter, 0 when none did.
	readAt, addedAt int64
	nsubs           int // subscriptions of every client
	// uncertain mirrors the agent's "want everything": a persistent session that appears then
	// may be an old one whose subscriptions were never logged to this agent.
	uncertain bool
	// line counts the log events applied on the current log subscription.
	line uint64

	// Counters of lines that widened the interest (contract 7).
	Ambiguous, Truncated, Malformed uint64
}

func newLocalInterest(ignore func(string) bool) *localInterest {
	return &localInterest{tree: topictree.New(), shares: topictree.NewShared(), clients: map[string]*client{}, ignore: ignore}
}

// addFilter adds one reference to a filter as logged: a shared subscription
// ("$share/<group>/<filter>") to the shares, anything else to the tree. It returns the change
// to announce when the filter or pair is new.
func (l *localInterest) addFilter(filter string) (ch Change, first bool, err error) {
	if s, ok := topictree.SplitShare(filter); ok {
		first, err = l.shares.Add(s)
		return Change{Add: true, Filter: s.Filter, Group: s.Group}, first, err
	}
	first, err = l.tree.Add(filter)
	return Change{Add: true, Filter: filter}, first, err
}

// removeFilter drops one reference to a filter as logged, and returns the change to announce
// when that was the last one.
func (l *localInterest) removeFilter(filter string) (ch Change, last bool) {
	if s, ok := topictree.SplitShare(filter); ok {
		return Change{Filter: s.Filter, Group: s.Group}, l.shares.Remove(s)
	}
	return Change{Filter: filter}, l.tree.Remove(filter)
}

// get returns the client, creating it not present (nothing proves it is there).
func (l *localInterest) get(id string) *client {
	c := l.clients[id]
	if c == nil {
		c = &client{Subs: map[string]byte{}}
		l.clients[id] = c
	}
	c.line = l.line
	return c
}

func (l *localInterest) subscribe(id, filter string, qos byte) {
	if l.ignore(id) {
		return
	}
	c := l.get(id)
	if _, had := c.Subs[filter]; had {
		c.Subs[filter] = qos
		return
	}
	ch, first, err := l.addFilter(filter)
	if err != nil {
		// Mosquitto accepted it, so it is a filter we cannot model exactly: want everything.
		ch, first, _ = l.addFilter("#")
		filter = "#"
	}
	c.Subs[filter] = qos
	l.nsubs++
	if first {
		l.changes = append(l.changes, ch)
		if l.addedAt == 0 {
			l.addedAt = l.readAt
		}
	}
}

func (l *localInterest) unsubscribe(id, filter string) {
	c := l.clients[id]
	if c == nil {
		return
	}
	c.line = l.line
	if _, had := c.Subs[filter]; !had {
		return // Mosquitto logs unsubscribes of unknown filters too
	}
	delete(c.Subs, filter)
	l.nsubs--
	if ch, last := l.removeFilter(filter); last {
		l.changes = append(l.changes, ch)
	}
}

func (l *localInterest) dropSubs(id string) {
	c := l.clients[id]
	if c == nil {
		return
	}
	for f := range c.Subs {
		l.unsubscribe(id, f)
	}
}

func (l *localInterest) forget(id string) {
	l.dropSubs(id)
	delete(l.clients, id)
}

// seenBy marks a line of an ignored client (a health checker, the cluster's own connections):
// its interest never counts, but a line it caused proves the broker holds it.
func (l *localInterest) seenBy(id string) {
	c := l.get(id)
	c.present, c.Connected = true, true // only a connected client subscribes or unsubscribes
}

// Apply updates the model with one parsed log event.
//
// The rule that keeps the accounting honest (contract 7): a client becomes present only by an
// unambiguous, complete connect line (or, for an ignored client, any unambiguous line of it),
// and anything that may have ended its session makes it not present; subscriptions are only
// ever kept when unsure. A subscribe line of a client the agent never saw connect adds its
// interest but not the client: its other subscriptions are unknown. Every reading of an
// ambiguous line adds interest and no client, so nobody can make up accounted-for clients.
func (l *localInterest) Apply(ev sysparse.Event) {
	l.line++
	switch ev.Kind {
	case sysparse.Connected:
		if len(ev.Readings) > 1 || ev.Truncated {
			// Which client connected is unknown: it stays unaccounted for (it may even resume
			// a session), and nothing is dropped. The readings' own sessions are unchanged or
			// were replaced by this connection, whose subscriptions the log will show.
			if ev.Truncated {
				l.Truncated++
			} else {
				l.Ambiguous++
			}
			for _, r := range ev.Readings {
				if c := l.clients[r.ClientID]; c != nil {
					c.line = l.line
				}
			}
			return
		}
		id := ev.ClientID
		old := l.clients[id]
		if l.ignore(id) {
			c := l.get(id)
			c.Persistent, c.Connected, c.mqtt5, c.present = !ev.CleanSession, true, ev.Protocol == sysparse.ProtocolMQTT5, true
			return
		}
		// A clean start discards the old session; a persistent connect keeps it when there was
		// one: one this stream followed (present), or one it did not. While the agent is
		// uncertain (since a gap in the log, until a tick matched), a persistent session it
		// did not follow may hold subscriptions nobody logged to it. Once a tick matched, every
		// client the broker held was accounted for and every line since was read (settle), so
		// a session not followed is a new one.
		if old != nil && (ev.CleanSession || (old.present && !old.Persistent)) {
			l.forget(id)
			old = nil
		}
		c := l.get(id)
		if !ev.CleanSession && l.uncertain && (old == nil || !old.present) {
			c.SubsUnknown, c.unknownAt = true, l.line
		}
		c.Persistent = !ev.CleanSession
		c.Connected = true
		c.mqtt5 = ev.Protocol == sysparse.ProtocolMQTT5
		c.present = true
	case sysparse.Subscribed:
		switch {
		case len(ev.Readings) > 1:
			// Take every reading: the widest interest (contract 7).
			l.Ambiguous++
			for _, r := range ev.Readings {
				f := r.Filter
				if r.Widened != "" {
					f = r.Widened
				}
				l.subscribe(r.ClientID, f, r.QoS)
			}
		case ev.Truncated:
			l.Truncated++
			l.subscribe(ev.ClientID, ev.Widened, ev.QoS)
		default:
			if l.ignore(ev.ClientID) {
				l.seenBy(ev.ClientID)
				return
			}
			l.subscribe(ev.ClientID, ev.Filter, ev.QoS)
			// Only a connected client subscribes (verifyConnections counts connections).
			l.clients[ev.ClientID].Connected = true
		}
	case sysparse.Unsubscribed:
		switch {
		case len(ev.Readings) > 1:
			l.Ambiguous++ // keep the interest: forwarding more is safe
			l.touch(ev.Readings)
		case ev.Truncated:
			l.Truncated++
			l.touch([]sysparse.Reading{{ClientID: ev.ClientID}})
		default:
			if l.ignore(ev.ClientID) {
				l.seenBy(ev.ClientID) // also the peers' presence pings, see links.go
				return
			}
			l.unsubscribe(ev.ClientID, ev.Filter)
			if c := l.clients[ev.ClientID]; c != nil {
				c.Connected = true // only a connected client unsubscribes
			}
		}
	case sysparse.Disconnected:
		if len(ev.Readings) > 1 {
			// Keep every candidate's interest; a candidate whose session may have ended with
			// this line is no longer proven present.
			l.Ambiguous++
			for _, r := range ev.Readings {
				if c := l.clients[r.ClientID]; c != nil {
					c.line = l.line
					if !c.Persistent || c.mqtt5 {
						c.present = false
					}
				}
			}
			return
		}
		c := l.clients[ev.ClientID]
		if c == nil {
			return
		}
		c.line = l.line
		switch {
		case !c.present:
			// Its session's kind is unknown (it connected before this stream): keep its
			// interest, the broker may keep queueing for it.
			c.Connected = false
		case c.mqtt5:
			// MQTT 5: the session may outlive the connection (expiry interval not logged) or
			// end now, whatever the clean flag said: keep the interest, stop counting it.
			c.Connected, c.present = false, false
		case c.Persistent:
			c.Connected = false // its broker keeps queueing for it
		default:
			l.forget(ev.ClientID)
		}
	case sysparse.TakenOver:
		// The Connected line that follows says whether the session survives.
	case sysparse.Expired:
		if !ev.Truncated {
			l.forget(ev.ClientID)
		}
	}
}

// freshSession records that the session a persistent connect of id just started is new (the
// agent ended the previous one itself, see sessionwork.go): its subscriptions are all in the
// log from here, whatever the agent's uncertainty about older sessions.
func (l *localInterest) freshSession(id string) {
	if c := l.clients[id]; c != nil && c.present && len(c.Subs) == 0 {
		c.SubsUnknown = false
	}
}

// touch records that a line named these clients.
func (l *localInterest) touch(rs []sysparse.Reading) {
	for _, r := range rs {
		if c := l.clients[r.ClientID]; c != nil {
			c.line = l.line
		}
	}
}

// MalformedSubscribe records a subscribe line that could not be parsed: interest widens to
// everything.
func (l *localInterest) MalformedSubscribe() {
	l.line++
	l.Malformed++
	l.subscribe(unknownClient, "#", 0)
}

// Drain returns the changes since the last call.
func (l *localInterest) Drain() []Change {
	c := l.changes
	l.changes = nil
	l.addedAt = 0
	return c
}

// DrainStamped returns the changes since the last call, and when the agent read the first of
// them that added a filter (0: none, or not known).
func (l *localInterest) DrainStamped() ([]Change, int64) {
	at := l.addedAt
	return l.Drain(), at
}

// subscriptions counts every client's subscriptions.
func (l *localInterest) subscriptions() int { return l.nsubs }

// accounted reports whether the broker holds this client now and the model holds every
// subscription of its session (ignored clients have none that count).
func (l *localInterest) accounted(id string, c *client) bool {
	return c.present && !c.SubsUnknown && id != unknownClient
}

// KnownClients counts the clients the model accounts for (see accounted).
func (l *localInterest) KnownClients() int {
	n := 0
	for id, c := range l.clients {
		if l.accounted(id, c) {
			n++
		}
	}
	return n
}

// connectedAndHeld counts the clients the model says are connected, and the sessions it says the
// broker holds: at least held (connected, or persistent), at most heldMax (an MQTT 5 client that
// disconnected may still have its session: its expiry interval is not logged).
func (l *localInterest) connectedAndHeld() (connected, held, heldMax int) {
	for id, c := range l.clients {
		switch {
		case id == unknownClient:
		case c.Connected:
			connected++
			held++
		case c.mqtt5:
			heldMax++
		case c.Persistent:
			held++
		}
	}
	return connected, held, held + heldMax
}

// connectedIDs lists the clients the model says are connected, sorted.
func (l *localInterest) connectedIDs() []string {
	var ids []string
	for id, c := range l.clients {
		if c.Connected && id != unknownClient {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// presentClients counts the clients this log stream proves the broker holds (see present),
// whether or not their subscriptions are known.
func (l *localInterest) presentClients() int {
	n := 0
	for id, c := range l.clients {
		if c.present && id != unknownClient {
			n++
		}
	}
	return n
}

// dropAbsent forgets the clients not present and not named by a line after tickLine: at that
// tick the broker held exactly the present clients (see Agent.dropAbsent).
func (l *localInterest) dropAbsent(tickLine uint64) (dropped []string) {
	for id, c := range l.clients {
		if id != unknownClient && !c.present && c.line <= tickLine {
			l.forget(id)
			dropped = append(dropped, id)
		}
	}
	return dropped
}

// logGap starts a new log subscription: lines may have been missed (the agent was away or its
// local connection was lost), so no client is proven present any more, and the model is
// uncertain until a tick matches. Their subscriptions stay: forwarding more is safe.
func (l *localInterest) logGap() {
	l.uncertain = true
	l.line = 0
	for _, c := range l.clients {
		c.present, c.line, c.unknownAt = false, 0, 0
	}
}

// settle runs once the broker's count of clients at line tickLine matched the clients the model
// accounted for then, so the model held every client of the broker, each with all its
// subscriptions (see accounting.go). A client the model did not account for then, and that no
// line named since, is not in the broker: it is dropped. A persistent session marked
// SubsUnknown by a connect after that line is a new one (the broker held no session of that id),
// so its subscriptions are all in the log.
func (l *localInterest) settle(tickLine uint64) (dropped []string) {
	for id, c := range l.clients {
		if id == unknownClient {
			continue
		}
		if c.SubsUnknown && c.unknownAt > tickLine {
			c.SubsUnknown = false
		}
		if !l.accounted(id, c) && c.line <= tickLine {
			l.forget(id)
			dropped = append(dropped, id)
		}
	}
	return dropped
}

// brokerRestarted drops what a broker restart ends: every clean session.
func (l *localInterest) brokerRestarted() {
	for id, c := range l.clients {
		if id == unknownClient {
			continue
		}
		if !c.Persistent {
			l.forget(id)
		} else {
			c.Connected = false
		}
	}
}

// markOwn records, after ev was applied, whether its client's connection is the agent's own.
func (l *localInterest) markOwn(ev sysparse.Event, own bool) {
	if c := l.clients[ev.ClientID]; c != nil && (ev.Kind == sysparse.Connected || ev.Kind == sysparse.Disconnected) {
		c.OwnConn = own && ev.Kind == sysparse.Connected
	}
}

// ownConnsClosed runs when the agent starts: the connections an earlier run of it made with
// clients' ids closed with that run.
func (l *localInterest) ownConnsClosed() {
	for _, c := range l.clients {
		if c.OwnConn {
			c.Connected, c.OwnConn = false, false
		}
	}
}

// stateFile is the JSON the agent keeps so a restart does not forget its broker's clients.
type stateFile struct {
	Version int                `json:"version"`
	Node    string             `json:"node"`
	Clients map[string]*client `json:"clients"`
}

func (l *localInterest) save(path, node string) error {
	data, err := l.encode(node)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

// encode is the state file's content for the model as it is.
func (l *localInterest) encode(node string) ([]byte, error) {
	return json.Marshal(stateFile{Version: 1, Node: node, Clients: l.clients})
}

// restore loads a state file written by save. A missing file is not an error.
func (l *localInterest) restore(path, node string) (bool, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: %s: %w", ErrStateUnreadable, path, err)
	}
	var s stateFile
	if err := json.Unmarshal(data, &s); err != nil {
		return false, fmt.Errorf("state file %s: %w", path, err)
	}
	if s.Version != 1 || s.Node != node {
		return false, fmt.Errorf("state file %s: version %d of node %q, want version 1 of %q", path, s.Version, s.Node, node)
	}
	ids := make([]string, 0, len(s.Clients))
	for id := range s.Clients {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := s.Clients[id]
		if c == nil {
			continue
		}
		nc := l.get(id)
		nc.Persistent, nc.Connected, nc.SubsUnknown, nc.OwnConn = c.Persistent, c.Connected, c.SubsUnknown, c.OwnConn
		for f, q := range c.Subs {
			l.subscribe(id, f, q)
		}
	}
	return true, nil
}

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// The agent reads and steers the model through the methods below, never its fields.

// filterCount is the number of distinct filters of the local clients, shared subscriptions
// included.
func (l *localInterest) filterCount() int { return l.tree.Len() + l.shares.Len() }

// filters lists the distinct plain filters of the local clients.
func (l *localInterest) filters() []string { return l.tree.Filters() }

// shareList lists the distinct shared subscriptions of the local clients.
func (l *localInterest) shareList() []topictree.Share { return l.shares.Shares() }

// setUncertain mirrors the agent's "want everything" (see uncertain).
func (l *localInterest) setUncertain(v bool) { l.uncertain = v }
