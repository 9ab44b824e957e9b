package bridge_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/bridge"
	"mosquitto-ha/sysparse/mosqtest"
)

// brokerExtra makes $SYS/broker/clients/total arrive every second, so fresh agents learn quickly
// that they know every client.
const brokerExtra = "sys_interval 1\n"

// testCluster is N real Mosquitto brokers with an in-process agent beside each.
type testCluster struct {
	t       testing.TB
	name    string
	brokers []*mosqtest.Broker
	names   []string
	dir     string
	opts    func(i int, o *bridge.Options)

	mu      sync.Mutex
	agents  []*bridge.Agent
	cancels []context.CancelFunc
	dones   []chan error
}

func newCluster(t testing.TB, n int, opts func(i int, o *bridge.Options)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, name: "t", dir: t.TempDir(), opts: opts,
		agents: make([]*bridge.Agent, n), cancels: make([]context.CancelFunc, n), dones: make([]chan error, n)}
	for i := 0; i < n; i++ {
		c.brokers = append(c.brokers, mosqtest.Start(t, mosqtest.Options{Persistence: true, Extra: brokerExtra}))
		c.names = append(c.names, fmt.Sprintf("b%d", i+1))
	}
	t.Cleanup(c.stopAll)
	return c
}

// startCluster starts N brokers and agents and waits until every agent knows every peer's
// exact interest.
func startCluster(t *testing.T, n int) *testCluster { return startClusterTB(t, n) }

func startClusterTB(t testing.TB, n int) *testCluster {
	t.Helper()
	c := newCluster(t, n, nil)
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	return c
}

func (c *testCluster) options(i int) bridge.Options {
	o := bridge.Options{
		Cluster: c.name, Node: c.names[i], Local: c.brokers[i].Addr,
		StatePath:        filepath.Join(c.dir, c.names[i]+".json"),
		Keepalive:        2 * time.Second,
		SnapshotInterval: 200 * time.Millisecond,
		IgnoreClients:    []string{"haproxy-hc"},
		Logger:           testLogger(c.t, c.names[i]),
	}
	for j, b := range c.brokers {
		if j != i {
			o.Peers = append(o.Peers, bridge.PeerAddr{Name: c.names[j], Address: b.Addr})
		}
	}
	if c.opts != nil {
		c.opts(i, &o)
	}
	return o
}

func (c *testCluster) startAgent(i int) {
	c.t.Helper()
	a, err := bridge.New(c.options(i))
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	c.mu.Lock()
	c.agents[i], c.cancels[i], c.dones[i] = a, cancel, done
	c.mu.Unlock()
}

func (c *testCluster) stopAgent(i int) {
	c.mu.Lock()
	cancel, done := c.cancels[i], c.dones[i]
	c.cancels[i] = nil
	c.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			c.t.Errorf("agent %s: %v", c.names[i], err)
		}
	case <-time.After(10 * time.Second):
		c.t.Errorf("agent %s did not stop within 10s", c.names[i])
	}
}

func (c *testCluster) stopAll() {
	for i := range c.agents {
		c.stopAgent(i)
	}
}

func (c *testCluster) agent(i int) *bridge.Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agents[i]
}

// waitExact waits until agent i advertises exact interest, with what, the reason it did not.
func (c *testCluster) waitExact(i int, what string) {
	c.t.Helper()
	waitFor(c.t, 10*time.Second, what, func() string {
		if s := c.agent(i).Status(); s.WantAll {
			return s.WantAllReason
		}
		return ""
	})
}

// waitSettled waits until every running agent advertises exact interest and knows each peer's.
func (c *testCluster) waitSettled() {
	c.t.Helper()
	waitFor(c.t, 15*time.Second, "every agent to know every peer's exact interest", func() string {
		for i := range c.agents {
			a := c.agent(i)
			if a == nil {
				continue
			}
			s := a.Status()
			if s.WantAll {
				return fmt.Sprintf("%s still wants everything: %s", s.Node, s.WantAllReason)
			}
			for _, p := range s.Peers {
				if !p.Up || !p.InterestKnown {
					return fmt.Sprintf("%s: peer %s up=%v known=%v", s.Node, p.Name, p.Up, p.InterestKnown)
				}
			}
		}
		return ""
	})
}

