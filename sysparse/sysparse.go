// Package sysparse turns the log lines Mosquitto 2.0 publishes on $SYS/broker/log/... into
// events: a client connected, subscribed, unsubscribed, disconnected, was taken over, or had its
// session expired.
//
// Why: Mosquitto has no API that tells an outside process what its clients subscribe to. With
// `log_dest topic` and the log types subscribe, unsubscribe, notice and error it publishes one
// line per such event, and the agent next to the broker reads them to keep its interest model
// (which filters local clients want) and to tell its peers what to forward here.
//
// Safety rule: the agent must never under-report interest, so this package does not guess. The
// lines are free text: client ids and filters may contain spaces, ": ", " as ", parentheses,
// and a line is cut by Mosquitto's 1000-byte log buffer (see [LineMax]). Where a line has more
// than one reading, the Parser narrows them with facts (the filter syntax Mosquitto enforces,
// the timestamp shape it learned from unambiguous lines of the same broker, the client ids it
// saw connect) and, if more than one reading is left, returns all of them in [Event.Readings]
// so that the caller can take the widest interest. A cut filter comes with [Event.Truncated]
// and a safe widening in [Event.Widened]. The one judgement it makes: a reading whose client
// id is known wins over readings whose ids are not, although a client that connected before
// the Parser started has an id it does not know.
//
// Line formats of Mosquitto 2.0.11, with the topic they are published on:
//
//	.../N  New client connected from <ip>:<port> as <id> (p2, c1, k60).
//	       New client connected from <ip>:<port> as <id> (p2, c1, k60, u'<user>').
//	       New bridge connected from <ip>:<port> as <id> (p2, c1, k60).
//	       Client <id> disconnected.                           (the client sent DISCONNECT)
//	       Client <id> closed its connection.
//	       Client <id> has exceeded timeout, disconnecting.
//	       Client <id> disconnected due to protocol error.
//	       Client <id> disconnected due to malformed packet.   (also: oversize packet, oversize
//	                                                           payload, out of memory, QoS too high
//	                                                           or retain not supported)
//	       Client <id> disconnected, not authorised.
//	       Client <id> been disconnected by administrative action.
//	       Client <id> disconnected: <system error>.
//	       Bad socket read/write on client <id>: <error>
//	       Expiring client <id> due to timeout.
//	.../E  Client <id> already connected, closing old connection.
//	.../M/subscribe    <id> <qos> <filter>
//	.../M/unsubscribe  <id> <filter>
//
// Every line may start with a timestamp and ": ": the epoch seconds (the default), the
// strftime output of log_timestamp_format, or nothing (log_timestamp false). One broker writes
// the same timestamp shape on every line; the Parser learns it from N and E lines, whose
// message is recognisable, and uses it to cut the timestamp off M lines, where it is not.
//
// MQTT 5 clients are logged "p5" and their lines have the same forms; no MQTT 5 property is
// logged (not the Session Expiry Interval, nor the will delay), and debug lines (`log_type
// debug` or `all`, e.g. the CONNACK with its session-present flag) are never published on the
// topic (see CleanSession and testdata/mosquitto-2.0.11/mqtt5_sessions.log).
//
// Mosquitto does not log again the subscriptions of a persistent session that reconnects, nor
// the end of a clean session's subscriptions at disconnect, nor the subscriptions made before
// the reader subscribed: the caller keeps that state (see Event.CleanSession).
package sysparse

import (
	"errors"
	"fmt"
	"strings"
)

// ErrMalformed is returned (wrapped, with detail) for a line on a topic this package reads that
// does not have the format of Mosquitto 2.0.11. For a .../M/subscribe line it means that some
// interest is unknown: the caller should widen (forward everything) and say so.
var ErrMalformed = errors.New("sysparse: malformed log line")

// LineMax is the longest payload Mosquitto 2.0.11 publishes on $SYS/broker/log/...: it formats
// each line, timestamp included, into a 1000-byte buffer (src/logging.c, log__vprintf) and
// publishes strlen of it, so a longer line is cut to 999 bytes. Measured here with mosquitto
// 2.0.11: a SUBSCRIBE to "a/b/" followed by 1200 'c's and a CONNECT with a 1100-byte client id
// both produced payloads of exactly 999 bytes, with and without a timestamp (see
// TestCaptureTruncation and testdata/mosquitto-2.0.11/). A payload of LineMax bytes may have
// been cut; the Parser treats it as cut, which can only widen.
const LineMax = 999

// Topics Mosquitto publishes its log on. TopicLog is the filter that reads them all.
const (
	TopicLog         = "$SYS/broker/log/#"
	TopicNotice      = "$SYS/broker/log/N"
	TopicError       = "$SYS/broker/log/E"
	TopicSubscribe   = "$SYS/broker/log/M/subscribe"
	TopicUnsubscribe = "$SYS/broker/log/M/unsubscribe"
)

// UnknownClient is the id Mosquitto logs for a connection that closed before its CONNECT was
// accepted ("Client <unknown> closed its connection.").
const UnknownClient = "<unknown>"

