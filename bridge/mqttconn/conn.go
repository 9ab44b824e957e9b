// conn.go owns one MQTT 3.1.1 client connection: dial and handshake, the reader that
// dispatches every packet the broker sends, the coalescing writer, keepalive, and the
// acknowledgement of publishes in both directions.

package mqttconn

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

// Conn is a minimal MQTT 3.1.1 client connection for the relay's hot path. Compared with a
// general client it reads through one buffer (one read system call for many packets), coalesces
// writes (one write for every packet queued while the previous write ran), and completes
// acknowledged publishes with callbacks instead of a token and a goroutine each.
//
// It does not reconnect: a Link owns one Conn at a time and dials again when it ends.
type Conn struct {
	nc net.Conn
	r  *bufio.Reader

	wmu    sync.Mutex
	w      *bufio.Writer
	nextID uint16
	// hdr is scratch for the fixed and variable headers of the packet being queued (held with
	// wmu): bufio.Writer.Write may hand its argument to the socket, so a header built on the
	// stack would escape to the heap, one allocation per packet.
	hdr []byte
	// pending holds the completion of every packet waiting for its acknowledgement (PUBACK,
	// PUBCOMP, SUBACK, UNSUBACK) by packet id; a nil completion still holds its id (Hold).
	pending map[uint16]func(error)
	// received holds, by packet id, what runs on PUBREC of a QoS 2 publish before its PUBREL
	// is queued (PublishID).
	received map[uint16]func()
	flush    chan struct{}

	// v5: the connection speaks MQTT 5 (ConnectOptions.Protocol 5); subOpts are the MQTT 5
	// subscription options added to every filter it subscribes to.
	v5      bool
	subOpts byte

	onPublish func(*Message) // called on the reader goroutine: must not block on this conn
	// packets counts the packets read after CONNACK; the reader goroutine's (gather.go).
	packets   int
	keepalive time.Duration
	lastRead  atomic.Int64 // unix nanoseconds

	done    chan struct{}
	errOnce sync.Once
	err     error
}

// ErrConnLost completes every publish still in flight when a connection ends.
var ErrConnLost = errors.New("mqttconn: connection lost")

// ErrNoPacketID means every packet id is in flight; the caller sent far more than any bound
// allows.
var ErrNoPacketID = errors.New("mqttconn: no free packet id")

// ErrRefused marks a CONNACK with a non-zero return code, or a SUBACK that refused a filter.
var ErrRefused = errors.New("mqttconn: refused")

// ErrCredentials marks, besides ErrRefused, a CONNACK that refused the credentials: MQTT 3.1.1
// codes 4 and 5 [MQTT-3.2.2.3], MQTT 5 reason codes 0x86 and 0x87 (section 3.2.2.2).
var ErrCredentials = errors.New("credentials refused")

// Message is one PUBLISH received. Ack acknowledges it on the connection it came from, once.
type Message struct {
	c       *Conn
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// ID is the packet id (QoS 1 and 2; 0 for QoS 0). A broker numbers the messages of one
	// session, and sends a message again after a reconnect with the same id.
	ID uint16
	// Dup is the DUP flag: the broker may have sent this message before ([MQTT-3.3.1-1]).
	Dup bool
	// props are its MQTT 5 properties (Props), nil when it has none: a pointer keeps a
	// message without them as small as before.
	props *Props
	// Received is when the reader read it, in Unix nanoseconds.
	Received int64
	acked    atomic.Bool
}

// Props are the message's MQTT 5 properties (none on an MQTT 3.1.1 connection), with the
// Message Expiry Interval the broker sent: the time left when it was sent.
func (m *Message) Props() Props {
	if m.props == nil {
		return Props{}
	}
	return *m.props
}

// Conn is the connection the message arrived on; nil for a message made by its user.
func (m *Message) Conn() *Conn { return m.c }

// Ack sends PUBACK (QoS 1) or PUBREC (QoS 2). On a connection that has ended it does nothing:
// the broker sends the message again on the next one.
func (m *Message) Ack() {
	if m.QoS == 0 || m.c == nil || !m.acked.CompareAndSwap(false, true) || m.c.Err() != nil {
		return
	}
	if m.QoS == 1 {
		m.c.writeAck(Puback, m.ID) // [MQTT-4.3.2-2] QoS 1: PUBACK with the PUBLISH's packet id
	} else {
		m.c.writeAck(Pubrec, m.ID) // [MQTT-4.3.3-2] QoS 2: PUBREC first, PUBCOMP on PUBREL
	}
}

