package bridge

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// conn is a minimal MQTT 3.1.1 client connection for the relay's hot path. Compared with a
// general client it reads through one buffer (one read system call for many packets), coalesces
// writes (one write for every packet queued while the previous write ran), and completes
// acknowledged publishes with callbacks instead of a token and a goroutine each. The agent uses
// it for its local and peer connections; paho serves everything else.
//
// It does not reconnect: a link owns one conn at a time and dials again when it ends.
type conn struct {
	nc net.Conn
	r  *bufio.Reader

	wmu    sync.Mutex
	w      *bufio.Writer
	nextID uint16
	// pending holds the completion of every packet waiting for its acknowledgement (PUBACK,
	// PUBCOMP, SUBACK, UNSUBACK) by packet id; a nil completion still holds its id.
	pending map[uint16]func(error)
	flush   chan struct{}

	onPublish func(*message) // called on the reader goroutine: must not block on this conn
	keepalive time.Duration
	lastRead  atomic.Int64 // unix nanoseconds

	done    chan struct{}
	errOnce sync.Once
	err     error
}

// errConnLost completes every publish still in flight when a connection ends.
var errConnLost = errors.New("bridge: connection lost")

// message is one PUBLISH received. Ack acknowledges it on the connection it came from, once.
type message struct {
	c       *conn
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	id      uint16
	acked   atomic.Bool
}

// Ack sends PUBACK (QoS 1) or PUBREC (QoS 2). On a connection that has ended it does nothing:
// the broker sends the message again on the next one.
func (m *message) Ack() {
	if m.QoS == 0 || m.c == nil || !m.acked.CompareAndSwap(false, true) || m.c.Err() != nil {
		return
	}
	if m.QoS == 1 {
		m.c.writeAck(0x40, m.id)
	} else {
		m.c.writeAck(0x50, m.id)
	}
}

// connectOptions are the fields of CONNECT.
type connectOptions struct {
	ClientID     string
	Protocol     byte // 4 for MQTT 3.1.1; 0x84 adds the bridge bit
	CleanSession bool
	Keepalive    time.Duration
	Username     string
	Password     string
	WillTopic    string
	WillPayload  []byte
	WillRetain   bool
	TLS          *tls.Config
}