// Protocol numbers as Mosquitto logs them after 'p' in a connect line. They are Mosquitto's
// internal enum, not the MQTT protocol level: an MQTT 3.1.1 client is logged "p2".
const (
	ProtocolMQTT31  = 1 // MQTT 3.1 (protocol level 3)
	ProtocolMQTT311 = 2 // MQTT 3.1.1 (protocol level 4), also with the bridge bit (0x84)
	ProtocolMQTT5   = 5 // MQTT 5 (protocol level 5)
)

// Kind says what a line reports.
type Kind int

// Kinds of events.
const (
	// Ignored is every line that is not one of the kinds below: startup noise, "New connection
	// from", $SYS lines of other topics. It is not an error.
	Ignored Kind = iota
	// Connected: "New client connected from IP:PORT as <id> (p2, c1, k60)." or "New bridge
	// connected ...", with an optional ", u'user'".
	Connected
	// Subscribed: "<id> <qos> <filter>" on .../M/subscribe, once per filter of a SUBSCRIBE.
	Subscribed
	// Unsubscribed: "<id> <filter>" on .../M/unsubscribe, also for filters the client never
	// subscribed to.
	Unsubscribed
	// Disconnected: "Client <id> disconnected." and the other forms, see Reason.
	Disconnected
	// TakenOver: "Client <id> already connected, closing old connection." on .../E. A
	// Connected line for the same id follows.
	TakenOver
	// Expired: "Expiring client <id> due to timeout." on .../N (notice level). A persistent
	// session of a client that is offline has ended, with its subscriptions: MQTT 5 Session
	// Expiry Interval, or persistent_client_expiration for MQTT 3.
	Expired
)

