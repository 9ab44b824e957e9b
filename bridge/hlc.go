// hlc.go owns the hybrid logical clock that orders retained writes across the cluster: a stamp
// is 48 bits of wall-clock milliseconds and a 16-bit counter, so stamps compare as integers,
// follow the wall clock when clocks agree, and never go backwards on one node.

package bridge

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrClockSkew marks a stamp further ahead of this node's wall clock than the skew bound.
var ErrClockSkew = errors.New("bridge: stamp ahead of the wall clock by more than the skew bound")

const hlcCounterBits = 16

// hlc is a hybrid logical clock (Kulkarni et al., 2014). now stamps a local event and observe
// takes in a stamp from a peer; every later now is larger than both. A stamp more than maxSkew
// ahead of the wall clock is refused by observe (not taken in), so one node with a clock in the
// future cannot drag every other node's clock there.
type hlc struct {
	mu      sync.Mutex
	last    uint64
	maxSkew time.Duration
	wall    func() time.Time // time.Now; tests move it
}

func newHLC(maxSkew time.Duration) *hlc { return &hlc{maxSkew: maxSkew, wall: time.Now} }

func stampOf(ms uint64, counter uint16) uint64 { return ms<<hlcCounterBits | uint64(counter) }

// stampMillis is the wall-clock part of a stamp, in Unix milliseconds.
func stampMillis(s uint64) uint64 { return s >> hlcCounterBits }

func (c *hlc) wallMillis() uint64 { return uint64(c.wall().UnixMilli()) & (1<<48 - 1) }

// now returns a stamp for a local event: larger than every stamp returned or observed before.
// When the counter runs out within one millisecond the stamp moves to the next millisecond.
func (c *hlc) now() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := stampOf(c.wallMillis(), 0)
	if s <= c.last {
		s = c.last + 1 // the counter; its overflow carries into the milliseconds
	}
	c.last = s
	return s
}

// observe takes in a peer's stamp, so later local stamps are larger. It refuses a stamp more
// than maxSkew ahead of the wall clock, wrapping ErrClockSkew, and then leaves the clock alone.
func (c *hlc) observe(remote uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ahead := int64(stampMillis(remote)) - int64(c.wallMillis()); ahead > c.maxSkew.Milliseconds() {
		return fmt.Errorf("%w: %d ms ahead (bound %s)", ErrClockSkew, ahead, c.maxSkew)
	}
	c.last = max(c.last, remote)
	return nil
}

// advance makes later stamps larger than s without a skew check: for stamps this node issued
// or accepted before a restart (the register's).
func (c *hlc) advance(s uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = max(c.last, s)
}