// waitPeerFilters waits until every other agent sees node i holding exactly n filters.
func (c *testCluster) waitPeerFilters(i, n int) {
	c.t.Helper()
	waitFor(c.t, 10*time.Second, fmt.Sprintf("peers to see %d filters on %s", n, c.names[i]), func() string {
		for j := range c.agents {
			if j == i || c.agent(j) == nil {
				continue
			}
			for _, p := range c.agent(j).Status().Peers {
				if p.Name == c.names[i] && (p.Filters != n || !p.InterestKnown) {
					return fmt.Sprintf("%s sees %d filters on %s (known=%v)", c.names[j], p.Filters, p.Name, p.InterestKnown)
				}
			}
		}
		return ""
	})
}

// relayed is how many relays agent i sent to peer name.
func (c *testCluster) relayed(i int, name string) uint64 {
	for _, p := range c.agent(i).Status().Peers {
		if p.Name == name {
			return p.Relayed
		}
	}
	c.t.Fatalf("no peer %s on %s", name, c.names[i])
	return 0
}

func waitFor(t testing.TB, limit time.Duration, what string, pending func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := ""
	for time.Now().Before(deadline) {
		if last = pending(); last == "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %s", limit, what, last)
}

func testLogger(t testing.TB, node string) *slog.Logger {
	if os.Getenv("MHA_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// received is one message a test client got.
type received struct {
	Topic    string
	Payload  string
	QoS      byte
	Retained bool
}

// client is a test MQTT client that records what it receives.
type client struct {
	t  *testing.T
	c  mqtt.Client
	mu sync.Mutex
	in []received
}

func connect(t *testing.T, addr, id string, clean bool) *client {
	t.Helper()
	cl := &client{t: t}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond).
		SetResumeSubs(true).SetOrderMatters(true)
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		cl.mu.Lock()
		cl.in = append(cl.in, received{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()})
		cl.mu.Unlock()
	})
	cl.c = mqtt.NewClient(o)
	if tok := cl.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, addr, tok.Error())
	}
	t.Cleanup(func() { cl.c.Disconnect(50) })
	return cl
}

func (cl *client) subscribe(filter string, qos byte) {
	cl.t.Helper()
	if tok := cl.c.Subscribe(filter, qos, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		cl.t.Fatalf("subscribe %q: %v", filter, tok.Error())
	}
}

func (cl *client) unsubscribe(filter string) {
	cl.t.Helper()
	if tok := cl.c.Unsubscribe(filter); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		cl.t.Fatalf("unsubscribe %q: %v", filter, tok.Error())
	}
}

func (cl *client) publish(topic string, qos byte, retained bool, payload string) {
	cl.t.Helper()
	if tok := cl.c.Publish(topic, qos, retained, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		cl.t.Fatalf("publish %q: %v", topic, tok.Error())
	}
}

func (cl *client) messages() []received {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]received(nil), cl.in...)
}

// waitCount waits until the client has at least n messages and returns them.
func (cl *client) waitCount(n int, limit time.Duration) []received {
	cl.t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if m := cl.messages(); len(m) >= n {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
	m := cl.messages()
	cl.t.Fatalf("got %d messages, want %d: %v", len(m), n, summary(m))
	return nil
}

func summary(ms []received) string {
	var s []string
	for i, m := range ms {
		if i == 10 {
			s = append(s, fmt.Sprintf("... %d more", len(ms)-10))
			break
		}
		s = append(s, fmt.Sprintf("%s=%q(q%d,r%v)", m.Topic, m.Payload, m.QoS, m.Retained))
	}
	return strings.Join(s, " ")
}

// counts tallies messages by topic and payload.
func counts(ms []received) map[string]int {
	c := map[string]int{}
	for _, m := range ms {
		c[m.Topic+" "+m.Payload]++
	}
	return c
}

func keys(m map[string]int) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// assertNoWidening checks that no agent met an ambiguous, truncated or malformed log line: in a
// cluster whose client ids and filters are plain, every line of the agents' own connections
// must be attributed exactly.
func (c *testCluster) assertNoWidening() {
	c.t.Helper()
	for i := range c.agents {
		if a := c.agent(i); a != nil {
			if s := a.Status(); s.Ambiguous+s.Truncated+s.Malformed > 0 {
				c.t.Errorf("%s widened its interest on plain log lines: %+v", s.Node, s)
			}
		}
	}
}