var kindNames = [...]string{"Ignored", "Connected", "Subscribed", "Unsubscribed", "Disconnected", "TakenOver", "Expired"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Reason says why a client went away (Disconnected).
type Reason int

// Reasons.
const (
	ReasonNone          Reason = iota // not a Disconnected event
	ReasonDisconnect                  // the client sent DISCONNECT: "Client <id> disconnected."
	ReasonClosed                      // the connection closed without DISCONNECT: "closed its connection."
	ReasonTimeout                     // keepalive exceeded: "has exceeded timeout, disconnecting."
	ReasonProtocolError               // "disconnected due to protocol error."
	ReasonOther                       // any other form; Event.Detail says which
)

var reasonNames = [...]string{"None", "Disconnect", "Closed", "Timeout", "ProtocolError", "Other"}

func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Reading is one way to split an ambiguous line.
type Reading struct {
	ClientID string
	QoS      byte   // Subscribed
	Filter   string // Subscribed, Unsubscribed: as logged (cut when the Event is Truncated)
	// Widened is set when the Event is Truncated (Subscribed, Unsubscribed): the safe widening
	// of Filter, see Event.Widened.
	Widened string
}

// Event is what one log line reports. Only the fields of its Kind are set.
type Event struct {
	Kind     Kind
	ClientID string
	// Filter is the topic filter exactly as logged, with any $share/<group>/ prefix (and the
	// listener's mount point, if one is configured). Subscribed, Unsubscribed.
	Filter string
	// QoS is the granted QoS of a Subscribed filter.
	QoS byte
	// CleanSession is true for "c1" (clean session / clean start), false for "c0" (persistent
	// session: its subscriptions survive a disconnect and are not logged again on reconnect).
	// For MQTT 5 (Protocol 5) it is the Clean Start flag only: whether the session outlives
	// the connection depends on the Session Expiry Interval, which is not logged. Captured
	// (testdata/mosquitto-2.0.11/mqtt5_sessions.log): "c1" with an interval keeps the session
	// after the disconnect until "Expiring client <id> due to timeout."; "c0" with interval 0
	// ends it at the disconnect, with no further line.
	CleanSession bool
	// Protocol is the number after 'p' in a connect line: ProtocolMQTT31 (1), ProtocolMQTT311
	// (2) or ProtocolMQTT5 (5).
	Protocol int
	// KeepAlive is the number after 'k' in a connect line, in seconds.
	KeepAlive int
	// Bridge is true for "New bridge connected" (the client set the MQTT bridge bit).
	Bridge bool
	// Username is the text of u'...' in a connect line, "" when absent.
	Username string
	// Reason says why a Disconnected client went away; Detail is the text of the line's
	// ending for ReasonOther (e.g. "disconnected due to malformed packet", or the system
	// error of "Client <id> disconnected: <error>.").
	Reason Reason
	Detail string
	// Timestamp is the line's timestamp as logged, without the ": " that follows it; "" when
	// the line has none (or, with Readings, when the first reading takes none).
	Timestamp string
	// Truncated says the line reached LineMax: Mosquitto may have cut it. For Subscribed and
	// Unsubscribed the end of Filter is then missing (Filter may even be "", and may end in
	// the middle of a UTF-8 sequence). For Connected and Expired, ClientID is the start of
	// the id (a Connected one may carry the start of the "(p2, c1, k60" group after it) and
	// is not remembered. An N or E line that is cut before its kind can be told is Ignored
	// with Truncated set. A line that parsed up to its known ending is complete and not
	// Truncated, even at LineMax bytes.
	Truncated bool
	// Widened is set when Truncated on Subscribed and Unsubscribed: a filter that covers
	// every filter that starts with Filter, made of Filter's complete levels and "#": a cut
	// "a/b/cde" gives "a/b/#", a cut "$share/g/a/b" gives "$share/g/a/#", and "#" when not
	// even one level is known complete ("#" then stands for every topic). For Subscribed the
	// caller should add Widened in place of Filter. For Unsubscribed it is informational:
	// the caller cannot know which filter was removed and keeps its interest.
	//
	// A cut line may also have cut the client id itself (ids can be longer than the buffer):
	// unless exactly one reading has a known id, the last reading is then that one, with the
	// rest of the line as ClientID, an empty Filter and Widened "#".
	Widened string
	// Readings has more than one entry when the line has more than one reading even with the
	// known client ids: the caller must take the widest interest. For Subscribed: add the
	// filter (Widened when Truncated) of every reading, each for its ClientID. For
	// Unsubscribed, Disconnected and Connected (whose clean session would drop the old
	// subscriptions): remove nothing. ClientID, QoS, Filter and Widened then hold the first
	// reading, which is no more likely than the others. Readings is nil otherwise.
	//
	// A Disconnected reading with an empty ClientID stands for a connection that closed
	// before CONNECT: it is given with UnknownClient when a client uses "<unknown>" as its id.
	Readings []Reading
}

// Parser turns log lines into events. It remembers the client ids it saw connect (so it can
// split "<id> <qos> <filter>" when ids or filters contain spaces) and forgets them when they
// disconnect or expire, and it learns the timestamp shape of the broker's lines. It is not
// safe for concurrent use.
//
// The caller should Remember its own client id before it subscribes to TopicLog: its own
// subscribe line is the first line it reads, before any N line has taught the timestamp
// shape. Ids are not forgotten on an ambiguous disconnect (Readings), and every reading of an
// ambiguous connect is remembered, so the known set can only err towards more readings.
//
// Cost: a line is read in time linear in its length for each timestamp prefix considered (one
// once the shape is learned); Readings are only allocated for ambiguous lines. The worst line
// (a cut line of ": " and spaces before any shape is learned) has about 13,000 readings and
// takes a few milliseconds.
type Parser struct {
	known map[string]struct{}
	// shape is the class string (see stampClass) of the timestamp prefix, ": " included, of
	// the last N or E line that was recognised; "" when that line had none.
	shape      []byte
	shapeKnown bool
	scratch    []cand
	filters    suffixFilters
}

// NewParser returns a Parser that knows no client ids and no timestamp shape.
func NewParser() *Parser {
	return &Parser{known: make(map[string]struct{})}
}

// Remember marks an id as connected (e.g. restored from saved state).
func (p *Parser) Remember(clientID string) {
	if _, ok := p.known[clientID]; !ok {
		p.known[strings.Clone(clientID)] = struct{}{}
	}
}

// Forget marks an id as not connected.
func (p *Parser) Forget(clientID string) { delete(p.known, clientID) }

// Known reports whether the id is marked as connected.
func (p *Parser) Known(clientID string) bool {
	_, ok := p.known[clientID]
	return ok
}

// ResetTimestamp forgets the learned timestamp shape, e.g. after the broker restarted with
// another configuration. The Parser learns it again from the next N or E line it recognises;
// until then it considers every reading of an M line.
func (p *Parser) ResetTimestamp() {
	p.shape = p.shape[:0]
	p.shapeKnown = false
}

// Parse turns one message of $SYS/broker/log/# into an Event. topic is the full MQTT topic.
// Lines of topics other than N, E, M/subscribe and M/unsubscribe are Ignored. The only error
// is ErrMalformed (wrapped).
func (p *Parser) Parse(topic string, payload []byte) (Event, error) {
	switch topic {
	case TopicSubscribe:
		return p.parseM(Subscribed, string(payload))
	case TopicUnsubscribe:
		return p.parseM(Unsubscribed, string(payload))
	case TopicNotice:
		return p.parseNE(false, string(payload))
	case TopicError:
		return p.parseNE(true, string(payload))
	}
	return Event{}, nil
}

// cand is one reading of an N or E line.
type cand struct {
	id       string
	kind     Kind
	reason   Reason
	detail   string
	protocol int
	clean    bool
	keep     int
	user     string
}

// resolve picks the reading to use: the only candidate, or the only one whose client id is
// known. It returns -1 when the line stays ambiguous.
func (p *Parser) resolve(cs []cand) int {
	if len(cs) == 1 {
		return 0
	}
	pick := -1
	for i := range cs {
		if !p.Known(cs[i].id) {
			continue
		}
		if pick >= 0 {
			return -1
		}
		pick = i
	}
	return pick
}

func readings(cs []cand) []Reading {
	rs := make([]Reading, len(cs))
	for i, c := range cs {
		rs[i] = Reading{ClientID: c.id}
	}
	return rs
}

func timestamp(line string, cut int) string {
	if cut < 2 {
		return ""
	}
	return line[:cut-2]
}
