// props.go owns the MQTT 5 properties a PUBLISH carries (MQTT 5.0 OASIS standard §2.2.2 and
// §3.3.2.3): walking and checking them, keeping those a broker passes on from publisher to
// subscriber, and encoding them with a rewritten Message Expiry Interval.

package mqttconn

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Property identifiers of MQTT 5 (§2.2.2.2) that CONNECT and PUBLISH use here.
const (
	PropPayloadFormat   = 0x01 // byte
	PropMessageExpiry   = 0x02 // four byte integer, seconds
	PropContentType     = 0x03 // UTF-8 string
	PropResponseTopic   = 0x08 // UTF-8 string
	PropCorrelationData = 0x09 // binary data
	PropSubscriptionID  = 0x0B // variable byte integer
	PropSessionExpiry   = 0x11 // four byte integer, seconds
	PropTopicAlias      = 0x23 // two byte integer
	PropUserProperty    = 0x26 // UTF-8 string pair
)

// Props are the MQTT 5 properties of a message as one subscriber of the broker would get them,
// less the per-connection ones: Raw holds every property but Message Expiry Interval, Topic
// Alias and Subscription Identifier, in their order and encoding (user properties keep their
// order and duplicates [MQTT-3.3.2-18]); Expiry is the Message Expiry Interval in seconds, 0
// when the message does not expire. The zero value is no property.
type Props struct {
	Raw    []byte
	Expiry uint32
}

// Empty reports a message without properties.
func (p Props) Empty() bool { return len(p.Raw) == 0 && p.Expiry == 0 }

// AppendVarInt appends a Variable Byte Integer (§1.5.5): the Remaining Length's encoding.
func AppendVarInt(b []byte, n int) []byte { return AppendRemainingLength(b, n) }

// ReadVarInt reads a Variable Byte Integer of at most four bytes from b and returns it and the
// number of bytes it took.
func ReadVarInt(b []byte) (n, size int, err error) {
	mul := 1
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, fmt.Errorf("%w: truncated variable byte integer", ErrMalformed)
		}
		n += int(b[i]&0x7f) * mul
		if b[i]&0x80 == 0 {
			return n, i + 1, nil
		}
		mul *= 128
	}
	return 0, 0, fmt.Errorf("%w: variable byte integer longer than 4 bytes", ErrMalformed)
}

// SplitPublishProps checks the properties of a PUBLISH (without their length) and returns
// them as Props: Topic Alias and Subscription Identifier are dropped (the receiving broker
// sets them per connection and per subscriber [MQTT-3.3.4-6]), Message Expiry Interval goes to
// Expiry. Raw aliases props when only an expiry or nothing was there to remove at its end.
// Any property a PUBLISH may not carry, a truncated one, or an invalid string wraps
// ErrMalformed.
func SplitPublishProps(props []byte) (Props, error) {
	var out Props
	var kept []byte // nil while everything so far is kept as is
	keepAll := true
	for i := 0; i < len(props); {
		start := i
		id := props[i]
		i++
		var n int
		switch id {
		case PropPayloadFormat:
			n = 1
		case PropTopicAlias:
			n = 2
		case PropMessageExpiry:
			n = 4
		case PropContentType, PropResponseTopic, PropCorrelationData:
			if i+2 > len(props) {
				return Props{}, fmt.Errorf("%w: truncated property %#x", ErrMalformed, id)
			}
			n = 2 + int(binary.BigEndian.Uint16(props[i:]))
		case PropUserProperty:
			if i+2 > len(props) {
				return Props{}, fmt.Errorf("%w: truncated user property", ErrMalformed)
			}
			k := 2 + int(binary.BigEndian.Uint16(props[i:]))
			if i+k+2 > len(props) {
				return Props{}, fmt.Errorf("%w: truncated user property", ErrMalformed)
			}
			n = k + 2 + int(binary.BigEndian.Uint16(props[i+k:]))
		case PropSubscriptionID:
			_, sz, err := ReadVarInt(props[i:])
			if err != nil {
				return Props{}, err
			}
			n = sz
		default:
			return Props{}, fmt.Errorf("%w: property %#x in a PUBLISH", ErrMalformed, id)
		}
		if i+n > len(props) {
			return Props{}, fmt.Errorf("%w: truncated property %#x", ErrMalformed, id)
		}
		if err := checkStrings(id, props[i:i+n]); err != nil {
			return Props{}, err
		}
		i += n
		drop := id == PropTopicAlias || id == PropSubscriptionID || id == PropMessageExpiry
		if id == PropMessageExpiry {
			out.Expiry = binary.BigEndian.Uint32(props[start+1:])
		}
		switch {
		case drop && keepAll:
			keepAll = false
			kept = append(make([]byte, 0, len(props)), props[:start]...)
		case !drop && !keepAll:
			kept = append(kept, props[start:i]...)
		}
	}
	if keepAll {
		out.Raw = props
	} else if len(kept) > 0 {
		out.Raw = kept
	}
	return out, nil
}

// checkStrings checks the UTF-8 strings of property id, whose value (with its lengths) is v: a
// broker ends the connection of a client that sends an invalid one ([MQTT-1.5.4-1],
// [MQTT-1.5.4-2]), and a Response Topic holds no wildcard ([MQTT-3.3.2-14]).
func checkStrings(id byte, v []byte) error {
	var ss [][]byte
	switch id {
	case PropContentType, PropResponseTopic:
		ss = [][]byte{v[2:]}
	case PropUserProperty:
		k := 2 + int(binary.BigEndian.Uint16(v))
		ss = [][]byte{v[2:k], v[k+2:]}
	}
	for _, s := range ss {
		if !utf8.Valid(s) || bytes.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("%w: property %#x: invalid UTF-8 string", ErrMalformed, id)
		}
		if id == PropResponseTopic && (len(s) == 0 || bytes.ContainsAny(s, "+#")) {
			return fmt.Errorf("%w: response topic %q", ErrMalformed, s)
		}
	}
	return nil
}

// propsLen is the length of the property block AppendProps writes for p (without its own
// length).
func propsLen(p Props) int {
	n := len(p.Raw)
	if p.Expiry != 0 {
		n += 5
	}
	return n
}

// AppendProps appends a PUBLISH's property length and properties: Message Expiry Interval
// first when p has one, then p.Raw.
func AppendProps(b []byte, p Props) []byte {
	b = AppendVarInt(b, propsLen(p))
	if p.Expiry != 0 {
		b = binary.BigEndian.AppendUint32(append(b, PropMessageExpiry), p.Expiry)
	}
	return append(b, p.Raw...)
}
