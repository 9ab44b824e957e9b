package sysparse

import (
	"bufio"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// rawClient speaks just enough MQTT 3.1, 3.1.1 and 5 over TCP to drive a broker through cases
// a full client library hides: a close without DISCONNECT, a silent client, garbage, a second
// CONNECT, a v5 session expiry interval.
type rawClient struct {
	t     testing.TB
	conn  net.Conn
	r     *bufio.Reader
	level byte // protocol level of the CONNECT: 3, 4, 5 or 0x84
	mid   uint16
}

type rawConnect struct {
	level     byte // 3 (MQTT 3.1), 4 (3.1.1), 5, or 0x84 (3.1.1 with the bridge bit); 0 means 4
	id        string
	clean     bool
	keepalive uint16
	username  string
	// sessionExpiry is sent as the MQTT 5 Session Expiry Interval when not zero.
	sessionExpiry uint32
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, r: bufio.NewReader(c)}
}

// connectRaw dials and sends CONNECT, and waits for CONNACK with return code 0.
func connectRaw(t testing.TB, addr string, o rawConnect) *rawClient {
	t.Helper()
	c := dialRaw(t, addr)
	c.connect(o)
	return c
}

// The raw client encodes with the relay connection's encoder (bridge/mqttconn). It stays in
// package sysparse, not sysparse_test, because the capture cases that drive it share their ids
// and filters (longFilter, longClientID) with the internal replay tests; a test file importing
// that leaf package (which imports nothing from this module) adds no dependency to sysparse.
var appendString = mqttconn.AppendString

func packet(header byte, body []byte) []byte { return mqttconn.AppendPacket(nil, header, body) }

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) v5() bool { return c.level == 5 }

func (c *rawClient) connect(o rawConnect) {
	c.t.Helper()
	if o.level == 0 {
		o.level = 4
	}
	c.level = o.level
	var b []byte
	if o.level == 3 {
		b = appendString(b, "MQIsdp")
	} else {
		b = appendString(b, "MQTT")
	}
	b = append(b, o.level)
	flags := byte(0)
	if o.clean {
		flags |= 0x02
	}
	if o.username != "" {
		flags |= 0x80
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint16(b, o.keepalive)
	if c.v5() {
		var props []byte
		if o.sessionExpiry != 0 {
			props = binary.BigEndian.AppendUint32([]byte{0x11}, o.sessionExpiry)
		}
		b = mqttconn.AppendRemainingLength(b, len(props)) // a Variable Byte Integer, encoded alike
		b = append(b, props...)
	}
	b = appendString(b, o.id)
	if o.username != "" {
		b = appendString(b, o.username)
	}
	c.write(packet(mqttconn.FixedHeader(mqttconn.Connect, 0), b))
	typ, body := c.read()
	if typ != mqttconn.FixedHeader(mqttconn.Connack, 0) || len(body) < 2 || body[1] != 0 {
		c.t.Fatalf("CONNACK for %q: type %#x body %x", o.id, typ, body)
	}
}

// read returns the next packet's first byte and body.
func (c *rawClient) read() (byte, []byte) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, body, err := mqttconn.ReadPacket(c.r)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return h, body
}

// subscribe sends one SUBSCRIBE with every filter and waits for SUBACK.
func (c *rawClient) subscribe(filters []string, qos []byte) {
	c.t.Helper()
	c.mid++
	b := binary.BigEndian.AppendUint16(nil, c.mid)
	if c.v5() {
		b = append(b, 0)
	}
	for i, f := range filters {
		b = appendString(b, f)
		b = append(b, qos[i])
	}
	c.write(packet(mqttconn.FixedHeader(mqttconn.Subscribe, 2), b))
	if typ, body := c.read(); typ != mqttconn.FixedHeader(mqttconn.Suback, 0) {
		c.t.Fatalf("SUBACK: type %#x body %x", typ, body)
	}
}

// unsubscribe sends one UNSUBSCRIBE with every filter and waits for UNSUBACK.
func (c *rawClient) unsubscribe(filters ...string) {
	c.t.Helper()
	c.mid++
	b := binary.BigEndian.AppendUint16(nil, c.mid)
	if c.v5() {
		b = append(b, 0)
	}
	for _, f := range filters {
		b = appendString(b, f)
	}
	c.write(packet(mqttconn.FixedHeader(mqttconn.Unsubscribe, 2), b))
	if typ, body := c.read(); typ != mqttconn.FixedHeader(mqttconn.Unsuback, 0) {
		c.t.Fatalf("UNSUBACK: type %#x body %x", typ, body)
	}
}

// disconnect sends DISCONNECT and closes the connection.
func (c *rawClient) disconnect() {
	c.t.Helper()
	var body []byte
	if c.v5() {
		body = []byte{0} // reason code 0: normal disconnection
	}
	c.write(packet(mqttconn.FixedHeader(mqttconn.Disconnect, 0), body))
	c.close()
}

// close closes the TCP connection without DISCONNECT.
func (c *rawClient) close() { c.conn.Close() }
