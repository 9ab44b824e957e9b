// dollar.go owns the local subscriptions to peers' '$' filters: '#' never matches '$' topics
// [MQTT-4.7.2-1], so for each '$' filter a peer's clients hold, the local connection subscribes
// to that filter itself.

package bridge

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"mosquitto-ha/bridge/mqttconn"
)

// dollarSubs is the set of peers' '$' filters the local connection subscribes to.
type dollarSubs struct {
	topics Topics
	log    *slog.Logger

	mu    sync.Mutex
	set   map[string]bool
	retry bool // a change to the '$' subscriptions failed; owned by the dispatcher
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

// sync keeps the local subscriptions to '$' filters on c (nil while the local connection is
// down) equal to the union of the peers'. Runs on the dispatcher, so changes apply in order; a
// failed change is retried on the next batch.
func (d *dollarSubs) sync(ctx context.Context, c *mqttconn.Conn, peers []*peer) {
	changed := d.retry
	for _, p := range peers {
		if p.interest.dollarChanged.Swap(false) {
			changed = true
		}
	}
	if !changed {
		return
	}
	d.retry = false
	want := map[string]bool{}
	for _, p := range peers {
		for _, f := range p.interest.DollarFilters() {
			if !d.topics.IsReserved(f) && !strings.HasPrefix(f, d.topics.Control()) {
				want[f] = true
			}
		}
	}
	if c == nil {
		d.mu.Lock()
		d.set = want // the next connection subscribes to all of them
		d.mu.Unlock()
		return
	}
	have := d.current()
	add := map[string]byte{}
	var remove []string
	for f := range want {
		if !have[f] {
			add[f] = 2
		}
	}
	for f := range have {
		if !want[f] {
			remove = append(remove, f)
		}
	}
	if len(add) > 0 {
		if err := c.Subscribe(ctx, add); err != nil {
			d.log.Warn("subscribing to peers' $ filters failed, will retry", "filters", len(add), "err", err)
			d.retry = true
			return
		}
	}
	if len(remove) > 0 {
		if err := c.Unsubscribe(ctx, remove); err != nil {
			d.log.Warn("unsubscribing peers' $ filters failed, will retry", "filters", len(remove), "err", err)
			d.retry = true
		}
	}
	d.mu.Lock()
	d.set = want
	d.mu.Unlock()
}
