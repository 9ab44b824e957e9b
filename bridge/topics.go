// topics.go owns the names of the cluster: its control topics under $HA/<cluster>/ and the client
// ids of the agents' connections. The relay topics are in relaywire.go; doc.go lists them all.

package bridge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Topics are the control and forward topic names of one cluster.
type Topics struct {
	cluster       string
	forward       string // prefix of non-retained relays
	forwardRetain string // prefix of retained relays and deletions
	forwardBatch  string // topic prefix of batches of relays
	// idKey, when set (WithIDSecret), makes every agent client id end in a tag derived from
	// the cluster secret, so that a client without the secret cannot guess it.
	idKey []byte
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

// Sessions is the retained session registry of node's agent (sessions.go).
func (t Topics) Sessions(node string) string { return t.Control() + node + "/sessions" }

// Synced is the marker node's agent publishes on peer's broker after subscribing to peer's
// interest: it comes back after every retained message of that subscription.
func (t Topics) Synced(node, peer string) string { return t.Control() + node + "/synced/" + peer }

// RetainedMarker ends a read of a broker's retained messages: name is
// "<node>/local/<peer>" on the agent's own broker, "<node>/sync/<peer>" on the peer's.
func (t Topics) RetainedMarker(name string) string { return t.Control() + name + "/retained-marker" }

// FloodMarker is the topic of the marker that ends the stored retained messages the local broker
// sends for the agent's new subscription to '#' (retained.go): published by node's agent on its
// own broker from another connection, received by its local connection, never relayed.
func (t Topics) FloodMarker(node string) string { return t.Control() + node + "/flood-marker" }

// DrainProbe is the topic node's agent publishes to (QoS 1, nobody subscribes) on a peer's
// broker to prove that broker reachable before a drain acknowledges anything (sessionwork.go).
func (t Topics) DrainProbe(node string) string { return t.Control() + node + "/drain-probe" }

// Control is the prefix of every control topic of the cluster.
func (t Topics) Control() string { return "$HA/" + t.cluster + "/" }

// ClientPrefix starts the client id of every agent connection of the cluster.
func (t Topics) ClientPrefix() string { return "mha-" + t.cluster + "-" }

// The client ids of the agents' connections. Each broker sees, besides its own agent's local
// connection, a link and retained pulls from every peer agent, and its own agent's readers.
//
// Mosquitto 2.0 cannot bind a client id to an account, and a CONNECT with an id already
// connected closes the older connection [MQTT-3.1.4-2]: whoever knows an agent's id can take
// its session (and with it the messages queued for the agent). With a cluster secret every id
// therefore ends in "-" and 16 hex digits of HMAC-SHA256(secret, "mosquitto-ha client id" ||
// 0x00 || the id without them): every agent of the cluster (and `decommission`) derives the
// same ids, a client without the secret cannot. Without a secret the ids are the plain names
// below, as predictable as the cluster's other names (docs/security.md says so).

// idTagHex is the length of the secret-derived tag of a client id, in hex digits (64 bits: a
// guess succeeds once in 2^64).
const idTagHex = 16

// WithIDSecret returns t with client ids derived from the cluster secret (none: plain ids).
func (t Topics) WithIDSecret(secret []byte) Topics {
	t.idKey = append([]byte(nil), secret...)
	if len(secret) == 0 {
		t.idKey = nil
	}
	return t
}

// clientID is the one place an agent client id is built: base, then the secret's tag.
func (t Topics) clientID(base string) string {
	id := t.ClientPrefix() + base
	if t.idKey == nil {
		return id
	}
	h := hmac.New(sha256.New, t.idKey)
	fmt.Fprintf(h, "mosquitto-ha client id\x00%s", id)
	return id + "-" + hex.EncodeToString(h.Sum(nil))[:idTagHex]
}

// LocalID is node's agent's connection to its own broker.
func (t Topics) LocalID(node string) string { return t.clientID(node + "-local") }

// LinkID is from's agent's connection to to's broker.
func (t Topics) LinkID(from, to string) string { return t.clientID(from + "-to-" + to) }

// PullID is from's agent's retained pull on to's broker.
func (t Topics) PullID(from, to string) string { return t.clientID(from + "-pull-" + to) }

// ReaderID is node's agent's reader of its own broker's retained messages, for a pull from peer.
func (t Topics) ReaderID(node, peer string) string { return t.clientID(node + "-retained-" + peer) }

// CountID is node's agent's connection that makes its broker publish its client counts again
// (countnudge.go).
func (t Topics) CountID(node string) string { return t.clientID(node + "-count") }

// ProbeID is node's agent's startup probe.
func (t Topics) ProbeID(node string) string { return t.clientID(node + "-probe") }

// IsReserved reports whether a topic belongs to the cluster's own traffic (never relayed).
func (t Topics) IsReserved(topic string) bool {
	_, _, fwd := t.Unforward(topic)
	return fwd || t.IsBatch(topic) || t.isForwardParent(topic) || strings.HasPrefix(topic, t.Control()) ||
		strings.HasPrefix(topic, "$SYS/")
}

// isForwardParent recognises the parent level of a forward prefix ("$forward" for "$forward/"),
// which the agent's "$forward/#" subscription matches too (MQTT 3.1.1 section 4.7.1.2) and on
// which the probe makes its round trip: it is the cluster's, never relayed.
func (t Topics) isForwardParent(topic string) bool {
	for _, p := range []string{t.forward, t.forwardRetain, t.forwardBatch} {
		if topic+"/" == p {
			return true
		}
	}
	return false
}

// ErrReservedRelay marks a relay that would publish into the cluster's own topics: no agent
// sends one (the cluster's topics are never relayed), so it is a forgery, counted as one.
var ErrReservedRelay = fmt.Errorf("%w: relay into a reserved topic", ErrForged)

// checkRelayed refuses a relay whose publishes would land on a reserved topic (control topics
// under $HA/<cluster>/, forward and batch topics, $SYS): republished by the agent, such a
// publish would write the agent's own interest or status past the no-local rule, as if the
// agent had said it. The whole relay is refused: a real agent never sends one.
func (t Topics) checkRelayed(entries []batchEntry) error {
	for _, e := range entries {
		if t.IsReserved(e.Topic) {
			return fmt.Errorf("%w %q", ErrReservedRelay, e.Topic)
		}
	}
	return nil
}
