// Package bridge is the relay engine of mosquitto-ha: one Agent runs beside each unmodified
// Mosquitto broker, learns what the broker's clients subscribe to from its `$SYS/broker/log`
// lines, tells its peers, and relays to each peer only the publishes that peer's clients want.
//
// # Connections
//
// Each agent holds one connection to its own broker and one to every peer broker (full mesh).
//
//   - Local connection, client id "mha-<cluster>-<node>-local", MQTT 3.1.1 with the bridge bit
//     (protocol 0x84), persistent session. Mosquitto then applies no-local (the agent never
//     receives its own publishes) and retain-as-published. It subscribes to
//     `$SYS/broker/log/#`, `$SYS/broker/clients/total`, `#` (every local publish, QoS 2) and the
//     forward topics (below). A relayed publish is republished on this same connection, so
//     no-local keeps it from being relayed again: exactly one hop.
//   - Peer connection to broker P, client id "mha-<cluster>-<node>-to-<P>", clean session. It
//     subscribes to P's interest topics and publishes relays to P's forward topics.
//
// Messages from the local broker are acknowledged only once every peer that needed them has
// acknowledged the relay, so a crash of the agent loses nothing the broker accepted and a live
// peer was to get: the broker redelivers to the persistent session. Relays for a peer that is
// down are acknowledged at once and wait in a bounded buffer (the local broker must not stall
// for it); those are lost if the agent dies before the peer returns.
//
// Limits. A relay the broker still waits for is never dropped, whatever the buffer bounds
// (buffer_messages, buffer_bytes: 100,000 relays, 64 MiB per peer by default, which bound only
// QoS 0 relays and relays parked for a peer that is down, dropped oldest first). Instead the
// agent applies backpressure: it holds the broker's in-flight window for its session, so the
// broker sends no further QoS 1/2 message until one is acknowledged, and queues them in the
// agent's session meanwhile, up to max_queued_messages and max_queued_bytes; past those
// Mosquitto drops further messages for the agent without telling their publisher (it has
// acknowledged them already): size those limits for the largest burst that may wait. The
// agent's memory for these relays is bounded by the broker's window: max_inflight_messages
// (Mosquitto's default 20; 0 means no limit) messages, or max_inflight_bytes, times the largest
// message (message_size_limit, at most 256 MB), e.g. 20 x 20 MB = 400 MB. The window is shared:
// a peer that is up but slower than the publishers slows the QoS 1/2 relays to every peer, until
// it catches up or its link is declared lost (1.5 x keepalive without an answer) and parked.
//
// State. With a state file, the local interest survives a restart as a base file and a journal
// of CRC-checked records (journal.go): a torn record is skipped, a full disk is reported once
// and bounded, and a state file that cannot be read stops the agent (ErrStateUnreadable).
//
// # Control topics (version 1)
//
// All control traffic lives under `$HA/<cluster>/`; MQTT wildcards at the first level never match
// `$` topics [MQTT-4.7.2-1], so ordinary `#` subscribers never see it.
//
//	$HA/<cluster>/<node>/interest        retained snapshot of <node>'s interest, QoS 1
//	$HA/<cluster>/<node>/interest/delta  ordered changes since the snapshot, QoS 1; the last
//	                                     one is retained too
//
// Both are published by <node>'s agent on its own broker; a peer that connects or reconnects gets
// the retained snapshot at once, then follows the deltas. Snapshot and delta share one binary
// layout (integers are unsigned varints, as encoding/binary.AppendUvarint writes them):
//
//	"MHA1"        magic and version
//	kind    byte  'S' snapshot, 'D' delta
//	epoch   uvarint  the agent's start time in Unix nanoseconds: a later run has a larger epoch,
//	                 which invalidates all earlier sequence numbers
//	seq     uvarint  snapshot: sequence of the last delta it includes; delta: its own sequence
//	flags   byte     bit 0 "all": the node cannot know its interest (fresh start, lost log
//	                 lines) and wants every publish
//	count   uvarint  number of entries
//	entries          delta: op byte '+' or '-', then filter; snapshot: filter only.
//	                 filter = uvarint length, then that many bytes of UTF-8
//
// A peer applies a delta only when it has the snapshot of the same epoch and the delta's seq is
// one past the last it applied. On any gap it treats the node as wanting everything (more
// traffic, never less delivery) until the next snapshot, which the node republishes at most every
// snapshot interval while its interest changes. The retained snapshot may lag the deltas by up
// to that interval; the retained last delta shows a joining peer the gap. A peer trusts what it
// learned only after its own marker publish on `$HA/<cluster>/<self>/synced/<node>` comes back,
// which follows every retained message of its subscription. Changes are batched: one delta message carries
// every change the agent made while handling one batch of log lines.
//
// A link that receives one of these interest messages with the "all" flag from the node it links
// to then unsubscribes, at most once a second and without waiting, from `$HA/<cluster>/<self>/present`,
// a filter it never subscribed to: that node's broker logs the line with the link's client id,
// which proves to that node's agent, by identity, that the link is one of its broker's clients
// (see Accounting). An agent that cannot yet account for a peer's link publishes an empty delta
// (with "all") at each $SYS tick to ask for it.
//
// # Accounting (contract 7)
//
// An agent advertises exact interest only when every client its broker holds is one it can name
// and whose subscriptions it knows (accounting.go): the clients proven present by an unambiguous
// connect line of the current log subscription (ignored clients and the cluster's links: any
// unambiguous line of theirs), with no line since that may have ended their session, and whose
// subscriptions were all logged to it; their number must equal `$SYS/broker/clients/total` at a
// $SYS tick. A client first seen subscribing, every reading of an ambiguous line, a client
// restored from the state file, an MQTT 5 client after a disconnect (its session expiry is not
// logged) add interest but never count. After any gap in the log (agent restart, local
// reconnection) no client counts until it connects again, and a persistent session that
// resumes after a gap keeps the agent wanting everything until it connects with a clean start
// or expires: the log does not say what it subscribed to meanwhile. Forwarding more costs
// traffic, never delivery.
//
// # Relayed publishes
//
// A local publish on topic T that some peer wants goes to that peer's broker, once, as
//
//	<forward_prefix>T      (default "$forward/T")  not retained
//	<forward_prefix-r>T    (default "$forward-r/T") a retained publish (or a deletion)
//
// with the original QoS and payload; the forward publish itself is never retained on the peer
// broker. The peer's agent strips the prefix and republishes T with the same QoS and retain flag.
// Retained publishes and deletions go to every peer, whatever its interest, so a later subscriber
// anywhere gets the current value; this is the documented exception to "only what a peer wants".
// When a peer link comes up, the agent also reads the peer broker's stored retained messages
// (client id "mha-<cluster>-<node>-pull-<peer>", a plain subscription to '#' ended by a marker
// publish) and republishes locally those that differ from its own broker's, except the ones it
// relayed itself while the link was down, so a node that was away or joins late catches up.
package bridge
