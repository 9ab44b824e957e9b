// Package haproxy generates the haproxy.cfg of the MQTT front of a mosquitto-ha cluster.
//
// Clients reach the brokers through HAProxy 2.6 in TCP mode. The generated file makes HAProxy
// MQTT-aware in three places, because a plain TCP balancer gets each of them wrong:
//
//   - Only MQTT gets in. The frontend waits (inspect-delay, 5s) for the client's first
//     packet and rejects the connection unless it is a valid MQTT packet
//     (`req.payload(0,0),mqtt_is_valid`, MQTT 3.1, 3.1.1 and 5.0): a port scanner or a stray
//     HTTP client is closed without a reply and never reaches a broker.
//   - The same client id lands on the same broker, on every HAProxy host, without shared state.
//     The frontend stores the CONNECT's client identifier in a session variable
//     (`req.payload(0,0),mqtt_field_value(connect,client_identifier)`) and the backend hashes
//     it on a consistent-hash ring (`balance hash var(sess.mqtt_client_id)`, `hash-type
//     consistent`). Two HAProxy hosts fed the same Brokers list compute the same ring, so a
//     client keeps its broker (and its persistent session) whichever host the VIP is on, with
//     no stick table and no `peers` section to synchronise. The variable is needed: HAProxy
//     2.6.12 accepts `balance hash req.payload(0,0),mqtt_field_value(...)` directly, but that
//     hash finds nothing when the backend picks a server (the payload is evidently no longer
//     readable then) and HAProxy silently falls back to round robin: measured, the same id
//     went to different brokers on consecutive connections. The tests check the affinity
//     end to end, through two HAProxy processes.
//     The ring is built from the servers' ids, which follow their order in Brokers: append
//     new brokers at the end, since removing or inserting one in the middle moves the clients
//     of the brokers after it. A client with an empty client id (the broker assigns one) has
//     nothing to hash and is balanced round robin.
//   - A client id may be pinned to a broker (Params.Pins): `use-server <broker> if { var(sess.
//     mqtt_client_id) -m beg <prefix> }`, before the hash. HAProxy ignores a use-server rule
//     whose server is down, so a pinned client falls back to the hash while its broker is down.
//     The use: every member of a `$share` group on one broker, where Mosquitto itself shares
//     the group, so the cluster never delivers a message once per broker (mosquitto-ha's
//     README). The first matching pin wins.
//   - A broker is up only when it accepts an MQTT session. The health check opens a TCP
//     connection, sends an MQTT 3.1.1 CONNECT (CheckConnectPacket), expects the CONNACK
//     "accepted" (20 02 00 00) and says DISCONNECT (e0 00). A broker that listens but refuses
//     sessions (wrong credentials, overloaded, hung) is marked down, and
//     `on-marked-down shutdown-sessions` closes its client connections at once, so clients
//     reconnect through HAProxy to a live broker instead of waiting for their keepalive.
//
// Idle timeouts follow the clients' MQTT keepalive K: a client sends a packet at least every K,
// and the broker itself closes a client silent for 1.5 x K [MQTT-3.1.2-24]. HAProxy must be the
// more patient of the two, or it would cut healthy idle clients:
//
//	timeout client = timeout server = timeout tunnel = 1.5 x K + 5s
//
// (95s for the default K = 60s; the 5s margin covers a TCP retransmission or two). The same
// formula is written as a comment inside the generated file.
//
// Generate is deterministic: the same Params give the same bytes, so the file can be compared,
// committed, and generated independently on each HAProxy host. With Username/Password set the
// file contains the health-check credentials (hex-encoded, not encrypted): write it mode 0640
// or 0600 (`mosquitto-ha haproxy --output` writes 0640), and use an account of its own.
package haproxy

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults, applied by Generate to zero fields of Params.
const (
	// DefaultCheckInterval is the health-check interval: a dead broker is marked down after
	// CheckFall failed checks (3s), which is also about how long its clients wait before
	// HAProxy closes their connections.
	DefaultCheckInterval = time.Second
	// DefaultCheckClientID is the client id of the health check's CONNECT. The agents ignore
	// it. Two HAProxy hosts checking one broker with the same id can meet: the broker then
	// closes the older check session (a session takeover), which may fail that check. One
	// failure is absorbed by CheckFall; giving each host its own id (e.g. "haproxy-hc-lb1")
	// avoids it.
	DefaultCheckClientID = "haproxy-hc"
	// DefaultClientKeepalive is the keepalive the clients use (paho's and mosquitto_sub's
	// default): the idle timeouts are derived from it.
	DefaultClientKeepalive = 60 * time.Second
	// DefaultStatsSocket is the admin socket of Debian's haproxy package.
	DefaultStatsSocket = "/run/haproxy/admin.sock"
	// DefaultMaxConn (0) leaves `maxconn` out of the file: HAProxy 2.6 then derives it from
	// its file-descriptor limit (about half of it, as each client connection also opens one
	// to a broker: 9985 under a limit of 20000). A fixed default would stop HAProxy from
	// starting on a host with a lower limit ("Cannot raise FD limit"); MQTT connections are
	// long-lived, so the most the host allows is the right default. Set MaxConn to cap memory.
	DefaultMaxConn = 0
)

