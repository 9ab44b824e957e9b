// dollar.go owns the local subscriptions to peers' '$' filters: '#' never matches '$' topics
// [MQTT-4.7.2-1], so for each '$' filter a peer's clients hold, the local connection subscribes
// to that filter itself. It works in its own goroutine, in bounded packets, so that a peer with
// a huge set of '$' filters never holds up the dispatcher (issue 10, finding 5: 100,000 filters
// in one SUBSCRIBE stalled relaying 9 s on every peer; 200,000 timed out and dropped a link).

package bridge

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// Bounds of one SUBSCRIBE or UNSUBSCRIBE of '$' filters: at most dollarPacketFilters filters
// and, past the first, dollarPacketBytes bytes of filters. Mosquitto answers a packet of this
// size in a few milliseconds, well inside mqttconn's 10 s wait for the acknowledgement.
const (
	dollarPacketFilters = 1000
	dollarPacketBytes   = 64 << 10
)

// dollarRetry is how long a failed change waits before it is tried again.
const dollarRetry = time.Second

// dollarSubs is the set of peers' '$' filters the local connection subscribes to.
type dollarSubs struct {
	topics Topics
	log    *slog.Logger
	wake   chan struct{} // a peer's '$' filters changed; capacity 1
	dirty  atomic.Bool   // the subscriptions lag the peers' filters after a failure

	// op serialises changes to the broker's '$' subscriptions: the sync goroutine and a new
	// local connection (resubscribe).
	op  sync.Mutex
	mu  sync.Mutex
	set map[string]bool // subscribed on the current connection (or to be, on the next)
}

func newDollarSubs(topics Topics, log *slog.Logger) *dollarSubs {
	return &dollarSubs{topics: topics, log: log, wake: make(chan struct{}, 1), set: map[string]bool{}}
}

// current is the set of '$' filters the local connection subscribes to for its peers.
func (d *dollarSubs) current() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]bool, len(d.set))
	for f := range d.set {
		out[f] = true
	}
	return out
}

// kick tells the sync goroutine to look at the peers' '$' filters; it never blocks (called on
// the dispatcher).
func (d *dollarSubs) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run keeps the local '$' subscriptions equal to the union of the peers' until ctx ends.
// conn is the current local connection (nil while down), peers the current peers.
func (d *dollarSubs) run(ctx context.Context, conn func() *mqttconn.Conn, peers func() []*peer) {
	retry := false
	for {
		var after <-chan time.Time
		if retry {
			after = time.After(dollarRetry)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-after:
		}
		changed := retry || d.dirty.Swap(false)
		for _, p := range peers() {
			if p.interest.dollarChanged.Swap(false) {
				changed = true
			}
		}
		if changed {
			retry = !d.sync(ctx, conn(), peers())
		}
	}
}

// want is the union of the peers' '$' filters the local connection may subscribe to.
func (d *dollarSubs) want(peers []*peer) map[string]bool {
	want := map[string]bool{}
	for _, p := range peers {
		for _, f := range p.interest.DollarFilters() {
			if !d.topics.IsReserved(f) {
				want[f] = true
			}
		}
	}
	return want
}

// sync brings the subscriptions on c (nil: none now, the next connection subscribes) to the
// peers' '$' filters, packet by packet; it reports false when a packet failed (retried later).
// The set records each packet that succeeded, so a retry sends only what is left.
func (d *dollarSubs) sync(ctx context.Context, c *mqttconn.Conn, peers []*peer) bool {
	d.op.Lock()
	defer d.op.Unlock()
	want := d.want(peers)
	if c == nil {
		d.mu.Lock()
		d.set = want
		d.mu.Unlock()
		return true
	}
	have := d.current()
	var add, remove []string
	for f := range want {
		if !have[f] {
			add = append(add, f)
		}
	}
	for f := range have {
		if !want[f] {
			remove = append(remove, f)
		}
	}
	// Removals do not wait for additions: a failed subscribe must not keep stale filters.
	added := d.apply(ctx, c, add, true)
	ok := d.apply(ctx, c, remove, false) && added
	if ok {
		d.mu.Lock()
		d.set = want
		d.mu.Unlock()
	}
	return ok
}

// resubscribe subscribes a new local connection to the current '$' filters, packet by packet
// (called when the local connection comes up). What fails is left to the sync goroutine.
func (d *dollarSubs) resubscribe(ctx context.Context, c *mqttconn.Conn) {
	d.op.Lock()
	defer d.op.Unlock()
	cur := d.current()
	fs := make([]string, 0, len(cur))
	for f := range cur {
		fs = append(fs, f)
	}
	d.mu.Lock()
	d.set = map[string]bool{} // filled again packet by packet
	d.mu.Unlock()
	if !d.apply(ctx, c, fs, true) {
		d.dirty.Store(true)
		d.kick()
	}
}

// apply subscribes (or unsubscribes) filters in bounded packets, recording each packet that
// succeeded in the set; it stops at the first failure.
func (d *dollarSubs) apply(ctx context.Context, c *mqttconn.Conn, filters []string, subscribe bool) bool {
	for len(filters) > 0 {
		n, size := 0, 0
		for n < len(filters) && n < dollarPacketFilters && (n == 0 || size+len(filters[n]) <= dollarPacketBytes) {
			size += len(filters[n])
			n++
		}
		chunk := filters[:n]
		filters = filters[n:]
		var err error
		if subscribe {
			subs := make(map[string]byte, len(chunk))
			for _, f := range chunk {
				subs[f] = 2
			}
			err = c.Subscribe(ctx, subs)
		} else {
			err = c.Unsubscribe(ctx, chunk)
		}
		if subscribe && errors.Is(err, mqttconn.ErrRefused) {
			// The broker (its ACL or a plugin) refused at least one filter of the packet and
			// took the others: asking again would be refused again, every retry. Counted as
			// done; messages the agent may not read are not relayed from here.
			d.log.Warn("the local broker refused a subscription to peers' $ filters (ACL?): messages on them are not relayed from this broker",
				"filters_in_packet", len(chunk), "first", chunk[0])
			err = nil
		}
		if err != nil {
			d.log.Warn("changing the subscriptions to peers' $ filters failed, will retry", "subscribe", subscribe, "filters", len(chunk), "left", len(filters), "err", err)
			return false
		}
		d.mu.Lock()
		for _, f := range chunk {
			if subscribe {
				d.set[f] = true
			} else {
				delete(d.set, f)
			}
		}
		d.mu.Unlock()
	}
	return true
}