// Acked reports whether Ack was called (on a connection that was up then).
func (m *Message) Acked() bool { return m.acked.Load() }

// ConnectOptions are the fields of CONNECT (§3.1).
type ConnectOptions struct {
	ClientID string
	// Protocol is the protocol level: 4 for MQTT 3.1.1 [MQTT-3.1.2-2]; 0x84 is 4 with the bridge
	// bit, a Mosquitto extension that makes the broker treat the client as a bridge (no-local,
	// retain-as-published); 5 for MQTT 5, where CleanSession is Clean Start and a session that
	// is not clean is sent with Session Expiry Interval 0xFFFFFFFF (it never expires).
	Protocol byte
	// SubOptions (MQTT 5 only) are added to every filter's QoS in SUBSCRIBE: SubNoLocal,
	// SubRetainAsPublished.
	SubOptions   byte
	CleanSession bool
	// Keepalive is sent in whole seconds; zero turns keepalive off (§3.1.2.10).
	Keepalive   time.Duration
	Username    string
	Password    string
	WillTopic   string // "" sends no will
	WillPayload []byte
	WillRetain  bool
	// TLS, when set, makes Dial use TLS (the encoder ignores it).
	TLS *tls.Config
	// ReadPause, when positive, paces reads while packets queue up (gather.go): one read per
	// ReadPause at most, so one wake-up reads many packets. Zero or negative reads each at once.
	ReadPause time.Duration
	// Dialed, when set, is called with the connection's local address once the TCP connection
	// is up and before CONNECT is sent (the encoder ignores it): the agent tells its own
	// connections made with a client's id from the client's in the broker's connect lines.
	Dialed func(local net.Addr)
}

// Dial connects and completes the MQTT handshake; it also reports the CONNACK's session present
// flag. onPublish receives every PUBLISH, on the connection's reader goroutine.
func Dial(ctx context.Context, addr string, o ConnectOptions, onPublish func(*Message)) (*Conn, bool, error) {
	c, present, err := handshake(ctx, addr, o, onPublish)
	if err != nil {
		return nil, false, err
	}
	c.start()
	return c, present, nil
}

// handshake connects and completes the MQTT handshake; nothing is read after CONNACK until
// start. A broker sends a persistent session's queued messages right after CONNACK: a Link
// makes the connection its current one in between, so no message arrives on a connection its
// user does not know yet.
func handshake(ctx context.Context, addr string, o ConnectOptions, onPublish func(*Message)) (*Conn, bool, error) {
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
	if o.Dialed != nil {
		o.Dialed(nc.LocalAddr())
	}
	// net sets TCP_NODELAY on TCP connections by default: no Nagle delay on relays.
	c := &Conn{nc: nc, w: bufio.NewWriterSize(nc, 64<<10),
		pending: map[uint16]func(error){}, received: map[uint16]func(){}, flush: make(chan struct{}, 1), onPublish: onPublish,
		keepalive: o.Keepalive, done: make(chan struct{}), v5: o.Protocol == 5, subOpts: o.SubOptions}
	var rd io.Reader = nc
	if o.ReadPause > 0 {
		rd = &gatherReader{r: nc, pause: o.ReadPause, lowat: lowatSetter(nc), packets: &c.packets}
	}
	c.r = bufio.NewReaderSize(rd, 64<<10)
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	// [MQTT-3.1.0-1] CONNECT is the first packet the client sends.
	if _, err := c.w.Write(AppendConnect(nil, o)); err == nil {
		err = c.w.Flush()
	}
	if err != nil {
		nc.Close()
		return nil, false, err
	}
	h, body, err := ReadPacket(c.r)
	if err != nil {
		nc.Close()
		return nil, false, fmt.Errorf("no CONNACK: %w", err)
	}
	// [MQTT-3.2.0-1] the server's first packet is CONNACK: 2 bytes, acknowledge flags and code
	// (MQTT 5: then its properties, which ask nothing of this client: it sends no topic alias,
	// and its callers bound their publishes in flight below Mosquitto's Receive Maximum).
	if h != FixedHeader(Connack, 0) || len(body) < 2 || (len(body) != 2 && !c.v5) {
		nc.Close()
		return nil, false, fmt.Errorf("%w: expected CONNACK, got packet type %#x", ErrMalformed, h)
	}
	if body[1] != 0 {
		nc.Close()
		return nil, false, connackError(c.v5, body[1])
	}
	_ = nc.SetDeadline(time.Time{})
	return c, body[0]&1 == 1, nil // §3.2.2.2 bit 0 of the acknowledge flags: session present
}

