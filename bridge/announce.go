// announce.go owns this node's side of the interest exchange: the deltas and snapshots the agent
// publishes on its own broker for its peers, "want everything", and the guard of its own interest
// topics against foreign writes. The payloads are laid out by interestwire.go.

package bridge

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// snapshotBytesPerSecond bounds the retained snapshots an agent publishes while its interest
// keeps changing.
const snapshotBytesPerSecond = 256 << 10

// announcer publishes this node's interest. Its methods run on the dispatcher, except the
// snapshot it builds aside.
type announcer struct {
	node   string
	topics Topics
	signer *signer
	local  *mqttconn.Link
	model  *localInterest // read for snapshots
	// stampOK reports whether every peer reads stamped deltas (interest wire version 3).
	stampOK     func() bool
	limits      *atomic.Pointer[Limits]
	log         *slog.Logger
	minInterval time.Duration // Options.SnapshotInterval
	epoch       uint64        // this run's start, in Unix nanoseconds

	// Owned by the dispatcher.
	seq           uint64
	wantAll       bool
	wantAllReason string
	snapshotDirty bool
	lastSnapshot  time.Time

	// lastSnapshotPayload is the snapshot as last published, to recognise it when it comes back.
	lastSnapshotPayload atomic.Pointer[[]byte]
	snapshotBusy        atomic.Bool  // a snapshot is being built and published
	snapshotEvery       atomic.Int64 // least nanoseconds between snapshots, grows with their size

	controlBytes   atomic.Uint64 // interest snapshots and deltas published
	forgedInterest atomic.Uint64 // foreign publishes on this node's interest topics
}

// wantEverything advertises interest in everything, for reason.
func (n *announcer) wantEverything(reason string) {
	n.wantAllReason = reason
	if n.wantAll {
		return
	}
	n.log.Info("advertising interest in everything", "reason", reason)
	n.wantAll = true
	// A delta, not only the snapshot: peers in sync skip a snapshot of a sequence they hold.
	n.seq++
	n.delta(nil, 0)
}

// exact ends "want everything": peers get exactly the filters from now on, starting with
// changes, so that they never hold exact interest without them.
func (n *announcer) exact(changes []Change) {
	n.wantAll = false
	n.wantAllReason = ""
	n.seq++
	n.delta(changes, 0)
}

// stillUnsure updates the reason of "want everything" and publishes an empty delta, which asks
// the peers' links to prove themselves present (see accounting.go).
func (n *announcer) stillUnsure(reason string, ask bool) {
	n.wantAllReason = reason
	if ask {
		n.seq++
		n.delta(nil, 0)
	}
}

// changed announces one batch of changes as one delta. addedAt is when the agent read the
// first subscription the batch adds (0: none): peers that read stamped deltas relay to this
// node what they read after it and held back (catchup.go).
func (n *announcer) changed(changes []Change, addedAt int64) {
	n.seq++
	if n.stampOK == nil || !n.stampOK() {
		addedAt = 0
	}
	n.delta(changes, addedAt)
}

func (n *announcer) delta(changes []Change, stamp int64) {
	n.snapshotDirty = true
	c := n.local.Conn()
	if c == nil {
		return // peers will see the gap and wait for the snapshot sent on reconnect
	}
	t := n.topics.InterestDelta(n.node)
	// Retained, so a peer that subscribes sees whether the snapshot it gets is behind.
	p := n.signer.seal(t, encodeDelta(n.epoch, n.seq, n.wantAll, changes, stamp))
	n.controlBytes.Add(uint64(len(p)))
	c.Publish(t, 1, true, p, nil)
}

// nextSnapshot says when the next snapshot is due, and whether one is needed at all.
func (n *announcer) nextSnapshot() (due time.Time, dirty bool) {
	return n.lastSnapshot.Add(n.snapshotInterval()), n.snapshotDirty
}

