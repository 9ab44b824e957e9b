// Package bridge is the relay engine of mosquitto-ha: one Agent runs beside each unmodified
// Mosquitto broker, learns what the broker's clients subscribe to from its `$SYS/broker/log`
// lines, tells its peers, and relays to each peer only the publishes that peer's clients want.
//
// # Connections
//
// Each agent holds one connection to its own broker and one to every peer broker (full mesh),
// both with the small MQTT 3.1.1 client of package bridge/mqttconn.
//
//   - Local connection, client id "mha-<cluster>-<node>-local", MQTT 3.1.1 with the bridge bit
//     (protocol 0x84), persistent session. Mosquitto then applies no-local (the agent never
//     receives its own publishes) and retain-as-published. It subscribes to
//     `$SYS/broker/log/#`, `$SYS/broker/clients/total`, `$SYS/broker/uptime`, `#` (every local
//     publish, QoS 2), its own interest topics, the forward topics (below; '#' covers them
//     when the forward prefix does not start with '$') and the `$` filters of its peers'
//     clients ('#' never matches those [MQTT-4.7.2-1]). A relayed publish is republished on
//     this same connection, so no-local keeps it from being relayed again: exactly one hop.
//   - Peer connection to broker P, client id "mha-<cluster>-<node>-to-<P>", clean session. It
//     subscribes to P's interest and status topics and publishes relays to P's forward topics.
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
// # Wire format (version 1)
//
// Everything one agent says to another travels as MQTT publishes on the brokers. The topics,
// with <cluster> and <node> names from the cluster file and T an application topic; the control
// topics are published by <node>'s agent on its own broker unless said otherwise:
//
//	$HA/<cluster>/<node>/interest         snapshot of <node>'s interest; QoS 1, retained
//	$HA/<cluster>/<node>/interest/delta   a delta; QoS 1, retained (the last one stays)
//	$HA/<cluster>/<node>/status           Status JSON; QoS 0, retained, every 2 s; the will and
//	                                      the last word on stopping: QoS 1, retained
//	$HA/<cluster>/<node>/status/last      the last live Status JSON; QoS 0, retained, every
//	                                      2 s, on the own broker and every peer's; no will
//	$HA/<cluster>/<node>/synced/<peer>    empty, QoS 1, on <peer>'s broker: the sync marker
//	$HA/<cluster>/<name>/retained-marker  empty, QoS 1: ends a read of retained messages; <name>
//	                                      is <node>/local/<peer> on the own broker and
//	                                      <node>/sync/<peer> on <peer>'s
//	$HA/<cluster>/probe/<nonce>           subscribed and unsubscribed by the startup probe
//	<forward_prefix>T                     "$forward/T": one relay of a publish on T
//	<forward_prefix-r>T                   "$forward-r/T": one relay of a retained publish on T
//	<forward_prefix-b><node>              "$forward-b/<node>": a batch of relays from <node>
//	<forward_prefix>$mha-probe/<nonce>    "probe", QoS 1, from a client without credentials:
//	                                      the startup probe's check of the broker's ACL
//
// Relays are published by the sending agent on the receiving node's broker and are never
// retained themselves. Control traffic lives under `$HA/<cluster>/` and relays under the forward
// prefix (a `$` topic by default); MQTT wildcards at the first level never match `$` topics
// [MQTT-4.7.2-1], so ordinary `#` subscribers see neither. The forward topics of the retained relays and of batches
// are the forward prefix without its trailing '/', then "-r/" or "-b/".
//
// Interest. Snapshot and delta share one binary layout (integers are unsigned varints, as
// encoding/binary.AppendUvarint writes them):
//
//	"MHA1"        magic and version: "MHA1" plain filters only, "MHA2" with share names
//	kind    byte  'S' snapshot, 'D' delta
//	epoch   uvarint  the agent's start time in Unix nanoseconds: a later run has a larger epoch,
//	                 which invalidates all earlier sequence numbers
//	seq     uvarint  snapshot: sequence of the last delta it includes; delta: its own sequence
//	flags   byte     bit 0 "all": the node cannot know its interest (fresh start, lost log
//	                 lines) and wants every publish
//	count   uvarint  number of entries
//	entries          delta: op byte '+' or '-', then [group], then filter; snapshot:
//	                 [group], then filter. group, in "MHA2" only: uvarint length (0 for a
//	                 plain filter, else the share name of "$share/<group>/<filter>": no '/',
//	                 '+' or '#'), then its bytes. filter = uvarint length (1 to
//	                 Limits.MaxFilterBytes, at most 65535), then that many bytes of UTF-8
//	                 without NUL
//
// Shared subscriptions. A node announces a shared subscription as its (group, filter) pair,
// never as the plain filter, and writes "MHA2" only for a message that holds one, so a
// cluster that uses no $share upgrades one agent at a time. An agent older than "MHA2" refuses
// such a message (no "MHA1" header) and relays everything to its sender: upgrade every agent
// before clients use $share across brokers, or accept that traffic meanwhile. The relay choice
// for a pair (served locally, else by exactly one peer with members) is in share.go.
//
// A peer that connects or reconnects gets the retained snapshot at once, then follows the
// deltas. It applies a delta only when it has the snapshot of the same epoch and the delta's seq
// is one past the last it applied. On any gap it treats the node as wanting everything (more
// traffic, never less delivery) until the next snapshot, which the node republishes at most every
// snapshot interval while its interest changes. The retained snapshot may lag the deltas by up
// to that interval; the retained last delta shows a joining peer the gap. A peer trusts what it
// learned only after its own marker publish on `$HA/<cluster>/<self>/synced/<node>` comes back,
// which follows every retained message of its subscription. Changes are batched: one delta
// message carries every change the agent made while handling one batch of log lines.
// Messages over Limits.MaxInterestBytes or Limits.MaxFilters are refused, and so widen.
//
// Status. The JSON of Status, refreshed every 2 s; the broker publishes the agent's will, the
// same JSON with "agent_up": false, zero counters and no "time", when the agent vanishes, and the
// agent publishes it with "time" (its stop) when it stops. The same live JSON goes retained to
// `$HA/<cluster>/<node>/status/last` on its own broker and on every peer's broker: no will
// overwrites it, so it tells when a vanished agent was last seen, and it shows an agent whose own
// broker refuses it. A peer reads only "agent_up": while it is false, nobody
// tells the peer what that node's clients want, so it relays everything to that broker, where the
// agent's persistent session queues it.
//
// Presence. A link that receives an interest message with the "all" flag from the node it links
// to then unsubscribes, at most once a second and without waiting, from `$HA/<cluster>/<self>/present`,
// a filter it never subscribed to: that node's broker logs the line with the link's client id,
// which proves to that node's agent, by identity, that the link is one of its broker's clients
// (see Accounting). An agent that cannot yet account for a peer's link publishes an empty delta
// (with "all") at each $SYS tick to ask for it.
//
// Accounting (contract 7). An agent advertises exact interest only when every client its broker holds is one it can name
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
// Relays. A local publish on topic T that some peer wants goes to that peer's broker, once, as
// a forward publish that is never retained itself:
//
//   - one relay of a non-retained publish: `$forward/T` with the original QoS and payload;
//   - one relay of a retained publish (or a deletion, an empty payload) at QoS 1 or 2:
//     `$forward-r/T` with the original QoS and payload;
//   - otherwise a batch on `$forward-b/<node>`: two or more relays, or a single retained relay
//     published at QoS 0 (which must still reach the peer). Its QoS is the highest QoS of its
//     relays, at least 1 when one of them is retained. A sender batches what waited in its queue:
//     at most 512 relays and, past the first, at most 256 KiB of payloads.
//
// The batch payload:
//
//	"MHB1"        magic and version
//	count   uvarint  number of relays, at least 1
//	per relay:
//	  flags   byte     bits 0-1 QoS (0, 1 or 2), bit 2 retain, bits 3-7 zero
//	  topic   uvarint length (1 to 65535), then the topic: UTF-8 without '+', '#' or NUL
//	  payload uvarint length (at most Limits.MaxPayloadBytes), then the payload
//
// The receiving agent strips the prefix (or unpacks the batch) and republishes each T on its own
// broker with its own QoS and retain flag; it acknowledges the forward publish once its broker
// acknowledged every republish. Retained publishes and deletions go to every peer, whatever its
// interest, so a later subscriber anywhere gets the current value; this is the documented
// exception to "only what a peer wants". When a peer link comes up, the agent also reads the
// peer broker's stored retained messages (client id "mha-<cluster>-<node>-pull-<peer>", a plain
// subscription to '#' ended by a retained-marker publish, and its own broker's the same way as
// "mha-<cluster>-<node>-retained-<peer>") and republishes locally those that differ from its own
// broker's, except the ones it relayed itself while the link was down, so a node that was away
// or joins late catches up.
//
// Signature. With a cluster secret, every interest message (snapshot and delta) and every
// forward publish (single relay or batch) carries a tag appended to its payload:
//
//	tag = first 16 bytes of HMAC-SHA256(secret, topic || 0x00 || payload)
//
// where topic is the topic the message travels on, so a tag cannot be moved to another topic.
// A message whose tag is missing or wrong is dropped and counted as forged. A status message
// carries the same tag, over its JSON without it, as the JSON's last member `"sig":"<32 hex
// digits>"` (auth.go), and a peer takes "agent_up": true only from a status newer than every one
// it took before. Marker messages are not signed. Without a secret nothing is appended. With a
// secret the client ids end in "-" and 16 hex digits of HMAC-SHA256(secret, "mosquitto-ha client
// id" || 0x00 || id) (topics.go), e.g. "mha-<cluster>-<node>-local-<tag>", so that a client
// without the secret cannot take an agent's session.
//
// Whatever the secret, a relay whose publish would land on a reserved topic ($HA/<cluster>/...,
// a forward topic, $SYS) is refused whole and counted as forged: no agent relays those.
//
// # Files
//
// agent.go (lifecycle), options.go (options and defaults), local.go (local connection and
// dispatcher), sys.go (log lines and client accounting), interest.go (the local interest model),
// journal.go (its state file), announce.go (own interest out), interestwire.go (interest
// layout), peer.go (one peer's state), peerlink.go (peer connection and peer interest in),
// remote.go (a peer's interest), relayout.go and queue.go (relays out), share.go (the relay
// choice for shared subscriptions), relayin.go (relays in),
// relaywire.go (relay layout), retained.go (retained pull), dollar.go ('$' subscriptions),
// topics.go (names), auth.go (signature), status.go (status), probe.go (startup probe).
package bridge
