// options.go owns what configures an Agent: Options, the Limits on what peers may send, and
// every default, exported so that cmd applies the same values (the one place defaults live).

package bridge

import (
	"crypto/tls"
	"log/slog"
	"time"
)

// PeerAddr names a peer broker.
type PeerAddr struct {
	Name    string
	Address string // host:port
	// TLS, when set, makes the connection to this broker use TLS.
	TLS *tls.Config
}

// Options configure an Agent. Zero values take the defaults below.
type Options struct {
	Cluster string
	Node    string
	// Local is this node's broker, host:port; LocalTLS, when set, makes it a TLS connection.
	Local    string
	LocalTLS *tls.Config
	Peers    []PeerAddr
	// Username and Password authenticate every agent connection (optional).
	Username, Password string
	ForwardPrefix      string
	// IgnoreClients never count as interest (health checkers); agent connections never do.
	IgnoreClients []string
	// StatePath is where the local interest is kept across restarts; "" keeps none.
	StatePath      string
	BufferMessages int
	BufferBytes    int
	MaxInflight    int
	Keepalive      time.Duration
	// ReadPause paces the reads of a busy agent connection, so that one wake-up reads the
	// packets of a whole pause (mqttconn gather.go); negative reads every packet at once.
	ReadPause        time.Duration
	SnapshotInterval time.Duration
	// ProbeTimeout bounds the wait for the probe's own log lines.
	ProbeTimeout time.Duration
	// ClusterSecret, when set, signs every relay and interest message (HMAC-SHA256); messages
	// without a valid signature are dropped and counted as forged.
	ClusterSecret []byte
	// Limits bound what peers may send.
	Limits Limits
	// Sessions makes persistent sessions follow their client across the cluster, and a client
	// id have one connection cluster-wide (sessions.go); the zero value turns that off.
	Sessions SessionOptions
	Logger   *slog.Logger
	// Version names the agent's build in its status messages (optional).
	Version string
}

// Limits bound what peers may send. Whatever exceeds them is refused, logged and counted, and
// the agent keeps running; a peer whose interest was refused is sent everything (never less).
type Limits struct {
	// MaxFilters is the most filters a peer may hold (default 1,048,576).
	MaxFilters int
	// MaxFilterBytes is the longest filter accepted (default 65535, the MQTT limit).
	MaxFilterBytes int
	// MaxInterestBytes is the largest interest message accepted (default 64 MiB).
	MaxInterestBytes int
	// MaxPayloadBytes is the largest relayed payload republished (default 268435455, the MQTT
	// limit).
	MaxPayloadBytes int
}