// snapshotNow publishes a snapshot at once: the local connection came back.
func (n *announcer) snapshotNow() {
	n.snapshotDirty, n.lastSnapshot = true, time.Time{} // due now
	n.snapshot()
}

func (n *announcer) snapshot() {
	c := n.local.Conn()
	if c == nil || !n.snapshotBusy.CompareAndSwap(false, true) {
		return // still dirty: retried after a later batch
	}
	seq, all := n.seq, n.wantAll
	n.snapshotDirty = false
	n.lastSnapshot = time.Now()
	// Built aside, so a large interest set does not hold up the log lines behind it. The tree may
	// already hold changes after seq; peers apply changes with set semantics, so replaying those
	// deltas on top changes nothing.
	go func() {
		defer n.snapshotBusy.Store(false)
		t := n.topics.Interest(n.node)
		p := n.signer.seal(t, encodeSnapshot(n.epoch, seq, all, n.model.filters(), n.model.shareList()...))
		n.lastSnapshotPayload.Store(&p)
		c.Publish(t, 1, true, p, nil)
		n.controlBytes.Add(uint64(len(p)))
		// Large interest sets are resent less often: at most about 256 KiB/s of snapshots while
		// the interest keeps changing (deltas carry the changes; a joining peer relays everything
		// until the next snapshot, so this trades traffic for a longer wide window, never for
		// delivery).
		n.snapshotEvery.Store(int64(max(n.minInterval, time.Duration(len(p))*time.Second/snapshotBytesPerSecond)))
	}()
}

// snapshotInterval is the least time between two snapshots.
func (n *announcer) snapshotInterval() time.Duration {
	return max(n.minInterval, time.Duration(n.snapshotEvery.Load()))
}

// isOwn recognises this node's own interest topics.
func (n *announcer) isOwn(topic string) bool {
	return strings.HasPrefix(topic, n.topics.Interest(n.node))
}

// checkOwn handles a message on this node's own interest topics. No-local keeps the agent's live
// publishes away (and relays can never write there, see Topics.checkRelayed), so it is either
// the retained snapshot or delta of this or an earlier run of the agent, or somebody else's
// write: then the snapshot is restored, at once when the last snapshot is older than the
// snapshot interval, else when that interval ends (finding: a flood of foreign writes must not
// make the agent publish a full snapshot for each, bypassing the rate limit). Peers meanwhile
// hold either the foreign write (refused when it is not signed with the cluster secret) or a
// gap: they relay everything to this node until the restored snapshot, never less.
func (n *announcer) checkOwn(topic string, payload []byte) {
	if last := n.lastSnapshotPayload.Load(); last != nil && bytes.Equal(payload, *last) {
		return
	}
	foreign := true
	if p, err := n.signer.open(topic, payload); err == nil {
		msg, err := decodeInterest(p, *n.limits.Load())
		// An earlier run's snapshot or delta (a smaller epoch), or this run's own (retained,
		// sent again when the local connection comes back), is ours. A larger epoch is no run
		// of this agent's yet: somebody made it up to make peers ignore this run's deltas.
		if err == nil && (msg.Epoch < n.epoch || (msg.Epoch == n.epoch && msg.Seq <= n.seq)) {
			foreign = false
		}
	}
	if foreign {
		n.forgedInterest.Add(1)
		n.log.Warn("foreign publish on this node's interest topic: restoring the snapshot", "topic", topic, "bytes", len(payload))
	}
	// A retained delta of an earlier run needs nothing; a write to the snapshot topic replaced
	// the retained snapshot peers join with, and a foreign delta needs a snapshot to close the
	// gap it opened: both are restored within the rate limit (the dispatcher publishes the dirty
	// snapshot when nextSnapshot says it is due).
	if foreign || topic == n.topics.Interest(n.node) {
		n.snapshotDirty = true
		if !time.Now().Before(n.lastSnapshot.Add(n.snapshotInterval())) {
			n.snapshot()
		}
	}
}
