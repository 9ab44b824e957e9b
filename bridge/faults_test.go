package bridge_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Contract 7: an agent that starts next to a broker whose clients it cannot know wants
// everything until it can account for every client, so those clients keep receiving.
func TestContract7FreshStartNextToSubscribedClients(t *testing.T) {
	c := newCluster(t, 3, nil)
	// b2's client subscribes before any agent runs: its subscription is never logged to one.
	early := connect(t, c.brokers[1].Addr, "early-bird", true)
	early.subscribe("early/#", 1)
	for i := range c.brokers {
		c.startAgent(i)
	}
	waitFor(t, 10*time.Second, "b1 linked to b2", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if p.Name == "b2" && !p.Up {
				return "down"
			}
		}
		return ""
	})
	if s := c.agent(1).Status(); !s.WantAll || s.WantAllReason == "" {
		t.Fatalf("b2's agent advertises exact interest although a client predates it: %+v", s)
	}
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	// b1's peer link can be up a few ms before b1's agent has subscribed to '#' on its own
	// broker, and a publish before that is nobody's to relay: publish until one arrives.
	deadline := time.Now().Add(5 * time.Second)
	for len(early.messages()) == 0 && time.Now().Before(deadline) {
		pub.publish("early/news", 1, false, "hello")
		time.Sleep(200 * time.Millisecond)
	}
	got := early.waitCount(1, time.Second)
	if got[0].Topic != "early/news" {
		t.Fatalf("early subscriber got %s", summary(got))
	}
	// It stays wide while the unknown client is connected.
	time.Sleep(3 * time.Second)
	if s := c.agent(1).Status(); !s.WantAll {
		t.Fatalf("b2's agent narrowed its interest while an unknown client is still connected")
	}
	// Once that client leaves, the count matches and the interest becomes exact.
	early.c.Disconnect(50)
	c.waitExact(1, "b2's agent to advertise exact interest")
}

// Contract 7: client ids and filters with spaces, and a filter longer than Mosquitto's log
// line, still draw the messages their clients want.
func TestContract7SpacesAndLongFilters(t *testing.T) {
	c := startCluster(t, 3)
	spaced := connect(t, c.brokers[1].Addr, "id with spaces 1", true)
	spaced.subscribe("topic with/spaces 1/#", 1)
	long := "long/" + strings.Repeat("x", 1200) + "/end"
	longSub := connect(t, c.brokers[2].Addr, "long-filter", true)
	longSub.subscribe(long, 1)
	c.waitPeerFilters(1, 1)
	waitFor(t, 5*time.Second, "b3's long filter known to b1", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if p.Name == "b3" && p.Filters != 1 {
				return fmt.Sprintf("%d filters", p.Filters)
			}
		}
		return ""
	})
	if s := c.agent(2).Status(); s.Truncated == 0 {
		t.Errorf("b3's agent did not count the truncated subscribe line: %+v", s)
	}
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("topic with/spaces 1/a b", 1, false, "spaced")
	pub.publish(long, 1, false, "long")
	if got := spaced.waitCount(1, 5*time.Second); got[0].Payload != "spaced" {
		t.Errorf("spaced subscriber got %s", summary(got))
	}
	if got := longSub.waitCount(1, 5*time.Second); got[0].Topic != long {
		t.Errorf("long-filter subscriber got %s", summary(got))
	}
}

// Contract 8: an agent restart keeps the interest (state file) and loses no QoS 1 message: the
// broker queues for the agent's persistent session while it is away.
func TestContract8AgentRestartMidStream(t *testing.T) {
	c := startCluster(t, 3)
	sub := connect(t, c.brokers[1].Addr, "sub", true)
	sub.subscribe("stream/#", 1)
	c.waitPeerFilters(1, 1)

	const total = 600
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; k < total; k++ {
			pub.publish("stream/x", 1, false, fmt.Sprint(k))
			time.Sleep(time.Millisecond)
		}
	}()
	// Restart b1's agent (publisher side) and b2's agent (subscriber side) mid-stream.
	time.Sleep(150 * time.Millisecond)
	c.stopAgent(0)
	c.startAgent(0)
	time.Sleep(150 * time.Millisecond)
	c.stopAgent(1)
	c.startAgent(1)
	wg.Wait()
	checkSequence(t, sub, "stream/x", total, 15*time.Second)
	if s := c.agent(1).Status(); s.LocalFilters != 1 {
		t.Errorf("restarted b2 agent holds %d filters, want the restored 1", s.LocalFilters)
	}
}

// Contract 8: a peer broker stopped and restarted with QoS 1 traffic in flight loses nothing the
// publishing broker acknowledged.
func TestContract8PeerBrokerRestart(t *testing.T) {
	c := startCluster(t, 3)
	sub := connect(t, c.brokers[1].Addr, "sub-persistent", false)
	sub.subscribe("flow/#", 1)
	c.waitPeerFilters(1, 1)

	const total = 1000
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; k < total; k++ {
			pub.publish("flow/x", 1, false, fmt.Sprint(k))
			sent.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	c.brokers[1].Stop() // SIGTERM: Mosquitto saves its persistent sessions
	time.Sleep(500 * time.Millisecond)
	c.brokers[1].StartAgain()
	wg.Wait()
	checkSequence(t, sub, "flow/x", total, 20*time.Second)
}

// checkSequence waits until the subscriber has every payload 0..total-1 on topic, at least once.
func checkSequence(t *testing.T, sub *client, topic string, total int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var missing []int
	dups := 0
	for {
		seen := map[string]int{}
		for _, m := range sub.messages() {
			if m.Topic == topic {
				seen[m.Payload]++
			}
		}
		missing = missing[:0]
		dups = 0
		for k := 0; k < total; k++ {
			switch n := seen[fmt.Sprint(k)]; {
			case n == 0:
				missing = append(missing, k)
			case n > 1:
				dups += n - 1
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s: %d of %d arrived, %d duplicates", topic, total-len(missing), total, dups)
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged messages lost, e.g. %v", len(missing), missing[:min(10, len(missing))])
	}
}