// The defaults of Options and Limits, each taken when the field is zero (or negative).
const (
	// DefaultForwardPrefix is a $ topic: '#' subscribers never see relays [MQTT-4.7.2-1].
	DefaultForwardPrefix = "$forward/"
	// DefaultBufferMessages bounds the relays kept per peer while it is down or slow: about 10 s
	// of a busy link.
	DefaultBufferMessages = 100000
	// DefaultBufferBytes bounds the payload bytes kept per peer: 64 MiB.
	DefaultBufferBytes = 64 << 20
	// DefaultMaxInflight bounds unacknowledged QoS >= 1 publishes per connection: Mosquitto drops
	// publishes past about 20 unfinished QoS 2 ones (design.md).
	DefaultMaxInflight = 16
	// DefaultKeepalive is the MQTT keepalive of agent connections: a dead peer is noticed within
	// 1.5 x this.
	DefaultKeepalive = 10 * time.Second
	// DefaultReadPause: while packets queue up, a connection reads at most once a millisecond
	// (the Go runtime's timer granularity when idle). It adds at most 1 ms to a message under
	// load and nothing to a lone one (mqttconn gather.go; docs/benchmarks.md).
	DefaultReadPause = time.Millisecond
	// DefaultSnapshotInterval is the least time between two retained interest snapshots: a
	// joining peer waits at most about this for a fresh one.
	DefaultSnapshotInterval = time.Second
	// DefaultProbeTimeout bounds the wait for the probe's own log lines.
	DefaultProbeTimeout = 5 * time.Second
	// DefaultDedupeWindow is how many QoS 1/2 relay identities the receiving agent remembers
	// per origin node (dedupe.go): 32 bytes each in a file beside the state file, 1 MiB per
	// origin, and 40 bytes each in memory, 1.25 MiB per origin at the bound (at most 48 bytes:
	// TestDedupeWindowMemory). It must exceed the relays a repeat can trail its first
	// copy by: the origin's in-flight window (max_inflight_messages, 20 by default) after an
	// agent restart, or the relays in flight on a link that is cut (at most max_inflight x 512
	// per peer). A repeat older than the window is republished: a duplicate, never a loss.
	// It stays under 65535, the cycle of a session's packet ids.
	DefaultDedupeWindow = 32768

	// DefaultMaxFilters is the most filters one peer may hold.
	DefaultMaxFilters = 1 << 20
	// DefaultMaxFilterBytes is the longest filter accepted: the MQTT limit [MQTT-4.7.3-3].
	DefaultMaxFilterBytes = maxFilterBytes
	// DefaultMaxInterestBytes is the largest interest message accepted: 64 MiB.
	DefaultMaxInterestBytes = 64 << 20
	// DefaultMaxPayloadBytes is the largest relayed payload republished: the MQTT maximum
	// Remaining Length.
	DefaultMaxPayloadBytes = 268435455
)

// Retained convergence (retained.go, retainreg.go, hlc.go).
const (
	// maxClockSkew bounds how far ahead of this node's wall clock a peer's retained write may be
	// stamped: further ahead, it is refused (counted, logged) and the clock is left alone.
	maxClockSkew = 30 * time.Second
	// DefaultMaxRetainedTopics bounds the retained register: about 100 bytes plus the topic per
	// entry, so 1,048,576 topics of 50 bytes cost about 150 MB at most.
	DefaultMaxRetainedTopics = 1 << 20
	// retainedTombstoneTTL is how long a deletion is remembered: an older value held by a node
	// away longer than this can come back.
	retainedTombstoneTTL = 24 * time.Hour
	// retainedPushMinInterval is the least time between two retained pushes to one peer.
	retainedPushMinInterval = 2 * time.Second
	// pushWindow is how many relays a peer's queue may hold before a retained push waits.
	pushWindow = 512
	// pushWindowBytes is the payload bytes a peer's queue may hold before a retained push waits.
	pushWindowBytes = 4 << 20
)

// withDefaults returns o with every unset field at its default.
func (o Options) withDefaults() Options {
	if o.ForwardPrefix == "" {
		o.ForwardPrefix = DefaultForwardPrefix
	}
	o.BufferMessages = orDefault(o.BufferMessages, DefaultBufferMessages)
	o.BufferBytes = orDefault(o.BufferBytes, DefaultBufferBytes)
	o.MaxInflight = orDefault(o.MaxInflight, DefaultMaxInflight)
	o.Keepalive = orDefault(o.Keepalive, DefaultKeepalive)
	if o.ReadPause == 0 {
		o.ReadPause = DefaultReadPause
	}
	o.SnapshotInterval = orDefault(o.SnapshotInterval, DefaultSnapshotInterval)
	o.ProbeTimeout = orDefault(o.ProbeTimeout, DefaultProbeTimeout)
	o.Limits = o.Limits.withDefaults()
	o.Sessions = o.Sessions.withDefaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// withDefaults returns l with every unset limit at its default.
func (l Limits) withDefaults() Limits {
	l.MaxFilters = orDefault(l.MaxFilters, DefaultMaxFilters)
	l.MaxFilterBytes = orDefault(l.MaxFilterBytes, DefaultMaxFilterBytes)
	l.MaxInterestBytes = orDefault(l.MaxInterestBytes, DefaultMaxInterestBytes)
	l.MaxPayloadBytes = orDefault(l.MaxPayloadBytes, DefaultMaxPayloadBytes)
	return l
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
