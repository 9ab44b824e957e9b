// auth.go owns the cluster secret's signatures: the HMAC tag on relays, interest messages and
// statuses, and its check on what arrives.

package bridge

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"sync"
)

// ErrForged marks a control or relay message whose authenticator is missing or wrong.
var ErrForged = errors.New("bridge: message not signed with the cluster secret")

// tagSize is the length of the authenticator appended to every relay and interest payload when
// the cluster has a secret: HMAC-SHA256 truncated to 128 bits (NIST SP 800-107 allows truncation
// to 128 bits; a forger must guess 2^128 values).
const tagSize = 16

// signer appends and checks authenticators keyed by the cluster secret. The tag covers the topic
// the message travels on and its payload, so a tag cannot be moved to another topic.
// A nil signer signs nothing and accepts everything (a cluster without a secret).
type signer struct {
	pool sync.Pool // of hash.Hash
}

func newSigner(secret []byte) *signer {
	if len(secret) == 0 {
		return nil
	}
	key := append([]byte(nil), secret...)
	s := &signer{}
	s.pool.New = func() any { return hmac.New(sha256.New, key) }
	return s
}

func (s *signer) tag(dst []byte, topic string, payload []byte) []byte {
	return s.tagParts(dst, topic, payload)
}

// tagParts is tag of the payload made of parts, one after the other.
func (s *signer) tagParts(dst []byte, topic string, parts ...[]byte) []byte {
	h := s.pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	for _, p := range parts {
		h.Write(p)
	}
	var sum [sha256.Size]byte
	dst = append(dst, h.Sum(sum[:0])[:tagSize]...)
	s.pool.Put(h)
	return dst
}

// seal returns payload followed by its tag for topic.
func (s *signer) seal(topic string, payload []byte) []byte {
	if s == nil {
		return payload
	}
	out := make([]byte, len(payload), len(payload)+tagSize)
	copy(out, payload)
	return s.tag(out, topic, payload)
}

// open checks the tag at the end of msg and returns the payload without it.
func (s *signer) open(topic string, msg []byte) ([]byte, error) {
	if s == nil {
		return msg, nil
	}
	if len(msg) < tagSize {
		return nil, ErrForged
	}
	payload, got := msg[:len(msg)-tagSize], msg[len(msg)-tagSize:]
	var buf [tagSize]byte
	if !hmac.Equal(got, s.tag(buf[:0], topic, payload)) {
		return nil, ErrForged
	}
	return payload, nil
}

// Status messages are JSON that tools outside the agent read (`mosquitto-ha status`,
// `decommission`), so their tag goes inside the JSON, as its last member: the message is the
// Status JSON with its closing brace replaced by `,"sig":"<32 hex digits>"}`, where the tag is
// computed as above over the topic and the JSON without that member.

// sigMember is the tag member of a signed JSON message, without its separator.
const sigMember = `"sig":"`

// sealJSON signs a JSON object for topic; without a secret, or for anything that does not end
// in '}', it is returned unchanged.
func (s *signer) sealJSON(topic string, obj []byte) []byte {
	if s == nil || len(obj) < 2 || obj[len(obj)-1] != '}' {
		return obj
	}
	body := bytes.TrimSpace(obj[:len(obj)-1])
	if len(body) == 0 {
		return obj
	}
	var buf [tagSize]byte
	tag := s.tag(buf[:0], topic, obj)
	out := make([]byte, 0, len(obj)+len(sigMember)+2*tagSize+3)
	out = append(out, obj[:len(obj)-1]...)
	if body[len(body)-1] != '{' {
		out = append(out, ',') // after another member
	}
	out = append(out, sigMember...)
	out = hex.AppendEncode(out, tag)
	return append(out, '"', '}')
}

// openJSON checks a JSON object signed by sealJSON and returns it without its tag member.
func (s *signer) openJSON(topic string, msg []byte) ([]byte, error) {
	if s == nil {
		return msg, nil
	}
	n := len(sigMember) + 2*tagSize + 2 // the member and the closing brace
	if len(msg) < n+1 || string(msg[len(msg)-n:len(msg)-n+len(sigMember)]) != sigMember || !bytes.HasSuffix(msg, []byte(`"}`)) {
		return nil, ErrForged
	}
	got, err := hex.DecodeString(string(msg[len(msg)-2*tagSize-2 : len(msg)-2]))
	if err != nil {
		return nil, ErrForged
	}
	rest := msg[:len(msg)-n]
	switch {
	case rest[len(rest)-1] == ',':
		rest = rest[:len(rest)-1]
	case len(bytes.TrimSpace(rest)) > 0 && bytes.TrimSpace(rest)[len(bytes.TrimSpace(rest))-1] == '{':
	default:
		return nil, ErrForged
	}
	obj := append(append([]byte(nil), rest...), '}')
	var buf [tagSize]byte
	if !hmac.Equal(got, s.tag(buf[:0], topic, obj)) {
		return nil, ErrForged
	}
	return obj, nil
}