// dial connects and completes the MQTT handshake. onPublish receives every PUBLISH.
func dial(ctx context.Context, addr string, o connectOptions, onPublish func(*message)) (*conn, bool, error) {
	d := net.Dialer{Timeout: 3 * time.Second, KeepAlive: 15 * time.Second}
	var nc net.Conn
	var err error
	if o.TLS != nil {
		td := tls.Dialer{NetDialer: &d, Config: o.TLS}
		nc, err = td.DialContext(ctx, "tcp", addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, false, err
	}
	// net sets TCP_NODELAY on TCP connections by default: no Nagle delay on relays.
	c := &conn{nc: nc, r: bufio.NewReaderSize(nc, 64<<10), w: bufio.NewWriterSize(nc, 64<<10),
		pending: map[uint16]func(error){}, flush: make(chan struct{}, 1), onPublish: onPublish,
		keepalive: o.Keepalive, done: make(chan struct{})}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.w.Write(encodeConnect(o)); err == nil {
		err = c.w.Flush()
	}
	if err != nil {
		nc.Close()
		return nil, false, err
	}
	typ, body, err := c.readPacket()
	if err != nil {
		nc.Close()
		return nil, false, fmt.Errorf("no CONNACK: %w", err)
	}
	if typ != 0x20 || len(body) != 2 {
		nc.Close()
		return nil, false, fmt.Errorf("expected CONNACK, got packet type %#x", typ)
	}
	if body[1] != 0 {
		nc.Close()
		return nil, false, fmt.Errorf("connection refused: %s", connackReason(body[1]))
	}
	_ = nc.SetDeadline(time.Time{})
	c.lastRead.Store(time.Now().UnixNano())
	go c.readLoop()
	go c.writeLoop()
	if o.Keepalive > 0 {
		go c.keepaliveLoop()
	}
	return c, body[0]&1 == 1, nil
}

func connackReason(rc byte) string {
	switch rc {
	case 1:
		return "unacceptable protocol version"
	case 2:
		return "client identifier rejected"
	case 3:
		return "server unavailable"
	case 4:
		return "bad user name or password"
	case 5:
		return "not authorised"
	}
	return fmt.Sprintf("return code %d", rc)
}

func appendMQTTString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendRemaining(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func encodeConnect(o connectOptions) []byte {
	var vh []byte
	vh = appendMQTTString(vh, "MQTT")
	vh = append(vh, o.Protocol)
	var flags byte
	if o.CleanSession {
		flags |= 0x02
	}
	if o.WillTopic != "" {
		flags |= 0x04 | 0x08 // will, QoS 1
		if o.WillRetain {
			flags |= 0x20
		}
	}
	if o.Username != "" {
		flags |= 0x80
		if o.Password != "" {
			flags |= 0x40
		}
	}
	vh = append(vh, flags)
	vh = binary.BigEndian.AppendUint16(vh, uint16(o.Keepalive/time.Second))
	vh = appendMQTTString(vh, o.ClientID)
	if o.WillTopic != "" {
		vh = appendMQTTString(vh, o.WillTopic)
		vh = binary.BigEndian.AppendUint16(vh, uint16(len(o.WillPayload)))
		vh = append(vh, o.WillPayload...)
	}
	if o.Username != "" {
		vh = appendMQTTString(vh, o.Username)
		if o.Password != "" {
			vh = appendMQTTString(vh, o.Password)
		}
	}
	b := appendRemaining([]byte{0x10}, len(vh))
	return append(b, vh...)
}

// readPacket reads one packet: its type nibble (with flags) and its body.
func (c *conn) readPacket() (byte, []byte, error) {
	h, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		mul *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	return h, body, nil
}

func (c *conn) readLoop() {
	for {
		h, body, err := c.readPacket()
		if err != nil {
			c.fail(err)
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		if err := c.handle(h, body); err != nil {
			c.fail(err)
			return
		}
	}
}

func (c *conn) handle(h byte, body []byte) error {
	switch h >> 4 {
	case 3: // PUBLISH
		m := &message{c: c, QoS: (h >> 1) & 3, Retain: h&1 == 1}
		if len(body) < 2 {
			return errors.New("short PUBLISH")
		}
		tl := int(binary.BigEndian.Uint16(body))
		p := 2 + tl
		if len(body) < p {
			return errors.New("short PUBLISH topic")
		}
		m.Topic = string(body[2:p])
		if m.QoS > 0 {
			if len(body) < p+2 {
				return errors.New("short PUBLISH id")
			}
			m.id = binary.BigEndian.Uint16(body[p:])
			p += 2
		}
		m.Payload = body[p:]
		c.onPublish(m)
	case 4, 7: // PUBACK, PUBCOMP
		if len(body) >= 2 {
			c.complete(binary.BigEndian.Uint16(body), nil)
		}
	case 5: // PUBREC: our QoS 2 publish was received; release it
		if len(body) >= 2 {
			c.writeAck(0x62, binary.BigEndian.Uint16(body))
		}
	case 6: // PUBREL: the broker released a QoS 2 message we acknowledged with PUBREC
		if len(body) >= 2 {
			c.writeAck(0x70, binary.BigEndian.Uint16(body))
		}
	case 9: // SUBACK
		if len(body) >= 2 {
			id := binary.BigEndian.Uint16(body)
			var err error
			for _, rc := range body[2:] {
				if rc >= 0x80 {
					err = errors.New("subscription refused")
				}
			}
			c.complete(id, err)
		}
	case 11: // UNSUBACK
		if len(body) >= 2 {
			c.complete(binary.BigEndian.Uint16(body), nil)
		}
	case 13: // PINGRESP
	default:
		return fmt.Errorf("unexpected packet type %d", h>>4)
	}
	return nil
}

func (c *conn) complete(id uint16, err error) {
	c.wmu.Lock()
	o := c.pending[id]
	delete(c.pending, id)
	c.wmu.Unlock()
	if o != nil {
		o(err)
	}
}

// fail ends the connection once and completes everything in flight with errConnLost.
func (c *conn) fail(err error) {
	c.errOnce.Do(func() {
		c.err = err
		c.nc.Close()
		close(c.done)
		c.wmu.Lock()
		pending := c.pending
		c.pending = map[uint16]func(error){}
		c.wmu.Unlock()
		for _, o := range pending {
			if o != nil {
				o(errConnLost)
			}
		}
	})
}

// Done is closed when the connection has ended; Err then says why.
func (c *conn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended.
func (c *conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close sends DISCONNECT and closes the connection, waiting at most a second for a peer that
// does not read. Safe to call twice.
func (c *conn) Close() {
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	if c.wmu.TryLock() || waitLock(&c.wmu, time.Second) {
		_, _ = c.w.Write([]byte{0xe0, 0})
		_ = c.w.Flush()
		c.wmu.Unlock()
	}
	c.fail(errors.New("closed"))
}

// waitLock tries to take mu for at most d.
func waitLock(mu *sync.Mutex, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if mu.TryLock() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// writeTimeout bounds one flush: 1.5 keepalives, at least 5 s.
func (c *conn) writeTimeout() time.Duration { return max(5*time.Second, c.keepalive*3/2) }

func (c *conn) writeLoop() {
	for {
		select {
		case <-c.done:
			return
		case <-c.flush:
		}
		c.wmu.Lock()
		// A peer that stops reading must not hold the writer (and everyone waiting for wmu)
		// forever: a write that makes no progress for the write timeout ends the connection.
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.writeTimeout()))
		err := c.w.Flush()
		c.wmu.Unlock()
		if err != nil {
			c.fail(err)
			return
		}
	}
}

func (c *conn) kick() {
	select {
	case c.flush <- struct{}{}:
	default:
	}
}

func (c *conn) keepaliveLoop() {
	t := time.NewTicker(c.keepalive / 2)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, c.lastRead.Load())) > c.keepalive*3/2 {
			c.fail(errors.New("keepalive timeout"))
			return
		}
		// Never wait for wmu here: a writer stuck on a dead peer must not stop the check above.
		if c.wmu.TryLock() {
			_, _ = c.w.Write([]byte{0xc0, 0}) // PINGREQ
			c.wmu.Unlock()
			c.kick()
		}
	}
}

func (c *conn) writeAck(typ byte, id uint16) {
	c.wmu.Lock()
	_, _ = c.w.Write([]byte{typ, 2, byte(id >> 8), byte(id)})
	c.wmu.Unlock()
	c.kick()
}

// allocID returns a free packet id, or 0 when all 65535 are in flight; the caller holds wmu.
func (c *conn) allocID() uint16 {
	if len(c.pending) >= 65535 {
		return 0
	}
	for {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if _, used := c.pending[c.nextID]; !used {
			return c.nextID
		}
	}
}

// errNoPacketID: every packet id is in flight; the caller sent far more than any bound allows.
var errNoPacketID = errors.New("bridge: no free packet id")

// Publish queues a PUBLISH. For QoS 1 and 2, done runs once the broker acknowledged it (nil)
// or the connection ended (errConnLost); for QoS 0 it runs once the packet is queued.
func (c *conn) Publish(topic string, qos byte, retain bool, payload []byte, done func(error)) {
	h := 0x30 | qos<<1
	if retain {
		h |= 1
	}
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	var hdr [5]byte
	hb := appendRemaining(append(hdr[:0], h), n)
	c.wmu.Lock()
	select {
	case <-c.done:
		c.wmu.Unlock()
		if done != nil {
			done(errConnLost)
		}
		return
	default:
	}
	var id uint16
	if qos > 0 {
		if id = c.allocID(); id == 0 {
			c.wmu.Unlock()
			if done != nil {
				done(errNoPacketID)
			}
			return
		}
		c.pending[id] = done
	}
	_, _ = c.w.Write(hb)
	_, _ = c.w.Write([]byte{byte(len(topic) >> 8), byte(len(topic))})
	_, _ = c.w.WriteString(topic)
	if qos > 0 {
		_, _ = c.w.Write([]byte{byte(id >> 8), byte(id)})
	}
	_, _ = c.w.Write(payload)
	c.wmu.Unlock()
	c.kick()
	if qos == 0 && done != nil {
		done(nil)
	}
}

// Subscribe sends one SUBSCRIBE for every filter and waits for the SUBACK.
func (c *conn) Subscribe(ctx context.Context, filters map[string]byte) error {
	var body []byte
	for f, q := range filters {
		body = appendMQTTString(body, f)
		body = append(body, q)
	}
	return c.request(ctx, 0x82, body)
}

// Unsubscribe sends one UNSUBSCRIBE for the filters and waits for the UNSUBACK.
func (c *conn) Unsubscribe(ctx context.Context, filters []string) error {
	var body []byte
	for _, f := range filters {
		body = appendMQTTString(body, f)
	}
	return c.request(ctx, 0xa2, body)
}

// request sends a SUBSCRIBE or UNSUBSCRIBE and waits for its acknowledgement.
func (c *conn) request(ctx context.Context, typ byte, payload []byte) error {
	res := make(chan error, 1)
	c.wmu.Lock()
	id := c.allocID()
	if id == 0 {
		c.wmu.Unlock()
		return errNoPacketID
	}
	c.pending[id] = func(err error) { res <- err }
	pkt := appendRemaining([]byte{typ}, 2+len(payload))
	pkt = binary.BigEndian.AppendUint16(pkt, id)
	pkt = append(pkt, payload...)
	_, _ = c.w.Write(pkt)
	c.wmu.Unlock()
	c.kick()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case err := <-res:
		return err
	case <-c.done:
		return errConnLost
	case <-t.C:
		return errors.New("no acknowledgement within 10s")
	case <-ctx.Done():
		return ctx.Err()
	}
}
