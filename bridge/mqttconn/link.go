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
	// Up runs once per connection, before the link counts as up; an error drops the connection.
	Up   func(ctx context.Context, c *Conn, sessionPresent bool) error
	Down func(err error)

	cur atomic.Pointer[Conn]
}

// Conn is the current connection, or nil while the link is down.
func (l *Link) Conn() *Conn { return l.cur.Load() }

// Run keeps the link up until ctx ends. It leaves the last connection open: its owner closes it
// after its final words.
func (l *Link) Run(ctx context.Context) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		c, present, err := handshake(ctx, l.Addr, l.Options, l.OnPublish)
		if err == nil {
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
			l.Log.Debug("connect failed", "addr", l.Addr, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(Jitter(backoff)):
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = minBackoff
		select {
		case <-c.Done():
		case <-ctx.Done():
			return // the owner closes the last connection itself, after its final words
		}
		l.cur.Store(nil)
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