// start runs the reader, the writer and the keepalive of a connection after its handshake.
func (c *Conn) start() {
	c.lastRead.Store(time.Now().UnixNano())
	go c.readLoop()
	go c.writeLoop()
	if c.keepalive > 0 {
		go c.keepaliveLoop()
	}
}

func (c *Conn) readLoop() {
	for {
		h, body, err := ReadPacket(c.r)
		if err != nil {
			c.fail(err)
			return
		}
		c.packets++
		now := time.Now().UnixNano()
		c.lastRead.Store(now)
		if err := c.handle(h, body, now); err != nil {
			c.fail(err) // [MQTT-4.8.0-1] a protocol violation closes the connection
			return
		}
	}
}

// handle acts on one packet from the broker.
func (c *Conn) handle(h byte, body []byte, now int64) error {
	switch PacketType(h >> 4) {
	case Publish:
		m := &Message{c: c, QoS: (h >> qosShift) & 3, Retain: h&flagRetain != 0, Dup: h&flagDup != 0, Received: now}
		if m.QoS == 3 {
			return fmt.Errorf("%w: PUBLISH with QoS 3 [MQTT-3.3.1-4]", ErrMalformed)
		}
		if len(body) < 2 {
			return fmt.Errorf("%w: short PUBLISH", ErrMalformed)
		}
		tl := int(binary.BigEndian.Uint16(body))
		p := 2 + tl
		if len(body) < p {
			return fmt.Errorf("%w: short PUBLISH topic", ErrMalformed)
		}
		m.Topic = string(body[2:p])
		if m.QoS > 0 {
			if len(body) < p+2 {
				return fmt.Errorf("%w: short PUBLISH id", ErrMalformed)
			}
			m.ID = binary.BigEndian.Uint16(body[p:])
			p += 2
		}
		if c.v5 { // MQTT 5 §3.3.2.3: the properties follow the packet id
			n, sz, err := ReadVarInt(body[p:])
			if err != nil || len(body) < p+sz+n {
				return fmt.Errorf("%w: PUBLISH properties", ErrMalformed)
			}
			p += sz
			if n > 0 {
				pr, err := SplitPublishProps(body[p : p+n : p+n])
				if err != nil {
					return err
				}
				if !pr.Empty() {
					m.props = &pr
				}
			}
			p += n
		}
		m.Payload = body[p:]
		c.onPublish(m)
	case Puback, Pubcomp: // the end of our QoS 1 or QoS 2 publish
		if len(body) >= 2 {
			c.complete(binary.BigEndian.Uint16(body), nil)
		}
	case Pubrec:
		// [MQTT-4.3.3-1] our QoS 2 publish was received: release it with PUBREL, after what its
		// publisher wanted done first (PublishID).
		if len(body) >= 2 {
			id := binary.BigEndian.Uint16(body)
			c.wmu.Lock()
			f := c.received[id]
			delete(c.received, id)
			c.wmu.Unlock()
			if c.v5 && len(body) > 2 && body[2] >= 0x80 {
				// MQTT 5 §4.3.3: a PUBREC with a failure reason ends the exchange, no PUBREL; the
				// broker dropped the message, as a 3.1.1 broker does without saying so.
				c.complete(id, nil)
				return nil
			}
			if f != nil {
				f()
			}
			c.writeAck(Pubrel, id)
		}
	case Pubrel:
		// [MQTT-4.3.3-2] the broker released a QoS 2 message we acknowledged with PUBREC.
		if len(body) >= 2 {
			c.writeAck(Pubcomp, binary.BigEndian.Uint16(body))
		}
	case Suback:
		if len(body) >= 2 {
			id := binary.BigEndian.Uint16(body)
			var err error
			codes := body[2:]
			if c.v5 { // MQTT 5 §3.9.2: properties before the reason codes
				n, sz, perr := ReadVarInt(codes)
				if perr != nil || len(codes) < sz+n {
					return fmt.Errorf("%w: SUBACK properties", ErrMalformed)
				}
				codes = codes[sz+n:]
			}
			for _, rc := range codes {
				if rc >= 0x80 { // §3.9.3 0x80: failure
					err = fmt.Errorf("%w: subscription refused", ErrRefused)
				}
			}
			c.complete(id, err)
		}
	case Unsuback:
		if len(body) >= 2 {
			c.complete(binary.BigEndian.Uint16(body), nil)
		}
	case Pingresp:
	case Disconnect:
		if c.v5 { // MQTT 5 §3.14: the server ends the connection and may say why
			rc := byte(0)
			if len(body) > 0 {
				rc = body[0]
			}
			return fmt.Errorf("disconnected by the server: reason code %#x", rc)
		}
		return fmt.Errorf("%w: unexpected packet type %d", ErrMalformed, h>>4)
	default:
		return fmt.Errorf("%w: unexpected packet type %d", ErrMalformed, h>>4)
	}
	return nil
}