// Fixed settings of the generated file.
const (
	// CheckFall is how many failed checks in a row mark a broker down.
	CheckFall = 3
	// CheckRise is how many passed checks in a row mark a broker up again.
	CheckRise = 2
	// CheckKeepalive is the keepalive field of the health check's CONNECT, in seconds.
	CheckKeepalive = 60
	// IdleMargin is added to 1.5 x ClientKeepalive to get the idle timeouts.
	IdleMargin = 5 * time.Second
	// InspectDelay is how long the frontend waits for a client's complete CONNECT.
	InspectDelay = 5 * time.Second
	// ConnectTimeout bounds the TCP connect to a broker.
	ConnectTimeout = 5 * time.Second
	// MaxCheckPacket bounds the health check's CONNECT: HAProxy sends it from its check
	// buffer (tune.bufsize, 16 kB by default); a larger packet would fail every check.
	MaxCheckPacket = 8192
	// MinCheckInterval is the smallest CheckInterval accepted: below it a check (connect,
	// CONNECT, CONNACK) on a busy broker is in the noise and floods the broker's log.
	MinCheckInterval = 100 * time.Millisecond
)

// ErrInvalidParams is wrapped by every error Generate returns for bad Params.
var ErrInvalidParams = errors.New("haproxy: invalid params")

// Backend is one Mosquitto broker behind HAProxy.
type Backend struct {
	// Name is the HAProxy server name (letters, digits, '-', '_', '.', ':'), shown in stats.
	Name string
	// Address is the broker's MQTT listener, "host:port" (IPv6 as "[addr]:port"). HAProxy
	// resolves a host name once, when it starts, and refuses to start if it does not resolve.
	Address string
}

// Params describes the HAProxy front of one cluster. Zero fields take the Default* values.
type Params struct {
	// Cluster names the cluster: it prefixes the frontend and backend names.
	Cluster string
	// Bind is the listen address, "ip:port" or "*:port" (e.g. "198.18.0.100:1883").
	Bind string
	// Brokers are the backends, 1..n. Their order matters for the hash ring (see the
	// package doc): keep it the same on every HAProxy host and append new brokers at the end.
	Brokers []Backend
	// CheckInterval is the health-check interval (default 1s, at least 100ms, whole ms).
	CheckInterval time.Duration
	// CheckClientID is the client id of the health check's CONNECT (default "haproxy-hc").
	CheckClientID string
	// Username and Password, when set, are sent in the health check's CONNECT, for brokers
	// with allow_anonymous false. Password requires Username [MQTT-3.1.2-22]. They end up in
	// the file (hex): give the check an account of its own that may use no topic, never the
	// account of the agents (which may inject relays).
	Username, Password string
	// ClientKeepalive is the clients' MQTT keepalive (default 60s, whole seconds): the idle
	// timeouts are 1.5 x ClientKeepalive + 5s.
	ClientKeepalive time.Duration
	// StatsSocket is the path of the admin socket (default "/run/haproxy/admin.sock"). Its
	// directory must exist.
	StatsSocket string
	// MaxConn is the global connection limit (default: derived by HAProxy from its
	// file-descriptor limit, see DefaultMaxConn).
	MaxConn int
	// Pins send the clients whose id starts with a prefix to one broker while it is up (see
	// the package doc); the first matching pin wins.
	Pins []Pin
}

