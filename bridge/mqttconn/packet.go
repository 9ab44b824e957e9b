// packet.go owns the MQTT 3.1.1 wire encoding: packet types, the fixed header, the Remaining
// Length, UTF-8 strings, the packets Conn sends, and reading one packet. Section and rule
// numbers are those of the MQTT 3.1.1 OASIS standard.

package mqttconn

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// PacketType is the high nibble of a packet's first byte (§2.2.1).
type PacketType byte

// The packet types of MQTT 3.1.1 (§2.2.1, table 2.1).
const (
	Connect     PacketType = 1  // client -> server: connection request
	Connack     PacketType = 2  // server -> client: connection acknowledgement
	Publish     PacketType = 3  // both ways: an application message
	Puback      PacketType = 4  // QoS 1 acknowledgement
	Pubrec      PacketType = 5  // QoS 2, part 1: received
	Pubrel      PacketType = 6  // QoS 2, part 2: released
	Pubcomp     PacketType = 7  // QoS 2, part 3: complete
	Subscribe   PacketType = 8  // client -> server
	Suback      PacketType = 9  // server -> client
	Unsubscribe PacketType = 10 // client -> server
	Unsuback    PacketType = 11 // server -> client
	Pingreq     PacketType = 12 // client -> server: keepalive
	Pingresp    PacketType = 13 // server -> client
	Disconnect  PacketType = 14 // client -> server: clean close
)

func (t PacketType) String() string {
	names := [...]string{"reserved", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL",
		"PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP",
		"DISCONNECT", "reserved"}
	return names[t&15]
}

// FixedHeader is the first byte of a packet: its type and its four flag bits.
// [MQTT-2.2.2-1] flag bits marked reserved must carry the value table 2.2 lists for the type:
// 0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0000 for every other packet but PUBLISH.
func FixedHeader(t PacketType, flags byte) byte { return byte(t)<<4 | flags&15 }

// Publish flag bits of the fixed header (§3.3.1).
const (
	flagRetain = 0x01 // bit 0
	qosShift   = 1    // bits 1-2 hold the QoS
	flagDup    = 0x08 // bit 3
)

// MaxRemainingLength is the largest Remaining Length four bytes encode (§2.2.3): 256 MB - 1.
const MaxRemainingLength = 268435455

// MaxStringBytes is the longest UTF-8 string of the protocol: its length is 2 bytes (§1.5.3).
const MaxStringBytes = 65535

// ErrMalformed marks a packet from the server that breaks MQTT 3.1.1; the connection ends
// ([MQTT-4.8.0-1] a protocol violation closes the network connection).
var ErrMalformed = errors.New("mqttconn: malformed packet")

