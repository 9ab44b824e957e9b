package bridge

import (
	"errors"
	"testing"
	"time"
)

func TestHLCMonotonicWithFrozenAndBackwardClock(t *testing.T) {
	wall := time.UnixMilli(1_000_000)
	c := newHLC(time.Second)
	c.wall = func() time.Time { return wall }
	a := c.now()
	b := c.now()
	if b <= a || stampMillis(b) != 1_000_000 {
		t.Fatalf("same millisecond: %x then %x", a, b)
	}
	wall = wall.Add(-time.Minute) // the wall clock steps back
	if d := c.now(); d <= b {
		t.Fatalf("after a backward step: %x, want > %x", d, b)
	}
	wall = wall.Add(2 * time.Minute)
	if e := c.now(); stampMillis(e) != uint64(wall.UnixMilli()) || e&0xffff != 0 {
		t.Fatalf("wall clock ahead again: %x, want its milliseconds and counter 0", e)
	}
}

func TestHLCCounterOverflowCarries(t *testing.T) {
	c := newHLC(time.Second)
	c.wall = func() time.Time { return time.UnixMilli(5) }
	c.advance(stampOf(5, 0xffff))
	if s := c.now(); s != stampOf(6, 0) {
		t.Fatalf("got %x, want %x", s, stampOf(6, 0))
	}
}

func TestHLCObserve(t *testing.T) {
	wall := time.UnixMilli(1_000_000)
	c := newHLC(10 * time.Second)
	c.wall = func() time.Time { return wall }
	within := stampOf(1_000_000+5_000, 7)
	if err := c.observe(within); err != nil {
		t.Fatal(err)
	}
	if s := c.now(); s <= within {
		t.Fatalf("after observing %x: now %x", within, s)
	}
	beyond := stampOf(1_000_000+60_000, 0)
	if err := c.observe(beyond); !errors.Is(err, ErrClockSkew) {
		t.Fatalf("a stamp 60 s ahead: err %v, want ErrClockSkew", err)
	}
	if s := c.now(); s >= beyond {
		t.Fatalf("a refused stamp moved the clock: %x", s)
	}
}