func (c *Conn) complete(id uint16, err error) {
	c.wmu.Lock()
	o := c.pending[id]
	delete(c.pending, id)
	c.wmu.Unlock()
	if o != nil {
		o(err)
	}
}

// Fail ends the connection once, without DISCONNECT, and completes everything in flight with
// ErrConnLost; Err then returns err.
func (c *Conn) Fail(err error) { c.fail(err) }

func (c *Conn) fail(err error) {
	c.errOnce.Do(func() {
		c.err = err
		c.nc.Close()
		close(c.done)
		c.wmu.Lock()
		pending := c.pending
		c.pending = map[uint16]func(error){}
		clear(c.received)
		c.wmu.Unlock()
		for _, o := range pending {
			if o != nil {
				o(ErrConnLost)
			}
		}
	})
}

// Done is closed when the connection has ended; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close sends DISCONNECT and closes the connection, waiting at most a second for a peer that
// does not read. Safe to call twice.
func (c *Conn) Close() {
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	if c.wmu.TryLock() || waitLock(&c.wmu, time.Second) {
		_, _ = c.w.Write(disconnect)
		_ = c.w.Flush()
		c.wmu.Unlock()
	}
	// [MQTT-3.14.4-1] after DISCONNECT the client closes the network connection.
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
func (c *Conn) writeTimeout() time.Duration { return max(5*time.Second, c.keepalive*3/2) }

func (c *Conn) writeLoop() {
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

func (c *Conn) kick() {
	select {
	case c.flush <- struct{}{}:
	default:
	}
}

// keepaliveLoop sends PINGREQ every half keepalive ([MQTT-3.1.2-23] the client must send a
// packet within each keepalive) and ends a connection that read nothing for 1.5 keepalives, the
// limit the server applies to its clients ([MQTT-3.1.2-24]).
func (c *Conn) keepaliveLoop() {
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
			_, _ = c.w.Write(pingreq)
			c.wmu.Unlock()
			c.kick()
		}
	}
}

func (c *Conn) writeAck(t PacketType, id uint16) {
	c.wmu.Lock()
	c.hdr = AppendAck(c.hdr[:0], t, id)
	_, _ = c.w.Write(c.hdr)
	c.wmu.Unlock()
	c.kick()
}

// allocID returns a free packet id, or 0 when all 65535 are in flight; the caller holds wmu.
// [MQTT-2.3.1-1] the id of a PUBLISH (QoS > 0), SUBSCRIBE or UNSUBSCRIBE is non-zero;
// [MQTT-2.3.1-2] a new packet takes an id not in use.
func (c *Conn) allocID() uint16 {
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

// Publish queues a PUBLISH. For QoS 1 and 2, done runs once the broker acknowledged it (nil)
// or the connection ended (ErrConnLost); for QoS 0 it runs once the packet is queued.
func (c *Conn) Publish(topic string, qos byte, retain bool, payload []byte, done func(error)) {
	c.publish(0, false, topic, qos, retain, Props{}, payload, nil, nil, done)
}

// PublishProps is Publish with MQTT 5 properties; an MQTT 3.1.1 connection drops them.
func (c *Conn) PublishProps(topic string, qos byte, retain bool, props Props, payload []byte, done func(error)) {
	c.publish(0, false, topic, qos, retain, props, payload, nil, nil, done)
}

// PublishParts is Publish of a payload made of parts, written one after the other without
// joining them.
func (c *Conn) PublishParts(topic string, qos byte, retain bool, parts [][]byte, done func(error)) {
	c.publish(0, false, topic, qos, retain, Props{}, nil, parts, nil, done)
}

// Hold keeps packet id from being given to any other packet until a PublishID, Release or Free
// with it; it reports false when the id is 0 or already in use. A client holds the ids of QoS 2
// publishes the broker may still keep from an earlier connection of the same session, to send
// them again with the same id.
func (c *Conn) Hold(id uint16) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, used := c.pending[id]; used || id == 0 {
		return false
	}
	c.pending[id] = nil
	return true
}

// HoldNext holds a free packet id and returns it, or 0 when every id is in use.
func (c *Conn) HoldNext() uint16 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	id := c.allocID()
	if id != 0 {
		c.pending[id] = nil
	}
	return id
}

