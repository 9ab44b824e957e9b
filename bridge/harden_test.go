package bridge_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/bridge"
	"mosquitto-ha/sysparse/mosqtest"
)

// Issue 10, findings 4 to 9: each test reproduced its finding against real brokers before the
// change that added it.

// forgedSnapshot is a well-formed interest snapshot (doc.go) of an epoch far in the future,
// with no filter: a peer that took it would believe the node wants nothing, and ignore every
// delta of the node's real (earlier) epoch.
func forgedSnapshot() string {
	b := []byte("MHA1S")
	b = binary.AppendUvarint(b, 1<<62) // epoch
	b = binary.AppendUvarint(b, 1)     // seq
	b = append(b, 0)                   // flags
	b = binary.AppendUvarint(b, 0)     // count
	return string(b)
}

// forgedBatch is a relay batch (doc.go) carrying one retained QoS 1 publish of payload on topic.
func forgedBatch(topic, payload string) string {
	b := []byte("MHB1")
	b = binary.AppendUvarint(b, 1)
	b = append(b, 1|4) // QoS 1, retain
	b = binary.AppendUvarint(b, uint64(len(topic)))
	b = append(b, topic...)
	b = binary.AppendUvarint(b, uint64(len(payload)))
	b = append(b, payload...)
	return string(b)
}

// Finding 6: a relay (single or in a batch) can never write into the cluster's control topics,
// and a foreign write on an agent's own interest topic, even one of a future epoch, is restored.
// Open cluster (no secret, no ACL): anyone can publish relays.
func TestFinding6RelayIntoControlTopicsRefused(t *testing.T) {
	c := startCluster(t, 3)
	victim := connect(t, c.brokers[1].Addr, "victim", true)
	victim.subscribe("bank/#", 1)
	c.waitPeerFilters(1, 1)
	pub := connect(t, c.brokers[0].Addr, "pub", true)

	evil := connect(t, c.brokers[1].Addr, "evil", true)
	for i, forge := range []struct{ topic, payload string }{
		{"$forward-r/$HA/t/b2/interest", forgedSnapshot()},
		{"$forward-b/b1", forgedBatch("$HA/t/b2/interest", forgedSnapshot())},
		{"$forward-b/b1", forgedBatch("$HA/t/b2/status", `{"agent_up":true}`)},
	} {
		evil.publish(forge.topic, 1, false, forge.payload)
		time.Sleep(time.Second) // what a republish would do, it has done by now
		c.waitPeerFilters(1, 1)
		pub.publish("bank/1", 1, false, forge.topic)
		victim.waitCount(i+1, 5*time.Second)
	}
	if s := c.agent(1).Status(); s.Forged != 3 {
		t.Errorf("b2 counted %d forged relays, want 3", s.Forged)
	}

	// A client writes the same snapshot straight to b2's interest topic: b2's agent sees it
	// (it is not its own publish), counts it and restores its snapshot.
	evil.publish("$HA/t/b2/interest", 1, true, forgedSnapshot())
	waitFor(t, 5*time.Second, "b2 to notice the foreign snapshot", func() string {
		if s := c.agent(1).Status(); s.ForgedInterest == 0 {
			return "not counted"
		}
		return ""
	})
	c.waitPeerFilters(1, 1)
	pub.publish("bank/2", 1, false, "after write")
	if got := victim.waitCount(4, 5*time.Second); got[3].Payload != "after write" {
		t.Errorf("victim got %s", summary(got))
	}
}

// retainedPayload reads the retained message of topic on addr.
func retainedPayload(t *testing.T, addr, topic string) string {
	t.Helper()
	cl := connect(t, addr, fmt.Sprintf("reader-%d", time.Now().UnixNano()), true)
	defer cl.c.Disconnect(0)
	cl.subscribe(topic, 1)
	return cl.waitCount(1, 5*time.Second)[0].Payload
}

