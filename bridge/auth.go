package bridge

import (
	"crypto/hmac"
	"crypto/sha256"
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