// Pin sends the clients whose id starts with ClientIDPrefix to the broker named Broker.
type Pin struct {
	// ClientIDPrefix is 1 to 256 printable ASCII characters without space, quote, '\', '#',
	// '{' or '}' (it is written into the file as an ACL pattern).
	ClientIDPrefix string
	// Broker is the Name of one of Params.Brokers.
	Broker string
}

// withDefaults returns p with the zero fields set to their defaults.
func (p Params) withDefaults() Params {
	if p.CheckInterval == 0 {
		p.CheckInterval = DefaultCheckInterval
	}
	if p.CheckClientID == "" {
		p.CheckClientID = DefaultCheckClientID
	}
	if p.ClientKeepalive == 0 {
		p.ClientKeepalive = DefaultClientKeepalive
	}
	if p.StatsSocket == "" {
		p.StatsSocket = DefaultStatsSocket
	}
	return p
}

// idleTimeout is the client, server and tunnel timeout for clients with keepalive k:
// the broker closes a client silent for 1.5 x k [MQTT-3.1.2-24]; HAProxy waits a margin more.
func idleTimeout(k time.Duration) time.Duration {
	return k*3/2 + IdleMargin
}

// Generate returns the haproxy.cfg for p. It validates p first and reports every problem at
// once in an error that wraps ErrInvalidParams (and a *multierror.Error listing them).
func Generate(p Params) ([]byte, error) {
	p = p.withDefaults()
	if err := p.validate(); err != nil {
		return nil, err
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	idle := idleTimeout(p.ClientKeepalive)
	frontend := p.Cluster + "-mqtt"
	backend := p.Cluster + "-brokers"
	check := CheckConnectPacket(p.CheckClientID, p.Username, p.Password)

	w("# haproxy.cfg for the MQTT front of mosquitto-ha cluster %q.", p.Cluster)
	w("# Generated by `mosquitto-ha haproxy`: do not edit by hand, change the cluster file and")
	w("# generate it again. Check it with `haproxy -c -f <file>`.")
	w("")
	w("global")
	if p.MaxConn > 0 {
		w("    maxconn %d", p.MaxConn)
	} else {
		w("    # No maxconn: HAProxy derives it from its file-descriptor limit.")
	}
	w("    stats socket %s mode 600 level admin", p.StatsSocket)
	w("    stats timeout 30s")
	w("    # MQTT connections live for hours: after a reload, close the old process's")
	w("    # connections within a minute (their clients reconnect to the new one).")
	w("    hard-stop-after 60s")
	w("")
	w("defaults")
	w("    mode tcp")
	w("    timeout connect %s", haDuration(ConnectTimeout))
	w("    # Idle timeouts from the clients' MQTT keepalive K = %s: a client sends a packet at",
		haDuration(p.ClientKeepalive))
	w("    # least every K and the broker drops it after 1.5 x K [MQTT-3.1.2-24]; HAProxy must")
	w("    # wait longer than the broker: 1.5 x K + %s = %s.", haDuration(IdleMargin), haDuration(idle))
	w("    timeout client %s", haDuration(idle))
	w("    timeout server %s", haDuration(idle))
	w("    timeout tunnel %s", haDuration(idle))
	w("    # A health check must get its CONNACK within one interval.")
	w("    timeout check %s", haDuration(p.CheckInterval))
	w("")
	w("frontend %s", frontend)
	w("    bind %s", p.Bind)
	w("    # Wait for the client's first packet; close anything that is not MQTT without a reply.")
	w("    tcp-request inspect-delay %s", haDuration(InspectDelay))
	w("    tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }")
	w("    # Keep the client id for the backend's hash: read it here, while the CONNECT is still")
	w("    # readable (a backend's `balance hash req.payload(...)` no longer sees it and falls back")
	w("    # to round robin).")
	w("    tcp-request content set-var(sess.mqtt_client_id) req.payload(0,0),mqtt_field_value(connect,client_identifier)")
	w("    default_backend %s", backend)
	w("")
	w("backend %s", backend)
	w("    # The same client id goes to the same broker, on every HAProxy host given the same")
	w("    # broker list, without shared state: a consistent hash of the CONNECT's client id.")
	w("    # An empty client id has nothing to hash: round robin.")
	w("    balance hash var(sess.mqtt_client_id)")
	w("    hash-type consistent")
	if len(p.Pins) > 0 {
		w("    # Pinned client ids: a client id that starts with the prefix goes to that broker while")
		w("    # it is up (e.g. every member of a $share group on one broker); while it is down, the")
		w("    # hash above decides. The first matching pin wins.")
		for _, pin := range p.Pins {
			w("    use-server %s if { var(sess.mqtt_client_id) -m beg %s }", pin.Broker, pin.ClientIDPrefix)
		}
	}
	w("    # A refused connect to a broker not yet marked down is retried on another broker.")
	w("    option redispatch 1") // a retry goes to another broker at once, not after the last attempt
	w("    retries 2")
	w("    # Health check: send an MQTT 3.1.1 CONNECT (clean session, keepalive %d) with", CheckKeepalive)
	w("    # client id %q%s;", p.CheckClientID, credentialsNote(p))
	w("    # expect CONNACK with session present 0 [MQTT-3.2.2-1] and return code 0 \"accepted\"")
	w("    # (20 02 00 00); send DISCONNECT (e0 00).")
	w("    option tcp-check")
	w("    tcp-check connect")
	w("    tcp-check send-binary %x", check)
	w("    tcp-check expect binary 20020000")
	w("    tcp-check send-binary e000")
	w("    # Down after %d failed checks (%s), up after %d passed; a broker marked down has its",
		CheckFall, haDuration(CheckFall*p.CheckInterval), CheckRise)
	w("    # client connections closed at once so that they reconnect to a live broker.")
	w("    default-server check inter %s fall %d rise %d on-marked-down shutdown-sessions",
		haDuration(p.CheckInterval), CheckFall, CheckRise)
	for _, s := range p.Brokers {
		w("    server %s %s", s.Name, s.Address)
	}
	return []byte(b.String()), nil
}

func credentialsNote(p Params) string {
	switch {
	case p.Password != "":
		return fmt.Sprintf(", username %q and a password", p.Username)
	case p.Username != "":
		return fmt.Sprintf(", username %q", p.Username)
	}
	return ""
}

// haDuration formats d in HAProxy's time syntax: whole seconds as "95s", else milliseconds.
// validate ensures every duration written is a whole number of milliseconds.
func haDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

// CheckConnectPacket returns the MQTT 3.1.1 CONNECT the health check sends: protocol "MQTT"
// level 4, clean session, keepalive 60 s, client id clientID, and the username and password
// when set. The password is only sent with a username [MQTT-3.1.2-22]; Generate rejects a
// password without a username rather than dropping it. Each string must be at most 65535
// bytes [MQTT-1.5.3] (Generate checks it); a longer one panics.
//
// With clientID "haproxy-hc" and no credentials it is
// 101600044d5154540402003c000a686170726f78792d6863.
func CheckConnectPacket(clientID, username, password string) []byte {
	// [MQTT-3.1.2-1] protocol name "MQTT"; [MQTT-3.1.2-2] protocol level 4 for 3.1.1.
	vh := []byte{0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0, CheckKeepalive >> 8, CheckKeepalive & 0xff}
	flags := byte(0x02) // clean session: the check leaves no state on the broker
	payload := appendString(nil, clientID)
	if username != "" {
		flags |= 0x80 // [MQTT-3.1.2-19] username flag: a username follows the client id
		payload = appendString(payload, username)
		if password != "" {
			flags |= 0x40 // [MQTT-3.1.2-21] password flag: a password follows the username
			payload = appendString(payload, password)
		}
	}
	vh[7] = flags
	pkt := []byte{0x10} // CONNECT; its reserved flag bits are 0 [MQTT-2.2.2-1]
	pkt = appendVarint(pkt, len(vh)+len(payload))
	pkt = append(pkt, vh...)
	return append(pkt, payload...)
}

// appendString appends an MQTT UTF-8 string: a 2-byte big-endian length and the bytes.
func appendString(b []byte, s string) []byte {
	if len(s) > 0xffff {
		panic(fmt.Sprintf("haproxy: MQTT string of %d bytes exceeds 65535", len(s)))
	}
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

// appendVarint appends the MQTT Remaining Length encoding of n (2.2.3): 7 bits per byte, least
// significant group first, the high bit set on every byte but the last.
func appendVarint(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}