// Finding 8: a flood of foreign writes to an agent's interest topic does not make it publish a
// snapshot for each: snapshots stay within the rate limit (one per snapshot interval, 200 ms
// in these tests), and the last one restores the real interest.
func TestFinding8ForeignWritesWithinSnapshotRateLimit(t *testing.T) {
	c := startCluster(t, 2)
	sub := connect(t, c.brokers[1].Addr, "sub", true)
	sub.subscribe("x/#", 1)
	c.waitPeerFilters(1, 1)
	time.Sleep(500 * time.Millisecond)
	size := len(retainedPayload(t, c.brokers[1].Addr, "$HA/t/b2/interest"))
	c.waitPeerFilters(1, 1) // the reader's own subscription is gone again
	time.Sleep(time.Second) // and so are the delta and snapshot it caused
	before := c.agent(1).Status()

	evil := connect(t, c.brokers[1].Addr, "evil", true)
	const writes = 1000
	start := time.Now()
	for i := 0; i < writes; i++ {
		evil.c.Publish("$HA/t/b2/interest", 0, false, "x") // QoS 0, as fast as it goes
	}
	waitFor(t, 10*time.Second, "b2 to see every foreign write", func() string {
		if n := c.agent(1).Status().ForgedInterest - before.ForgedInterest; n < writes {
			return fmt.Sprintf("%d seen", n)
		}
		return ""
	})
	elapsed := time.Since(start)
	time.Sleep(time.Second) // the last restore is due within one interval
	after := c.agent(1).Status()
	snapshots := int(after.ControlBytes-before.ControlBytes) / size
	allowed := int(elapsed/(200*time.Millisecond)) + 2
	t.Logf("%d foreign writes in %s: %d snapshots (%d bytes), at most %d allowed", writes, elapsed, snapshots, after.ControlBytes-before.ControlBytes, allowed)
	if snapshots > allowed {
		t.Errorf("%d snapshots for %d foreign writes in %s, want at most %d (one per 200 ms)", snapshots, writes, elapsed, allowed)
	}
	if snapshots == 0 {
		t.Error("the snapshot was never restored")
	}
	c.waitPeerFilters(1, 1)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("x/1", 1, false, "ok")
	sub.waitCount(1, 5*time.Second)
}

// Finding 7: with a cluster secret, a status message must be signed: a forged "agent_up": true
// does not end the relay-everything fallback while the agent is down, nor does a replay of a
// real status the agent signed before it stopped. The restarted agent's own status does.
func TestFinding7StatusSignedOrNotTrusted(t *testing.T) {
	c := startSecretCluster(t, 2)
	sub := connect(t, c.brokers[1].Addr, "sub", true)
	sub.subscribe("only/this", 1)
	c.waitPeerFilters(1, 1)

	// Capture one real, signed status of b2's agent.
	var mu sync.Mutex
	var real []byte
	spy := connect(t, c.brokers[1].Addr, "spy", true)
	spy.c.Subscribe("$HA/t/b2/status", 0, func(_ mqtt.Client, m mqtt.Message) {
		if strings.Contains(string(m.Payload()), `"agent_up":true`) {
			mu.Lock()
			real = append([]byte(nil), m.Payload()...)
			mu.Unlock()
		}
	}).WaitTimeout(5 * time.Second)
	waitFor(t, 5*time.Second, "a status of b2's agent", func() string {
		mu.Lock()
		defer mu.Unlock()
		if real == nil {
			return "none yet"
		}
		return ""
	})
	mu.Lock()
	replay := real
	mu.Unlock()
	if !strings.Contains(string(replay), `"sig":"`) {
		t.Errorf("status not signed: %s", replay)
	}

	c.stopAgent(1)
	waitFor(t, 5*time.Second, "b1 to relay everything to b2", func() string {
		if !c.agent(0).PeerWants("b2", "zzz/unrelated") {
			return "b1 still filters for b2"
		}
		return ""
	})
	forgedBefore := peerForged(c, 0, "b2")
	evil := connect(t, c.brokers[1].Addr, "evil", true)
	evil.publish("$HA/t/b2/status", 1, true, `{"node":"b2","agent_up":true}`)
	evil.publish("$HA/t/b2/status", 1, true, string(replay))
	waitFor(t, 5*time.Second, "b1 to drop the forged status", func() string {
		if n := peerForged(c, 0, "b2") - forgedBefore; n < 1 {
			return fmt.Sprintf("forged=%d", n)
		}
		return ""
	})
	time.Sleep(500 * time.Millisecond)
	if !c.agent(0).PeerWants("b2", "zzz/unrelated") {
		t.Fatal("a forged or replayed status ended the relay-everything fallback while b2's agent is down")
	}
	// The agent's own status still counts. (The clients it cannot account for after its
	// restart leave first, so that it can advertise exact interest again.)
	for _, cl := range []*client{sub, spy, evil} {
		cl.c.Disconnect(0)
	}
	c.startAgent(1)
	c.waitSettled()
	if c.agent(0).PeerWants("b2", "zzz/unrelated") {
		t.Error("b1 relays everything to b2 although its agent is back")
	}
}

