package bridge

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

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
	// SubsUnknown: a persistent session that resumed while the agent could not know its
	// subscriptions (Mosquitto does not log them again); it keeps the agent wanting everything.
	SubsUnknown bool `json:"subs_unknown,omitempty"`
	// unconfirmed: restored from the state file and not seen by this run yet. While the agent
	// was away it may have left (a clean session vanishes without a line) or changed, so it does
	// not count as known; its subscriptions are kept, which only forwards more.
	unconfirmed bool
}

// localInterest is the interest of this node's clients, built from log events. It is owned by
// the agent's dispatch goroutine.
type localInterest struct {
	tree    *topictree.Tree
	clients map[string]*client
	ignore  func(clientID string) bool
	changes []Change // since the last drain
	nsubs   int      // subscriptions of every client
	// uncertain mirrors the agent's "want everything": a persistent session that appears then
	// may be an old one whose subscriptions were never logged to this agent.
	uncertain bool

	// Counters of lines that widened the interest (contract 7).
	Ambiguous, Truncated, Malformed uint64
}

func newLocalInterest(ignore func(string) bool) *localInterest {
	return &localInterest{tree: topictree.New(), clients: map[string]*client{}, ignore: ignore}
}

// shareRE strips "$share/<group>/": a shared subscription wants the same publishes.
func stripShare(filter string) string {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 && i+1 < len(rest) {
			return rest[i+1:]
		}
	}
	return filter
}

func (l *localInterest) get(id string) *client {
	c := l.clients[id]
	if c == nil {
		c = &client{Subs: map[string]byte{}}
		l.clients[id] = c
	}
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
	f := stripShare(filter)
	first, err := l.tree.Add(f)
	if err != nil {
		// Mosquitto accepted it, so it is a filter we cannot model exactly: want everything.
		f = "#"
		first, _ = l.tree.Add(f)
		filter = "#"
	}
	c.Subs[filter] = qos
	l.nsubs++
	if first {
		l.changes = append(l.changes, Change{Add: true, Filter: f})
	}
}

func (l *localInterest) unsubscribe(id, filter string) {
	c := l.clients[id]
	if c == nil {
		return
	}
	if _, had := c.Subs[filter]; !had {
		return // Mosquitto logs unsubscribes of unknown filters too
	}
	delete(c.Subs, filter)
	l.nsubs--
	f := stripShare(filter)
	if l.tree.Remove(f) {
		l.changes = append(l.changes, Change{Add: false, Filter: f})
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

// Apply updates the model with one parsed log event.
func (l *localInterest) Apply(ev sysparse.Event) {
	switch ev.Kind {
	case sysparse.Connected:
		old := l.clients[ev.ClientID]
		// A session survives only from a persistent session to a persistent reconnect.
		if old != nil && (ev.CleanSession || !old.Persistent) {
			l.forget(ev.ClientID)
			old = nil
		}
		c := l.get(ev.ClientID)
		c.Persistent = !ev.CleanSession
		c.Connected = true
		c.unconfirmed = false
		if old == nil && !ev.CleanSession && l.uncertain {
			c.SubsUnknown = true // it may resume a session whose subscriptions were never logged here
		}
	case sysparse.Subscribed:
		l.confirm(ev.ClientID)
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
			l.subscribe(ev.ClientID, ev.Filter, ev.QoS)
		}
	case sysparse.Unsubscribed:
		l.confirm(ev.ClientID)
		switch {
		case len(ev.Readings) > 1:
			l.Ambiguous++ // keep the interest: forwarding more is safe
		case ev.Truncated:
			l.Truncated++
		default:
			l.unsubscribe(ev.ClientID, ev.Filter)
		}
	case sysparse.Disconnected:
		if len(ev.Readings) > 1 {
			l.Ambiguous++ // keep every candidate's interest
			return
		}
		c := l.clients[ev.ClientID]
		if c == nil {
			return
		}
		if c.Persistent {
			c.Connected = false // its broker keeps queueing for it
			return
		}
		l.forget(ev.ClientID)
	case sysparse.TakenOver:
		// The Connected line that follows says whether the session survives.
	case sysparse.Expired:
		l.forget(ev.ClientID)
	}
}

// confirm marks a client as seen by this run.
func (l *localInterest) confirm(id string) {
	if c := l.clients[id]; c != nil {
		c.unconfirmed = false
	}
}

// Confirmed reports whether the client is in the model, seen by this run, with known
// subscriptions.
func (l *localInterest) Confirmed(id string) bool {
	c := l.clients[id]
	return c != nil && !c.unconfirmed && !c.SubsUnknown
}

// MalformedSubscribe records a subscribe line that could not be parsed: interest widens to
// everything.
func (l *localInterest) MalformedSubscribe() {
	l.Malformed++
	l.subscribe(unknownClient, "#", 0)
}

// Drain returns the changes since the last call.
func (l *localInterest) Drain() []Change {
	c := l.changes
	l.changes = nil
	return c
}

// subscriptions counts every client's subscriptions.
func (l *localInterest) subscriptions() int { return l.nsubs }

// KnownClients counts the client sessions the model accounts for: seen by this run, with
// known subscriptions.
func (l *localInterest) KnownClients() int {
	n := 0
	for id, c := range l.clients {
		if id != unknownClient && !c.unconfirmed && !c.SubsUnknown {
			n++
		}
	}
	return n
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

// stateFile is the JSON the agent keeps so a restart does not forget its broker's clients.
type stateFile struct {
	Version int                `json:"version"`
	Node    string             `json:"node"`
	Clients map[string]*client `json:"clients"`
}

func (l *localInterest) save(path, node string) error {
	data, err := json.Marshal(stateFile{Version: 1, Node: node, Clients: l.clients})
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

// restore loads a state file written by save. A missing file is not an error.
func (l *localInterest) restore(path, node string) (bool, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
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
		nc.Persistent, nc.Connected = c.Persistent, c.Connected
		nc.SubsUnknown, nc.unconfirmed = c.SubsUnknown, true
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

// filterCount is the number of distinct filters of the local clients.
func (l *localInterest) filterCount() int { return l.tree.Len() }

// filters lists the distinct filters of the local clients.
func (l *localInterest) filters() []string { return l.tree.Filters() }

// setUncertain mirrors the agent's "want everything" (see uncertain).
func (l *localInterest) setUncertain(v bool) { l.uncertain = v }

// resetCounters zeroes the counters of lines that widened the interest: a restored model counts
// only this run's lines.
func (l *localInterest) resetCounters() { l.Ambiguous, l.Truncated, l.Malformed = 0, 0, 0 }

// connectedClients lists the clients the model holds as connected.
func (l *localInterest) connectedClients() []string {
	var ids []string
	for id, c := range l.clients {
		if c.Connected {
			ids = append(ids, id)
		}
	}
	return ids
}
