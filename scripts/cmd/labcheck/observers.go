// Observers: one log reader per broker, which tells on which broker (and through which HAProxy
// host) each connection of the pair landed.

package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// observerID is the client id of the per-broker log readers; the lab's cluster file lists it
// in agent.ignore_clients so that its $SYS subscriptions never count as interest.
const observerID = "labcheck-obs"

// logEvent is one line of a broker's log that concerns a labcheck client.
type logEvent struct {
	broker string
	t      time.Time
	client string
	// connect: the HAProxy host (source address) the client came through
	from string
	// subscribe: the marker's role and connection number
	role  string
	epoch int64
}

type observers struct {
	mu       sync.Mutex
	connects []logEvent
	markers  []logEvent
	clients  []mqtt.Client
	run      string
}

var (
	connectRE = regexp.MustCompile(`New client connected from (\S+):\d+ as (\S+) \(`)
	markerRE  *regexp.Regexp
)

func startObservers(ctx context.Context, brokers brokerList, run string, o options) (*observers, error) {
	obs := &observers{run: run}
	markerRE = regexp.MustCompile(`(\S+) [012] labcheck/` + regexp.QuoteMeta(run) + `/conn/(sub|pub)/(\d+)$`)
	errc := make(chan error, len(brokers))
	for _, b := range brokers {
		b := b
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + b.Address).SetClientID(observerID).
			SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
			SetConnectRetryInterval(o.retry).SetMaxReconnectInterval(o.retry).
			SetConnectTimeout(time.Second).SetKeepAlive(2 * time.Second).SetPingTimeout(time.Second)
		handler := func(_ mqtt.Client, m mqtt.Message) { obs.line(b.Name, m.Topic(), string(m.Payload())) }
		opts.SetOnConnectHandler(func(c mqtt.Client) {
			c.SubscribeMultiple(map[string]byte{"$SYS/broker/log/N": 0, "$SYS/broker/log/M/subscribe": 0}, handler)
		})
		c := mqtt.NewClient(opts)
		obs.clients = append(obs.clients, c)
		go func() {
			tok := c.Connect()
			select {
			case <-tok.Done():
				errc <- tok.Error()
			case <-time.After(5 * time.Second):
				errc <- fmt.Errorf("observer: broker %s (%s) unreachable", b.Name, b.Address)
			case <-ctx.Done():
				errc <- ctx.Err()
			}
		}()
	}
	var errs []error
	for range brokers {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		obs.stop()
		return nil, errors.Join(errs...)
	}
	// Let the SUBSCRIBEs of the OnConnect handlers land before anything is measured.
	time.Sleep(200 * time.Millisecond)
	return obs, nil
}

func (obs *observers) line(broker, topic, line string) {
	now := time.Now()
	obs.mu.Lock()
	defer obs.mu.Unlock()
	switch {
	case strings.HasSuffix(topic, "/N"):
		if m := connectRE.FindStringSubmatch(line); m != nil {
			obs.connects = append(obs.connects, logEvent{broker: broker, t: now, client: m[2], from: m[1]})
		}
	case strings.HasSuffix(topic, "/subscribe"):
		if m := markerRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[3], 10, 64)
			obs.markers = append(obs.markers, logEvent{broker: broker, t: now, client: m[1], role: m[2], epoch: n})
		}
	}
}

// landed returns the broker on which client id connected, if an observer saw it.
func (obs *observers) landed(id string) string {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	for _, e := range obs.connects {
		if e.client == id {
			return e.broker
		}
	}
	return ""
}

// connections maps every connection number of role to the broker that logged its marker
// subscription, and the HAProxy host of the last connect line of that client on that broker
// before the marker.
func (obs *observers) connections(role, id string) map[int64]connInfo {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	out := map[int64]connInfo{}
	for _, m := range obs.markers {
		if m.role != role || m.client != id {
			continue
		}
		if _, seen := out[m.epoch]; seen {
			continue // a marker re-sent on a later connection: the first one is the right one
		}
		ci := connInfo{Conn: m.epoch, Broker: m.broker, UnixMs: m.t.UnixMilli()}
		for _, c := range obs.connects {
			if c.broker == m.broker && c.client == id && !c.t.After(m.t) {
				ci.Via = c.from
			}
		}
		out[m.epoch] = ci
	}
	return out
}

// connectionsAfter is connections without the connections up to skip.
func (obs *observers) connectionsAfter(role, id string, skip int64) map[int64]connInfo {
	m := obs.connections(role, id)
	for n := range m {
		if n <= skip {
			delete(m, n)
		}
	}
	return m
}

func (obs *observers) stop() {
	for _, c := range obs.clients {
		c.Disconnect(50)
	}
}