func peerForged(c *testCluster, i int, name string) uint64 {
	for _, p := range c.agent(i).Status().Peers {
		if p.Name == name {
			return p.Forged
		}
	}
	return 0
}

// Finding 4: with a cluster secret the agents' client ids cannot be guessed: clients that
// connect with the plain ids ("mha-<cluster>-<node>-local", "-to-") take nothing from the agents
// and cost no message; a takeover of a real id is logged at Warn and the agent comes back.
func TestFinding4AgentIDsUnguessable(t *testing.T) {
	var logs lockedBuffer
	c := newCluster(t, 2, func(i int, o *bridge.Options) {
		withSecret(i, o)
		if i == 1 {
			o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}
	})
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	plain := bridge.NewTopics("t", "$forward/")
	secret := plain.WithIDSecret([]byte("cluster secret for tests"))
	if id := secret.LocalID("b2"); id == plain.LocalID("b2") || !strings.HasPrefix(id, plain.LocalID("b2")+"-") {
		t.Fatalf("local id with a secret %q, plain %q", id, plain.LocalID("b2"))
	}
	sub := connect(t, c.brokers[1].Addr, "sub", false)
	sub.subscribe("t4/#", 1)
	c.waitPeerFilters(1, 1)

	// Intruders with the plain ids, persistent sessions that take what they are sent.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, in := range []struct{ addr, id string }{
		{c.brokers[1].Addr, plain.LocalID("b2")}, {c.brokers[1].Addr, plain.LinkID("b1", "b2")},
		{c.brokers[0].Addr, plain.LocalID("b1")}, {c.brokers[0].Addr, plain.LinkID("b2", "b1")},
	} {
		wg.Add(1)
		go func(addr, id string) {
			defer wg.Done()
			for {
				o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(false)
				cl := mqtt.NewClient(o)
				cl.Connect().WaitTimeout(2 * time.Second)
				select {
				case <-stop:
					cl.Disconnect(0)
					return
				case <-time.After(300 * time.Millisecond):
				}
				cl.Disconnect(0)
			}
		}(in.addr, in.id)
	}
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	const n = 1000
	for i := 0; i < n; i++ {
		pub.c.Publish("t4/x", 1, false, fmt.Sprint(i))
		if i%100 == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	checkSequence(t, sub, "t4/x", n, 15*time.Second)

	// A takeover of the real id is noticed and logged, and relaying comes back.
	o := mqtt.NewClientOptions().AddBroker("tcp://" + c.brokers[1].Addr).SetClientID(secret.LocalID("b2")).
		SetCleanSession(true).SetAutoReconnect(false)
	intruder := mqtt.NewClient(o)
	if tok := intruder.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("intruder: %v", tok.Error())
	}
	time.Sleep(500 * time.Millisecond)
	intruder.Disconnect(0)
	waitFor(t, 10*time.Second, "a Warn naming the taken client id", func() string {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "took over a cluster client id") && strings.Contains(l, secret.LocalID("b2")) {
				return ""
			}
		}
		return "none yet"
	})
	// It came with a clean session, which discarded the agent's: that is reported too.
	waitFor(t, 10*time.Second, "a Warn saying the agent's session was discarded", func() string {
		if !strings.Contains(logs.String(), "the agent's session on its broker was discarded") {
			return "none yet"
		}
		return ""
	})
	// What was published while the intruder held the id is lost with the session it discarded
	// (the derived ids are the defence); once the agent is back, relaying works again.
	waitFor(t, 10*time.Second, "b2's agent back and b1's link to it up", func() string {
		if !c.agent(1).Status().LocalUp {
			return "b2 local down"
		}
		for _, p := range c.agent(0).Status().Peers {
			if !p.Up {
				return "b1's link down"
			}
		}
		return ""
	})
	time.Sleep(500 * time.Millisecond)
	pub.publish("t4/y", 1, false, "after")
	waitFor(t, 10*time.Second, "t4/y after the takeover", func() string {
		for _, m := range sub.messages() {
			if m.Topic == "t4/y" {
				return ""
			}
		}
		return "not delivered"
	})
}

