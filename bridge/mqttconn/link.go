// link.go owns staying connected: redial with jittered exponential backoff until the context
// ends, with hooks for each connection's start and end.

package mqttconn

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"sync/atomic"
	"time"
)

// Link keeps one connection to a broker up: it dials, runs Up, waits for the connection to end,
// runs Down, backs off with jitter, and dials again, until ctx ends. Set the fields before Run.
type Link struct {
	Addr      string
	Options   ConnectOptions
	Log       *slog.Logger
	OnPublish func(*Message)
	// Prepare, when set, runs once per connection right after its CONNACK, before anything is
	// read from it and before it becomes the current connection: the place to Hold packet ids
	// of the session.
	Prepare func(c *Conn, sessionPresent bool)
	// Up runs once per connection, before the link counts as up; an error drops the connection.
	Up   func(ctx context.Context, c *Conn, sessionPresent bool) error
	Down func(err error)
	// WarnEvery bounds the connect-failure warnings: the first failure of an outage is logged
	// at Warn with its reason, then at most one Warn per WarnEvery with the count of failures
	// since (the others at Debug). Zero means one minute.
	WarnEvery time.Duration
	// MaxBackoff caps the wait between two dials (doubling from 100 ms). Zero means 5 s.
	MaxBackoff time.Duration

	cur     atomic.Pointer[Conn]
	lastErr atomic.Pointer[LinkError]
}

// LinkError is a link's last failure: a dial, handshake or Up that failed, or a connection lost.
type LinkError struct {
	Err error
	At  time.Time
}

// LastError is the link's last failure, or nil if it never failed. It stays after the link
// recovers: Conn tells whether it is up now.
func (l *Link) LastError() *LinkError { return l.lastErr.Load() }

// Conn is the current connection, or nil while the link is down.
func (l *Link) Conn() *Conn { return l.cur.Load() }

// Run keeps the link up until ctx ends. It leaves the last connection open: its owner closes it
// after its final words.
func (l *Link) Run(ctx context.Context) {
	const minBackoff = 100 * time.Millisecond
	maxBackoff := l.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 5 * time.Second
	}
	backoff := minBackoff
	warnEvery := l.WarnEvery
	if warnEvery <= 0 {
		warnEvery = time.Minute
	}
	var failures int // since the last Warn
	var warned time.Time
	outage := false
	for ctx.Err() == nil {
		c, present, err := handshake(ctx, l.Addr, l.Options, l.OnPublish)
		if err == nil {
			if l.Prepare != nil {
				l.Prepare(c, present)
			}
			// Current before the first message is read: a user that drops messages from a
			// connection that is not the current one (it ended) must not drop the first ones.
			l.cur.Store(c)
			c.start()
			if err = l.Up(ctx, c, present); err != nil {
				c.fail(err)
				l.cur.Store(nil)
			}
		}
		if err != nil {
			l.lastErr.Store(&LinkError{Err: err, At: time.Now()})
			failures++
			switch {
			case !outage:
				l.Log.Warn("connect failed", "addr", l.Addr, "err", err)
				outage, warned, failures = true, time.Now(), 0
			case time.Since(warned) >= warnEvery:
				l.Log.Warn("connect still failing", "addr", l.Addr, "err", err, "failures", failures, "since", warned.UTC().Format(time.RFC3339))
				warned, failures = time.Now(), 0
			default:
				l.Log.Debug("connect failed", "addr", l.Addr, "err", err, "retry_in", backoff)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(Jitter(backoff)):
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff, outage, failures = minBackoff, false, 0
		select {
		case <-c.Done():
		case <-ctx.Done():
			return // the owner closes the last connection itself, after its final words
		}
		l.cur.Store(nil)
		lost := c.Err()
		if lost == nil {
			lost = ErrConnLost
		}
		l.lastErr.Store(&LinkError{Err: lost, At: time.Now()})
		l.Down(c.Err())
	}
}

// Jitter returns a random duration in [d/2, 3d/2), so that agents that lost a broker at the same
// moment do not all dial again at the same moment.
func Jitter(d time.Duration) time.Duration {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return d/2 + time.Duration(binary.LittleEndian.Uint16(b[:]))*d/65536
}
