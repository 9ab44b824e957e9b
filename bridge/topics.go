// topics.go owns the names of the cluster: its control topics under $HA/<cluster>/ and the client
// ids of the agents' connections. The relay topics are in relaywire.go; doc.go lists them all.

package bridge

import "strings"

// Topics are the control and forward topic names of one cluster.
type Topics struct {
	cluster       string
	forward       string // prefix of non-retained relays
	forwardRetain string // prefix of retained relays and deletions
	forwardBatch  string // topic prefix of batches of relays
}

// NewTopics derives the topic names from the cluster name and forward prefix ("$forward/").
func NewTopics(cluster, forwardPrefix string) Topics {
	base := strings.TrimSuffix(forwardPrefix, "/")
	return Topics{
		cluster:       cluster,
		forward:       forwardPrefix,
		forwardRetain: base + "-r/",
		forwardBatch:  base + "-b/",
	}
}

// Interest is the retained snapshot topic of node.
func (t Topics) Interest(node string) string { return "$HA/" + t.cluster + "/" + node + "/interest" }

// InterestDelta is the delta topic of node.
func (t Topics) InterestDelta(node string) string { return t.Interest(node) + "/delta" }

// InterestFilter matches both interest topics of node ("a/#" matches "a").
func (t Topics) InterestFilter(node string) string { return t.Interest(node) + "/#" }

// Status is the retained health message of node's agent.
func (t Topics) Status(node string) string { return "$HA/" + t.cluster + "/" + node + "/status" }

// LastStatus is the retained copy of node's last live status, which the agent publishes on its
// own broker and on every peer's broker and which no will overwrites: it tells when a vanished
// agent was last seen, and shows an agent whose own broker refuses it.
func (t Topics) LastStatus(node string) string { return t.Status(node) + "/last" }

// LastStatusFilter matches the last live status of every agent of the cluster.
func (t Topics) LastStatusFilter() string { return t.Control() + "+/status/last" }

// StatusFilter matches the status of every agent of the cluster.
func (t Topics) StatusFilter() string { return "$HA/" + t.cluster + "/+/status" }

// Synced is the marker node's agent publishes on peer's broker after subscribing to peer's
// interest: it comes back after every retained message of that subscription.
func (t Topics) Synced(node, peer string) string { return t.Control() + node + "/synced/" + peer }

// RetainedMarker ends a read of a broker's retained messages: name is
// "<node>/local/<peer>" on the agent's own broker, "<node>/sync/<peer>" on the peer's.
func (t Topics) RetainedMarker(name string) string { return t.Control() + name + "/retained-marker" }

// Control is the prefix of every control topic of the cluster.
func (t Topics) Control() string { return "$HA/" + t.cluster + "/" }

// ClientPrefix starts the client id of every agent connection of the cluster.
func (t Topics) ClientPrefix() string { return "mha-" + t.cluster + "-" }

// The client ids of the agents' connections. Each broker sees, besides its own agent's local
// connection, a link and retained pulls from every peer agent, and its own agent's readers.

// LocalID is node's agent's connection to its own broker.
func (t Topics) LocalID(node string) string { return t.ClientPrefix() + node + "-local" }

// LinkID is from's agent's connection to to's broker.
func (t Topics) LinkID(from, to string) string { return t.ClientPrefix() + from + "-to-" + to }

// PullID is from's agent's retained pull on to's broker.
func (t Topics) PullID(from, to string) string { return t.ClientPrefix() + from + "-pull-" + to }

// ReaderID is node's agent's reader of its own broker's retained messages, for a pull from peer.
func (t Topics) ReaderID(node, peer string) string {
	return t.ClientPrefix() + node + "-retained-" + peer
}

// IsReserved reports whether a topic belongs to the cluster's own traffic (never relayed).
func (t Topics) IsReserved(topic string) bool {
	_, _, fwd := t.Unforward(topic)
	return fwd || t.IsBatch(topic) || strings.HasPrefix(topic, t.Control()) || strings.HasPrefix(topic, "$SYS/")
}