// newClusterExtra is newCluster with extra broker configuration for broker i.
func newClusterExtra(t *testing.T, n int, extra func(i int) string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, name: "t", dir: t.TempDir(),
		agents: make([]*bridge.Agent, n), cancels: make([]context.CancelFunc, n), dones: make([]chan error, n)}
	for i := 0; i < n; i++ {
		c.brokers = append(c.brokers, mosqtest.Start(t, mosqtest.Options{Persistence: true, Extra: brokerExtra + extra(i)}))
		c.names = append(c.names, fmt.Sprintf("b%d", i+1))
	}
	t.Cleanup(c.stopAll)
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	return c
}

// Issue 11, interest after a broker restart: a broker killed with -9 before it saved its
// sessions lost the persistent session of client P, which was away; once the broker's count of
// clients proves no such session came back, P's filters are no longer advertised, although
// another persistent client R, which reconnected after the restart, keeps the agent wanting
// everything (its subscriptions may have come from disk). When the broker restored the sessions
// (stopped with SIGTERM, which saves them), P's filters are kept.
func TestBrokerRestartLostSessionsDropInterest(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill bool
	}{
		{"sessions lost", true},
		{"sessions restored", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClusterExtra(t, 2, func(i int) string { return "autosave_interval 3600\n" })
			p := connect(t, c.brokers[1].Addr, "P", false)
			p.subscribe("gone/#", 1)
			connectR := func() mqtt.Client {
				o := mqtt.NewClientOptions().AddBroker("tcp://" + c.brokers[1].Addr).SetClientID("R").
					SetCleanSession(false).SetAutoReconnect(false)
				r := mqtt.NewClient(o)
				if tok := r.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("connect R: %v", tok.Error())
				}
				return r
			}
			r := connectR()
			r.Subscribe("r/#", 1, nil).WaitTimeout(5 * time.Second)
			c.waitPeerFilters(1, 2)
			p.c.Disconnect(50)
			if tc.kill {
				c.brokers[1].Kill()
			} else {
				c.brokers[1].Stop()
			}
			r.Disconnect(0)
			c.brokers[1].StartAgain()
			waitFor(t, 10*time.Second, "b2's agent back on its broker", func() string {
				if !c.agent(1).Status().LocalUp {
					return "local down"
				}
				return ""
			})
			time.Sleep(1500 * time.Millisecond) // a $SYS tick on the new log subscription
			r = connectR()
			defer r.Disconnect(0)
			if !tc.kill {
				deadline := time.Now().Add(4 * time.Second)
				for time.Now().Before(deadline) {
					if s := c.agent(1).Status(); s.LocalFilters != 2 || !c.agent(0).PeerWants("b2", "gone/x") {
						t.Fatalf("a restored session's interest was dropped: %+v", s)
					}
					time.Sleep(100 * time.Millisecond)
				}
				pub := connect(t, c.brokers[0].Addr, "pub", true)
				pub.publish("gone/x", 1, false, "kept")
				p2 := connect(t, c.brokers[1].Addr, "P", false)
				p2.waitCount(1, 5*time.Second)
				return
			}
			waitFor(t, 10*time.Second, "b1 to see b2's interest without P's filter", func() string {
				for _, ps := range c.agent(0).Status().Peers {
					if ps.Filters != 1 {
						return fmt.Sprintf("b1 sees %d filters on b2, b2 holds %d", ps.Filters, c.agent(1).Status().LocalFilters)
					}
				}
				return ""
			})
		})
	}
}

// Finding 9: a client id so long that its log lines are cut leaves its interest under a cut id
// that no line can end; once the broker's count proves that client gone, it goes, also when a
// resumed session keeps the agent wanting everything, and also after a restart of the agent,
// which restores it from the state file.
func TestFinding9CutLinesDoNotPinInterest(t *testing.T) {
	c := startCluster(t, 2)
	r := connect(t, c.brokers[1].Addr, "R", false)
	r.subscribe("r/#", 1)
	c.waitPeerFilters(1, 1)
	long := connect(t, c.brokers[1].Addr, strings.Repeat("L", 2000), true)
	long.subscribe("cut/x", 1)
	// Finding 11: the id "<unknown>", which Mosquitto also prints for a connection without
	// CONNECT, makes its disconnect line ambiguous: its interest must not stay for good either.
	unk := connect(t, c.brokers[1].Addr, "<unknown>", true)
	unk.subscribe("unk/#", 1)
	waitFor(t, 5*time.Second, "b2 to read the cut line", func() string {
		if c.agent(1).Status().Truncated == 0 {
			return "no truncated line yet"
		}
		return ""
	})
	// An agent restart: R resumes without its subscriptions being logged (wanting everything
	// from now on), the cut id comes back from the state file.
	c.stopAgent(1)
	c.startAgent(1)
	c.waitLinksUp(1)
	time.Sleep(500 * time.Millisecond) // its log subscription is in place
	r.c.Disconnect(50)
	r = connect(t, c.brokers[1].Addr, "R", false)
	long.c.Disconnect(50)
	unk.c.Disconnect(50)
	waitFor(t, 10*time.Second, "b2's interest without the cut id's widened filter and <unknown>'s", func() string {
		if s := c.agent(1).Status(); s.LocalFilters != 1 {
			return fmt.Sprintf("b2 holds %d filters (want_all=%v)", s.LocalFilters, s.WantAll)
		}
		return ""
	})
	// Dropped for good: another restart does not bring them back from the state file, even
	// though R, connected across it, keeps the count from proving anything this time.
	c.stopAgent(1)
	c.startAgent(1)
	c.waitLinksUp(1)
	time.Sleep(3 * time.Second)
	if s := c.agent(1).Status(); s.LocalFilters != 1 {
		t.Errorf("after another restart b2 holds %d filters, want 1 (r/#)", s.LocalFilters)
	}
}