// Free gives back an id held with Hold or HoldNext and not used.
func (c *Conn) Free(id uint16) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if f, used := c.pending[id]; used && f == nil {
		delete(c.pending, id)
	}
}

// PublishID queues a QoS 1 or 2 PUBLISH with a packet id held by Hold or HoldNext, with the
// DUP flag when dup (the same message sent with this id before, on this session). For QoS 2,
// received (when not nil) runs on the reader goroutine when PUBREC arrives, before PUBREL is
// queued: the publisher can note that the broker holds the message. done is as for Publish;
// props as for PublishProps.
func (c *Conn) PublishID(id uint16, dup bool, topic string, qos byte, retain bool, props Props, payload []byte, received func(), done func(error)) {
	c.publish(id, dup, topic, qos, retain, props, payload, nil, received, done)
}

// Release queues a PUBREL for a QoS 2 publish of an earlier connection of this session, whose
// id is held (Hold); done runs on PUBCOMP, or with ErrConnLost. [MQTT-4.4.0-1] on reconnecting
// with a session, the client resends its unacknowledged PUBREL packets. A broker answers a
// PUBREL for an id it does not hold with PUBCOMP too (Mosquitto: handle__pubrel).
func (c *Conn) Release(id uint16, done func(error)) {
	if !c.lockOpen(done) {
		return
	}
	c.pending[id] = done
	c.hdr = AppendAck(c.hdr[:0], Pubrel, id)
	_, _ = c.w.Write(c.hdr)
	c.wmu.Unlock()
	c.kick()
}

// lockOpen takes the write lock of an open connection and reports true; on an ended one it
// calls done with ErrConnLost instead and reports false.
func (c *Conn) lockOpen(done func(error)) bool {
	c.wmu.Lock()
	select {
	case <-c.done:
		c.wmu.Unlock()
		if done != nil {
			done(ErrConnLost)
		}
		return false
	default:
		return true
	}
}

// publish queues a PUBLISH whose payload is payload followed by parts.
func (c *Conn) publish(id uint16, dup bool, topic string, qos byte, retain bool, props Props, payload []byte, parts [][]byte, received func(), done func(error)) {
	if !c.lockOpen(done) {
		return
	}
	if qos > 0 {
		if id == 0 {
			if id = c.allocID(); id == 0 {
				c.wmu.Unlock()
				if done != nil {
					done(ErrNoPacketID)
				}
				return
			}
		}
		c.pending[id] = done
		if received != nil && qos == 2 {
			c.received[id] = received
		}
	} else {
		id, dup = 0, false
	}
	n := len(payload)
	for _, p := range parts {
		n += len(p)
	}
	c.hdr = appendPublishHeader(c.hdr[:0], topic, qos, retain, dup, id, n, c.v5, props)
	_, _ = c.w.Write(c.hdr)
	_, _ = c.w.Write(payload)
	for _, p := range parts {
		_, _ = c.w.Write(p)
	}
	c.wmu.Unlock()
	c.kick()
	if qos == 0 && done != nil {
		done(nil)
	}
}

// Subscribe sends one SUBSCRIBE for every filter and waits for the SUBACK.
func (c *Conn) Subscribe(ctx context.Context, filters map[string]byte) error {
	if c.v5 {
		return c.request(ctx, func(id uint16) []byte { return AppendSubscribe5(nil, id, filters, c.subOpts) })
	}
	return c.request(ctx, func(id uint16) []byte { return AppendSubscribe(nil, id, filters) })
}

// Unsubscribe sends one UNSUBSCRIBE for the filters and waits for the UNSUBACK.
func (c *Conn) Unsubscribe(ctx context.Context, filters []string) error {
	if c.v5 {
		return c.request(ctx, func(id uint16) []byte { return AppendUnsubscribe5(nil, id, filters) })
	}
	return c.request(ctx, func(id uint16) []byte { return AppendUnsubscribe(nil, id, filters) })
}

// request sends the SUBSCRIBE or UNSUBSCRIBE that encode builds for a packet id and waits for
// its acknowledgement.
func (c *Conn) request(ctx context.Context, encode func(id uint16) []byte) error {
	res := make(chan error, 1)
	c.wmu.Lock()
	id := c.allocID()
	if id == 0 {
		c.wmu.Unlock()
		return ErrNoPacketID
	}
	c.pending[id] = func(err error) { res <- err }
	_, _ = c.w.Write(encode(id))
	c.wmu.Unlock()
	c.kick()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case err := <-res:
		return err
	case <-c.done:
		return ErrConnLost
	case <-t.C:
		return errors.New("no acknowledgement within 10s")
	case <-ctx.Done():
		return ctx.Err()
	}
}