// AppendRemainingLength appends n as the Remaining Length (§2.2.3): seven bits per byte, least
// significant group first, the high bit set on every byte but the last. MQTT 5 encodes its
// Variable Byte Integers (property lengths) the same way.
func AppendRemainingLength(b []byte, n int) []byte {
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

// AppendString appends a UTF-8 string (§1.5.3): a 2-byte big-endian length, then the bytes.
// The caller keeps it at most MaxStringBytes; topic names and filters also must be valid
// UTF-8 without U+0000 ([MQTT-1.5.3-1], [MQTT-1.5.3-2]), which the broker enforces.
func AppendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// AppendPacket appends a whole packet: the fixed header byte, the Remaining Length of body,
// and body (the variable header and payload).
func AppendPacket(b []byte, header byte, body []byte) []byte {
	b = AppendRemainingLength(append(b, header), len(body))
	return append(b, body...)
}

// CONNECT flag bits (§3.1.2.3).
const (
	connectCleanSession = 0x02
	connectWill         = 0x04
	connectWillQoS1     = 0x08
	connectWillRetain   = 0x20
	connectPassword     = 0x40
	connectUsername     = 0x80
)

// AppendConnect appends the CONNECT packet for o. The will, when set, is sent at QoS 1.
func AppendConnect(b []byte, o ConnectOptions) []byte {
	var vh []byte
	vh = AppendString(vh, "MQTT") // [MQTT-3.1.2-1] the protocol name is "MQTT"
	vh = append(vh, o.Protocol)
	var flags byte // [MQTT-3.1.2-3] the reserved bit 0 is zero
	if o.CleanSession {
		flags |= connectCleanSession
	}
	if o.WillTopic != "" {
		// [MQTT-3.1.2-9] with the will flag set, the will topic and message follow in the payload;
		// without it, will QoS and will retain stay 0 ([MQTT-3.1.2-13], [MQTT-3.1.2-15]).
		flags |= connectWill | connectWillQoS1
		if o.WillRetain {
			flags |= connectWillRetain
		}
	}
	if o.Username != "" {
		flags |= connectUsername // [MQTT-3.1.2-19] a username follows in the payload
		if o.Password != "" {
			flags |= connectPassword // [MQTT-3.1.2-21] a password follows the username
		}
	} // [MQTT-3.1.2-22] no password without a username
	vh = append(vh, flags)
	vh = binary.BigEndian.AppendUint16(vh, uint16(o.Keepalive/time.Second))
	if o.Protocol == 5 {
		// MQTT 5 §3.1.2.11: properties. A session that is not clean never expires (0xFFFFFFFF),
		// as a 3.1.1 session with clean session 0.
		if o.CleanSession {
			vh = append(vh, 0)
		} else {
			vh = append(vh, 5, PropSessionExpiry, 0xff, 0xff, 0xff, 0xff)
		}
	}
	// [MQTT-3.1.3-1] payload order: client id, will topic, will message, username, password.
	vh = AppendString(vh, o.ClientID)
	if o.WillTopic != "" {
		if o.Protocol == 5 {
			vh = append(vh, 0) // MQTT 5 §3.1.3.2: no will properties
		}
		vh = AppendString(vh, o.WillTopic)
		vh = binary.BigEndian.AppendUint16(vh, uint16(len(o.WillPayload)))
		vh = append(vh, o.WillPayload...)
	}
	if o.Username != "" {
		vh = AppendString(vh, o.Username)
		if o.Password != "" {
			vh = AppendString(vh, o.Password)
		}
	}
	return AppendPacket(b, FixedHeader(Connect, 0), vh)
}

// AppendPublishHeader appends everything of a PUBLISH before its payload (§3.3): the fixed
// header, the Remaining Length of topic, id and payloadLen bytes, the topic name, and the packet
// id when qos > 0. The payload follows unframed, so a caller can write it without a copy.
func AppendPublishHeader(b []byte, topic string, qos byte, retain bool, id uint16, payloadLen int) []byte {
	return appendPublishHeader(b, topic, qos, retain, false, id, payloadLen, false, Props{})
}

// appendPublishHeader is AppendPublishHeader with the DUP flag: set only when a QoS 1 or 2
// PUBLISH is sent again with the packet id of an earlier attempt ([MQTT-3.3.1-1]; [MQTT-3.3.1-2]
// DUP is 0 for every QoS 0 one), and, when v5, the MQTT 5 properties (MQTT 5 §3.3.2.3).
func appendPublishHeader(b []byte, topic string, qos byte, retain, dup bool, id uint16, payloadLen int, v5 bool, props Props) []byte {
	// [MQTT-3.3.1-4] QoS 3 is malformed: callers pass 0, 1 or 2.
	flags := qos << qosShift
	if retain {
		flags |= flagRetain
	}
	if dup && qos > 0 {
		flags |= flagDup
	}
	n := 2 + len(topic) + payloadLen
	if qos > 0 {
		n += 2 // §3.3.2.2 the packet id is present only for QoS 1 and 2
	}
	if v5 {
		pl := propsLen(props)
		var vi [4]byte
		n += pl + len(AppendVarInt(vi[:0], pl))
	}
	b = AppendRemainingLength(append(b, FixedHeader(Publish, flags)), n)
	b = AppendString(b, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	if v5 {
		b = AppendProps(b, props)
	}
	return b
}

// AppendSubscribe appends a SUBSCRIBE (§3.8) for filters with their maximum QoS.
// [MQTT-3.8.1-1] its fixed header flags are 0010; [MQTT-3.8.3-3] it holds at least one filter.
func AppendSubscribe(b []byte, id uint16, filters map[string]byte) []byte {
	body := binary.BigEndian.AppendUint16(nil, id)
	for f, q := range filters {
		body = AppendString(body, f)
		body = append(body, q)
	}
	return AppendPacket(b, FixedHeader(Subscribe, 0x02), body)
}

// Subscription options of MQTT 5 (§3.8.3.1), beside the maximum QoS in bits 0-1.
const (
	SubNoLocal           = 0x04 // [MQTT-3.8.3-3] never sent the client's own publishes
	SubRetainAsPublished = 0x08 // live publishes keep their retain flag
	subOptionsV5Reserved = 0xc0
)

// AppendSubscribe5 appends an MQTT 5 SUBSCRIBE (§3.8): no properties, and opts added to each
// filter's maximum QoS.
func AppendSubscribe5(b []byte, id uint16, filters map[string]byte, opts byte) []byte {
	body := append(binary.BigEndian.AppendUint16(nil, id), 0)
	for f, q := range filters {
		body = AppendString(body, f)
		body = append(body, q|opts&^subOptionsV5Reserved)
	}
	return AppendPacket(b, FixedHeader(Subscribe, 0x02), body)
}

// AppendUnsubscribe5 appends an MQTT 5 UNSUBSCRIBE (§3.10): no properties.
func AppendUnsubscribe5(b []byte, id uint16, filters []string) []byte {
	body := append(binary.BigEndian.AppendUint16(nil, id), 0)
	for _, f := range filters {
		body = AppendString(body, f)
	}
	return AppendPacket(b, FixedHeader(Unsubscribe, 0x02), body)
}

// AppendUnsubscribe appends an UNSUBSCRIBE (§3.10).
// [MQTT-3.10.1-1] its fixed header flags are 0010; [MQTT-3.10.3-2] it holds at least one filter.
func AppendUnsubscribe(b []byte, id uint16, filters []string) []byte {
	body := binary.BigEndian.AppendUint16(nil, id)
	for _, f := range filters {
		body = AppendString(body, f)
	}
	return AppendPacket(b, FixedHeader(Unsubscribe, 0x02), body)
}

// AppendAck appends a PUBACK, PUBREC, PUBREL or PUBCOMP for packet id: a fixed header and the
// id. [MQTT-3.6.1-1] PUBREL's flags are 0010; the others' are 0000.
func AppendAck(b []byte, t PacketType, id uint16) []byte {
	var flags byte
	if t == Pubrel {
		flags = 0x02
	}
	return binary.BigEndian.AppendUint16(append(b, FixedHeader(t, flags), 2), id)
}

// pingreq and disconnect are whole packets with no variable header (§3.12, §3.14).
var (
	pingreq    = []byte{FixedHeader(Pingreq, 0), 0}
	disconnect = []byte{FixedHeader(Disconnect, 0), 0}
)

// ReadPacket reads one packet: the fixed header byte (type and flags) and the body the Remaining
// Length announces.
func ReadPacket(r *bufio.Reader) (header byte, body []byte, err error) {
	header, err = r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		if d&0x80 == 0 {
			break
		}
		if i == 3 { // §2.2.3 the Remaining Length takes at most four bytes
			return 0, nil, fmt.Errorf("%w: remaining length longer than 4 bytes", ErrMalformed)
		}
		mul *= 128
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return header, body, nil
}

// connackReason names a CONNACK return code (§3.2.2.3, table 3.1).
// connackError is the error of a CONNACK with return (reason) code rc.
func connackError(v5 bool, rc byte) error {
	reason, credentials := connackReason(rc), rc == 4 || rc == 5
	if v5 {
		reason, credentials = connackReason5(rc), rc == 0x86 || rc == 0x87
	}
	if credentials {
		return fmt.Errorf("%w: %w: connection refused: %s", ErrRefused, ErrCredentials, reason)
	}
	return fmt.Errorf("%w: connection refused: %s", ErrRefused, reason)
}

// connackReason5 names the MQTT 5 CONNACK reason codes (section 3.2.2.2) a client may meet.
func connackReason5(rc byte) string {
	names := map[byte]string{
		0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
		0x83: "implementation specific error", 0x84: "unsupported protocol version",
		0x85: "client identifier not valid", 0x86: "bad user name or password",
		0x87: "not authorised", 0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
		0x8C: "bad authentication method", 0x95: "packet too large", 0x97: "quota exceeded",
		0x9F: "connection rate exceeded",
	}
	if n, ok := names[rc]; ok {
		return fmt.Sprintf("%s (reason code %#x)", n, rc)
	}
	return fmt.Sprintf("reason code %#x", rc)
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