// Finding 11: while a peer's interest is unknown, each delta that cannot be applied is not a
// log line of its own: one Info per episode (then at most one a minute).
func TestFinding11GapLoggedOncePerEpisode(t *testing.T) {
	var logs lockedBuffer
	c := newCluster(t, 2, func(i int, o *bridge.Options) {
		if i == 0 {
			o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}
	})
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	evil := connect(t, c.brokers[1].Addr, "evil", true)
	for k := 0; k < 200; k++ {
		d := []byte("MHA1D")
		d = binary.AppendUvarint(d, 1<<62)
		d = binary.AppendUvarint(d, uint64(10+2*k)) // every one a gap
		d = append(d, 0)
		d = binary.AppendUvarint(d, 0)
		evil.publish("$HA/t/b2/interest/delta", 0, false, string(d))
	}
	time.Sleep(time.Second)
	if n := strings.Count(logs.String(), "interest gap"); n != 1 {
		t.Errorf("%d \"interest gap\" lines for 200 deltas in one episode, want 1", n)
	}
}

// Finding 5: a client with tens of thousands of '$' filters does not stall relaying: the peers
// mirror them in bounded packets, off the dispatcher, and still deliver on them.
func TestFinding5DollarFiltersDoNotStallRelaying(t *testing.T) {
	// No autosave each second: writing 100,000 subscriptions to disk stalls a broker by itself.
	c := newClusterExtra(t, 3, func(int) string { return "autosave_interval 3600\n" })
	sub := connect(t, c.brokers[2].Addr, "flow-sub", true)
	sub.subscribe("flow/#", 1)
	c.waitPeerFilters(2, 1)

	const n = 200000
	many := connect(t, c.brokers[1].Addr, "many", true)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // one publish every 20 ms on b1, for b3's subscriber
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			pub.c.Publish("flow/x", 1, false, fmt.Sprint(k))
		}
	}()
	var at []time.Time
	var mu sync.Mutex
	sub.c.AddRoute("flow/#", func(_ mqtt.Client, _ mqtt.Message) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
	})
	time.Sleep(500 * time.Millisecond)
	for i := 0; i < n; i += 1000 {
		fs := map[string]byte{}
		for j := i; j < i+1000; j++ {
			fs[fmt.Sprintf("$d/%d", j)] = 0
		}
		if tok := many.c.SubscribeMultiple(fs, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
	}
	waitFor(t, 60*time.Second, "b1 to learn the $ filters", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if p.Name == "b2" && p.Filters < n {
				return fmt.Sprintf("%d filters", p.Filters)
			}
		}
		return ""
	})
	got := many.messages()
	waitFor(t, 30*time.Second, "a publish on the last $ filter to reach b2", func() string {
		pub.c.Publish(fmt.Sprintf("$d/%d", n-1), 0, false, "dollar")
		if len(many.messages()) == len(got) {
			return "not yet"
		}
		return ""
	})
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	var worst time.Duration
	for i := 1; i < len(at); i++ {
		worst = max(worst, at[i].Sub(at[i-1]))
	}
	t.Logf("%d publishes received, longest gap %s", len(at), worst)
	if worst > 2*time.Second {
		t.Errorf("relaying to b3 stalled %s while b1 mirrored %d $ filters", worst, n)
	}
}
