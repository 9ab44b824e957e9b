package bridge_test

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Contract 7, accounting by identity (issue 10, finding 1): each test reproduced a missed
// delivery before the agent counted clients by identity.

// waitLinksUp waits until agent i's links to every peer are up.
func (c *testCluster) waitLinksUp(i int) {
	c.t.Helper()
	waitFor(c.t, 10*time.Second, c.names[i]+"'s links up", func() string {
		for _, p := range c.agent(i).Status().Peers {
			if !p.Up {
				return p.Name + " down"
			}
		}
		return ""
	})
}

// A client that subscribed before the agent started, then subscribes again: the second line
// names it, but its first subscription was never seen, so it is not accounted for.
func TestAccountingEarlySubscriber(t *testing.T) {
	c := newCluster(t, 2, nil)
	e := connect(t, c.brokers[1].Addr, "E", true)
	e.subscribe("early/#", 1)
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitLinksUp(1)
	e.subscribe("later/x", 1)
	time.Sleep(4 * time.Second) // several $SYS rounds: the old count went exact here
	if !c.agent(1).Status().WantAll {
		t.Error("b2's agent claims exact interest while E's first subscription is unknown to it")
	}
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("early/1", 1, false, "hello")
	if got := e.waitCount(1, 5*time.Second); got[0].Topic != "early/1" {
		t.Errorf("got %s", summary(got))
	}
	// Once E is gone, every client is known again: the rule does not widen for good.
	e.c.Disconnect(50)
	c.waitExact(1, "b2 to advertise exact interest once E left")
}

// The same after an agent restart with a corrupt state file and journal: nothing restored, and
// a client seen subscribing is not thereby known.
func TestAccountingCorruptStateFile(t *testing.T) {
	c := startCluster(t, 2)
	e := connect(t, c.brokers[1].Addr, "E", true)
	e.subscribe("early/#", 1)
	c.waitPeerFilters(1, 1)
	c.stopAgent(1)
	state := filepath.Join(c.dir, "b2.json")
	for _, p := range []string{state, state + ".journal"} {
		if err := os.WriteFile(p, []byte("{not json\x00\xff"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.startAgent(1)
	c.waitLinksUp(1)
	e.subscribe("later/x", 1)
	time.Sleep(4 * time.Second)
	if !c.agent(1).Status().WantAll {
		t.Error("b2's agent claims exact interest after a corrupt state file, with E's early subscription unknown")
	}
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("early/1", 1, false, "hello")
	e.waitCount(1, 5*time.Second)
}

// healthCheck connects to addr as HAProxy's MQTT check does (CONNECT as haproxy-hc, CONNACK,
// DISCONNECT), every interval, until stop is closed.
func healthCheck(t *testing.T, addr string, interval time.Duration, stop chan struct{}, wg *sync.WaitGroup) {
	connectPkt, _ := hex.DecodeString("101600044d5154540402003c000a686170726f78792d6863")
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				_ = nc.SetDeadline(time.Now().Add(time.Second))
				_, _ = nc.Write(connectPkt)
				var ack [4]byte
				_, _ = nc.Read(ack[:])
				_, _ = nc.Write([]byte{0xe0, 0})
				nc.Close()
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
}

// A subscriber that subscribes while its agent restarts, with a health check connecting every
// second: five rounds, each with a new subscriber.
func TestAccountingSubscribeDuringRestartWithHealthCheck(t *testing.T) {
	c := startCluster(t, 2)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	healthCheck(t, c.brokers[1].Addr, time.Second, stop, &wg)
	defer func() { close(stop); wg.Wait() }()
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	for round := 0; round < 5; round++ {
		c.stopAgent(1)
		s := connect(t, c.brokers[1].Addr, fmt.Sprintf("sub-%d", round), true)
		s.subscribe(fmt.Sprintf("hc/%d/#", round), 1)
		c.startAgent(1)
		c.waitLinksUp(1)
		time.Sleep(5 * time.Second) // several $SYS rounds and health checks
		pub.publish(fmt.Sprintf("hc/%d/x", round), 1, false, "hello")
		if got := s.waitCount(1, 5*time.Second); got[0].Topic != fmt.Sprintf("hc/%d/x", round) {
			t.Fatalf("round %d: got %s", round, summary(got))
		}
		s.c.Disconnect(50) // the next round starts from the same state
	}
}

// An ordinary user with clients "a" and "a 1 b" subscribes so that the line reads as several
// clients: none of the made-up ones may count, or a victim unknown to the agent loses messages.
func TestAccountingFabricatedClients(t *testing.T) {
	c := newCluster(t, 2, nil)
	victim := connect(t, c.brokers[1].Addr, "victim", true)
	victim.subscribe("victim/#", 1) // before the agents: unknown to them
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitLinksUp(1)
	time.Sleep(1500 * time.Millisecond)
	connect(t, c.brokers[1].Addr, "a", true)
	ab := connect(t, c.brokers[1].Addr, "a 1 b", true)
	// "a 1 b 1 c 1 d 1 e" reads as a, a 1 b, a 1 b 1 c and a 1 b 1 c 1 d subscribing.
	ab.subscribe("c 1 d 1 e", 1)
	time.Sleep(4 * time.Second)
	if !c.agent(1).Status().WantAll {
		t.Error("b2's agent claims exact interest while the victim is unknown to it")
	}
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("victim/1", 1, false, "hello")
	victim.waitCount(1, 5*time.Second)
}
