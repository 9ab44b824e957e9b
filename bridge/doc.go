// Package bridge is the relay engine of mosquitto-ha: one Agent runs beside each unmodified
// Mosquitto broker, learns what the broker's clients subscribe to from its `$SYS/broker/log`
// lines, tells its peers, and relays to each peer only the publishes that peer's clients want.
//
// # Connections
//
// Each agent holds one connection to its own broker and one to every peer broker (full mesh),
// both with the small MQTT client of package bridge/mqttconn.
//
//   - Local connection, client id "mha-<cluster>-<node>-local", MQTT 5, Clean Start 0 and
//     Session Expiry Interval 0xFFFFFFFF (a persistent session that never expires, as a 3.1.1
//     session with clean session 0), every subscription with the options no-local (the agent
//     never receives its own publishes) and retain-as-published: what Mosquitto applied to the
//     3.1.1 bridge bit (protocol 0x84) of earlier releases, whose session it resumes with its
//     subscriptions as they were. MQTT 5 lets it read each publish's properties and republish
//     them (MQTT 5 properties, below). It subscribes to
//     `$SYS/broker/log/#`, `$SYS/broker/clients/total`, `$SYS/broker/uptime`, `#` (every local
//     publish, QoS 2), its own interest topics, the forward topics (below; '#' covers them
//     when the forward prefix does not start with '$') and the `$` filters of its peers'
//     clients ('#' never matches those [MQTT-4.7.2-1]). A relayed publish is republished on
//     this same connection, so no-local keeps it from being relayed again: exactly one hop.
//   - Peer connection to broker P, client id "mha-<cluster>-<node>-to-<P>", clean session,
//     MQTT 3.1.1. It subscribes to P's interest and status topics and publishes relays to P's
//     forward topics; a relay's MQTT 5 properties ride inside the batch payload.
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
// # Wire format (version 3)
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
//	                                      is <node>/push/<peer> (a retained push to <peer>) or
//	                                      <node>/verify (the retained verifier)
//	$HA/<cluster>/<node>/barrier          empty, QoS 1, not retained, nobody subscribes: follows a
//	                                      QoS 0 retained republish (see Retained convergence)
//	$HA/<cluster>/<node>/flood-marker     the nonce in hex, QoS 1, not retained, on the own
//	                                      broker from client id "mha-<cluster>-<node>-retained-
//	                                      flood": ends the stored retained messages of the
//	                                      agent's new session (see Retained convergence)
//	$HA/<cluster>/<node>/sessions         the session registry JSON (below); QoS 1, retained,
//	                                      at most every 100 ms when it changed, and again
//	                                      every 10 s and on each local reconnection
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
//	"MHA1"        magic and version: "MHA1" plain filters only, "MHA2" with share names,
//	              "MHA3" a delta laid out as "MHA2" with a stamp
//	kind    byte  'S' snapshot, 'D' delta
//	epoch   uvarint  the agent's start time in Unix nanoseconds: a later run has a larger epoch,
//	                 which invalidates all earlier sequence numbers
//	seq     uvarint  snapshot: sequence of the last delta it includes; delta: its own sequence
//	stamp   uvarint  "MHA3" only: when the agent read the first subscription the delta adds, in
//	                 Unix nanoseconds; the peer relays what it held back since (catchup.go)
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
// for a pair (served locally, else by exactly one peer with members) is in share.go. A node
// writes "MHA3" only while every peer's signed status says "interest_wire": 3 or more, so no
// peer ever gets a delta it cannot read.
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
//   - one QoS 0 relay of a non-retained publish without MQTT 5 properties: `$forward/T` with the
//     payload;
//   - otherwise a batch on `$forward-b/<node>`: two or more relays, any QoS 1 or 2 relay (it
//     needs its identity, below), a retained one (also at QoS 0, which must still reach the
//     peer), a stamped one, or one with MQTT 5 properties. Its QoS is the highest QoS of its relays, at least 1 when one of
//     them is retained. A sender batches what waited in its queue: at most 512 relays and, past
//     the first, at most 256 KiB of payloads, all of one epoch.
//
// The batch payload:
//
//	"MHB3"        magic and version: "MHB3" when a relay has MQTT 5 properties, else "MHB2"
//	epoch   uvarint  the epoch of the sender's session on its own broker (below)
//	count   uvarint  number of relays, at least 1
//	per relay:
//	  flags   byte     bits 0-1 QoS (0, 1 or 2), bit 2 retain, bit 3 repeat, bit 4 stamp,
//	                   bit 5 props ("MHB3" only), bits 6-7 zero
//	  mid     uvarint  the packet id the sender's broker delivered the publish with (0 for QoS 0)
//	  stamp   8 bytes  big endian, only with bit 4: the retained write's clock (retained.go)
//	  props   only with bit 5: uvarint length (at least 1), then MQTT 5 PUBLISH properties as
//	          the broker encodes them (MQTT 5 §3.3.2.3): Message Expiry Interval (the time left
//	          when sent) and the others the publisher's broker delivered, in their order;
//	          never Topic Alias or Subscription Identifier
//	  topic   uvarint length (1 to 65535), then the topic: UTF-8 without '+', '#' or NUL
//	  payload uvarint length (at most Limits.MaxPayloadBytes), then the payload
//
// A batch without properties is "MHB2" byte for byte: properties cost nothing to a message
// without them. Receivers also read version 1 ("MHB1": no epoch, no mid, flag bits 3-7 zero)
// and the single-relay topic `$forward-r/T` of a retained publish at QoS 1 or 2. An agent
// announces the version it reads in its status ("relay_wire": 3, also in its will), and each
// sender writes what its peer announced: to a peer of version 2 "MHB2" batches, the MQTT 5
// properties dropped (as every release before did); to a peer whose status lacks it (an agent
// of an earlier release, during a rolling upgrade) version 1: the plain topics for one relay,
// an "MHB1" batch otherwise, without identity, stamp or properties, so that peer gets no dedupe
// but loses nothing. Until a peer's status arrives (just after the link's subscribe) version 3
// is sent. An agent of version 2 refuses an "MHB3" batch (no "MHB2" header: logged, dropped).
//
// MQTT 5 properties. A publish reaches a subscriber on another broker with the properties a
// subscriber of its own broker gets: user properties (order and duplicates kept), Payload
// Format Indicator, Content Type, Response Topic, Correlation Data and Message Expiry Interval.
// Topic Alias and Subscription Identifier are the connection's and the subscriber's: the
// receiving broker sets its own. The expiry counts down in whole seconds, as Mosquitto counts
// it: the sender writes the interval its broker gave less the whole seconds the relay waited in
// the agent (in its queue, behind a peer that was down), the receiver takes off the whole
// seconds since it read the batch, and a relay whose time ran out on the way is not sent or not
// republished (counted as expired_relays). Each hop may add up to a second less than it took.
// Not counted: the time a batch waits in the receiving broker for a receiving agent that is
// down (its session queues it; agents do not trust each other's clocks for this). The receiver
// checks every property (type, length, UTF-8) before republishing: a malformed one refuses the
// batch, because the broker would end the local connection for it. MQTT 3.1.1 subscribers get
// no property, as from one broker.
//
// Relay identity and repeats (contract 2). A QoS 1/2 relay is identified by (origin node, from
// the batch topic; epoch; mid; a 64-bit FNV-1a hash of topic and payload that the receiver
// computes). Mosquitto numbers the messages of one session and sends a message it has not seen
// acknowledged again, after the agent reconnects, with the same packet id and DUP set; the
// epoch names that session: a random number kept beside the state file (<state>.epoch, written
// atomically) and replaced when the CONNACK says the broker kept no session (epoch.go). Without
// a state file it is random per process, and the broker's redeliveries after an agent restart
// are not recognised. A sender sets repeat when its broker's DUP flag was set, and on every
// relay it sends again after a link loss. The receiving agent keeps, per origin, a window of
// the last DefaultDedupeWindow (32,768) identities it republished, in a ring file beside the
// state file (<state>.seen.<hex origin>, 32 bytes a record, one write per batch, which a kill -9
// of the agent does not undo; no fsync) (dedupe.go). It drops only relays marked repeat, or
// carried by a forward publish its broker sent with DUP, whose identity it holds and which its
// broker acknowledged. A QoS 2 republish is recorded with its local packet id before it is
// sent, and marked acknowledged on PUBREC before PUBREL: a repeat of one the broker may hold is
// sent again with the same packet id and DUP (Mosquitto does not deliver a QoS 2 message it
// holds twice), one it acknowledged is released again (PUBREL), so QoS 2 stays exactly once
// through a kill -9 of either agent and a link cut. A QoS 1 republish is marked done in the
// file with the next batch: a repeat after a kill in between is republished (at least once).
// Beyond the window (a repeat trailing its first copy by more than 32,768 relays of that
// origin) a repeat is republished: a duplicate, never a loss. Two different messages are
// taken for one only when one is marked repeat and both have the same epoch, mid, topic and
// payload within the window: the same payload on the same topic exactly a multiple of 65,535
// local messages apart, not superseded by a newer first copy.
//
// The receiving agent strips the prefix (or unpacks the batch) and republishes each T on its own
// broker with its own QoS and retain flag; it acknowledges the forward publish once its broker
// acknowledged every republish. Retained publishes and deletions go to every peer, whatever its
// interest, so a later subscriber anywhere gets the current value; this is the documented
// exception to "only what a peer wants". A stamped retained relay is republished only when it
// is newer than what the receiving node holds (below).
//
// # Retained convergence
//
// Every broker ends holding the same retained value for a topic: the last write, where "last"
// is the order of hybrid logical clock stamps (hlc.go), ties broken by the value.
//
// A write's stamp is given by the agent of the broker that took it, when the agent reads it
// from its broker (a write made while the agent is down reaches it later from its session): 48 bits of Unix milliseconds and a 16-bit counter, larger than every stamp
// that agent issued or accepted before (kept across restarts through the register). So a write
// made after another reached its agent, anywhere, is later; writes that no agent saw before
// the other are ordered by their agents' wall clocks, which is "last" up to the clocks' skew.
// Two writes with the same stamp are ordered by a 64-bit hash of their QoS and payload (not by
// node name: a stamp travels in pushes by nodes other than the writer, and every node must
// break the tie the same way). A deletion is a write with an empty payload. A value the agent
// never saw written is older than every stamped write: when its session is new (first start,
// or a broker that lost it), the broker sends every stored retained message on the agent's
// subscription to '#' (those beyond its in-flight window after the SUBACK); those are not
// relayed as writes but pushed with the register's stamp, or as the oldest possible when the
// register does not know them. They end at the flood marker, which another connection of the
// agent publishes after the SUBACK (every second until it arrives, at most a minute: past that
// local retained publishes count as writes again) and which the broker queues behind them.
//
// Skew is bounded: a peer's stamp more than 30 s ahead of this node's wall clock is refused
// (not republished, counted as retained.skewed in Status, logged at most every 10 s), and
// does not move this node's clock; the write stays on the brokers whose agents accepted it
// until a later write replaces it. Keep clocks within that bound (NTP); within it, a write
// made more than the actual skew after another is last.
//
// The register (retainreg.go) keeps, per topic, the stamp and value hash of the last write,
// in "<state file>.retained" (without a state file, in memory only); a record is written
// before the relay that carried its write is acknowledged, so it survives kill -9. At most
// 1,048,576 topics (past that, a new topic's writes are applied as they arrive, unordered, and
// counted); a deletion is remembered for 24 h, after which an older value held by a node away
// longer can come back.
//
// The race inside one broker. The agent republishes a peer's write v1 on its broker while a
// local client's v2 reaches the same broker. v2 reaches the agent after v1 was decided, so its
// stamp is larger: v2 is last. If the broker processed v2 before v1, it now holds v1. Mosquitto
// writes to the agent's socket in processing order, so a local v2 that arrives before the
// completion of the republish of v1 (its PUBACK or PUBCOMP; for a QoS 0 republish, the PUBACK
// of a QoS 1 publish on the barrier topic right after it) was processed first, and the agent
// publishes v2 again. A live subscriber of that broker then sees v2, v1, v2: the older value
// replaced the newer for a moment (measured over 22 runs of 100 rounds of 3 simultaneous
// writers: 3 to 19 of 300 subscriber-topics per run, the longest of a run 0.24 to 22 ms, under
// 2 ms in 15 runs), and v2 twice. Unmodified Mosquitto cannot
// make a publish conditional on the value it holds, so this transient stays. The order of the
// socket says nothing when the broker queued v2 in the agent's session (its in-flight window
// full): v2 then arrives after the completion although processed before. So a QoS 1/2 local
// write that arrives after a completed republish of its topic has the broker's value read (a
// verifier, client id "mha-<cluster>-<node>-retained-verify", subscribes to the topic and ends
// at its marker "<node>/verify"); when the broker holds the republished value and the register
// still holds v2, v2 is published again. At most 4,096 checks wait; past that a check is
// dropped (retained.unverified) and the broker may keep v1 until the next write or push.
//
// Retained push. When the link to a peer comes up, or the peer's agent comes up while the link
// stays up (its status), the agent reads its own broker's retained messages (client id
// "mha-<cluster>-<node>-retained-<peer>", a subscription to '#' ended by a retained-marker
// publish) and relays each to the peer with the register's stamp (stampUnknown, older than any
// write, for a value the register does not know), then the register's deletions; the peer keeps
// what is newer and republishes nothing unchanged. It streams: the reader waits while the
// peer's queue holds 512 relays or 4 MiB, so memory does not grow with the retained set. Pushes
// to one peer are coalesced and start at most every 2 s, and at most every four times the last
// push's duration. A broker that started again, or one without the agent's session, may have
// lost retained values (it restarts from its last autosave): its agent then applies equal
// writes again (a new register generation), so the next push restores them; live subscribers
// there get those values once more. On a reconnection with the session kept the agent reads
// the broker's $SYS/broker/uptime (client id "mha-<cluster>-<node>-retained-uptime") before it
// handles anything of the new connection: a start after the last message of the previous
// connection (or an uptime not read within 5 s) is a restart. A reconnection to the same broker
// process keeps the generation, so a relay the broker delivers again is not republished twice. An agent and its broker restarting together from a
// snapshot that holds the agent's session is not detected.
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
// Sessions (sessions.go, sessionplan.go, sessionwork.go; on unless Options.Sessions says off).
// Each agent publishes the clients its broker holds as their newest holder:
//
//	{"version":1,"node":"<node>","sessions":[{"id":"<client id>","conn":true,
//	  "since":<HLC stamp of its last connect there>,"clean":false,"proto":4,
//	  "subs":{"<filter>":<qos>},"subs_unknown":false,"no_replica":false,
//	  "drained":"<base64 Bloom filter>"}, ...],"sig":"<tag>"}
//
// signed like a status message. Only MQTT 3.1/3.1.1 clients are listed (a v5 client's Session
// Expiry Interval is not logged). "conn" is true only for a connection whose connect line this
// run of the agent read since its last log gap. The publisher leaves out what readers refuse:
// $SYS filters, and every filter of a session with more than 4,096 (then "no_replica": peers
// keep no replica of it). "drained", for a client that connected there within the last 2
// minutes, is a Bloom filter (8 to 16,384 bytes, 7 probes of FNV-1a 64 of topic, 0xff, payload)
// of what that node's drains discarded from its replica in the 60 s before the connect: the node
// the client left relays those (drained.go). An agent with sessions off publishes the registry
// with no session. A peer's registry is refused whole (counted, logged; the last
// accepted one stands) past limits.max_interest_bytes, 262,144 sessions, 4,096 filters a
// session, with a wrong node, version, protocol, filter or QoS, a drained filter outside 8 to
// 16,384 bytes, or a stamp more than 30 s ahead.
// The agent's own connections with a client's id are told from the client's by their address
// in the connect line, so they never show as the client. A client id whose newest connect is
// on another node while its client is connected here is taken over: the agent connects to its
// broker as that id (clean session false unless either connect was clean, no will, MQTT
// 3.1.1), acknowledges nothing and disconnects; Mosquitto closes the older connection and keeps
// the session with whatever was unacknowledged [MQTT-3.1.4-2]. Every other node (or
// sessions.replicas of them, by rendezvous hashing of the client id) keeps a replica of a
// persistent session: connect as the id, subscribe the holder's filters with their QoS (not
// its $share ones), disconnect; the interest model sees those subscriptions, so peers relay
// to it. While the holder's current registry lists the client's same connect as connected, the
// holder's link and agent are up (a live status within 6 s) and its registry was accepted within
// 30 s, the replica is drained every sessions.drain_interval (connect, acknowledge what comes
// until 20 ms of quiet, at most 300 ms, disconnect). All of that is checked again when the drain
// starts (one planned more than 250 ms before is dropped) and before each batch of
// acknowledgements (with a round trip to the holder's broker), and nothing is acknowledged
// before the agent read the drain's own connect line with no takeover line for the id right
// before it (else the connection closed a client connected here unseen:
// it disconnects at once). A removal's clean connect follows such a checked connect. It is
// never drained while its client is offline or its holder unreachable. A clean connect
// anywhere removes the replicas. One connection at a time per agent, at most
// sessions.connect_rate a second, takeovers first.
//
// # Files
//
// agent.go (lifecycle), options.go (options and defaults), local.go (local connection and
// dispatcher), sys.go (log lines and client accounting), interest.go (the local interest model),
// journal.go (its state file), announce.go (own interest out), interestwire.go (interest
// layout), peer.go (one peer's state), peerlink.go (peer connection and peer interest in),
// remote.go (a peer's interest), relayout.go and queue.go (relays out), share.go (the relay
// choice for shared subscriptions), relayin.go (relays in), relaywire.go (relay layout),
// epoch.go and dedupe.go (relay identity and repeats), retained.go (retained convergence and
// push), hlc.go (the clock), retainreg.go (the register), retainverify.go (the verifier),
// dollar.go ('$' subscriptions), sessions.go (the session registry), sessionplan.go (what the
// registries ask for), sessionwork.go (connections with clients' ids),
// topics.go (names), auth.go (signature), status.go (status), probe.go (startup probe).
package bridge
