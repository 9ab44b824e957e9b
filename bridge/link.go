package bridge

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// link keeps one connection to a broker up: it dials, runs up, waits for the connection to end,
// runs down, backs off with jitter, and dials again, until ctx ends.
type link struct {
	addr      string
	opts      connectOptions
	log       *slog.Logger
	onPublish func(*message)
	// up runs once per connection, before the link counts as up; an error drops the connection.
	up   func(ctx context.Context, c *conn, sessionPresent bool) error
	down func(err error)

	cur atomic.Pointer[conn]
}

// Conn is the current connection, or nil while the link is down.
func (l *link) Conn() *conn { return l.cur.Load() }

func (l *link) run(ctx context.Context) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		c, present, err := dial(ctx, l.addr, l.opts, l.onPublish)
		if err == nil {
			l.cur.Store(c)
			if err = l.up(ctx, c, present); err != nil {
				c.fail(err)
				l.cur.Store(nil)
			}
		}
		if err != nil {
			l.log.Debug("connect failed", "addr", l.addr, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(jitter(backoff)):
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
		l.down(c.Err())
	}
}
