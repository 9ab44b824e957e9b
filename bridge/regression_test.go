package bridge_test

import (
	"fmt"
	"testing"
	"time"
)

// These tests come from a review of the agent; each reproduced a contract violation before its
// fix (see the commit that adds them).

// Contract 7: after its broker restarts, an agent wants everything, and its peers honour that.
func TestRegressionBrokerRestartWantAllReachesPeers(t *testing.T) {
	c := startCluster(t, 2)
	c.brokers[1].Stop()
	time.Sleep(300 * time.Millisecond)
	c.brokers[1].StartAgain()
	bad, sawWantAll := 0, false
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		s := c.agent(1).Status()
		if s.WantAll {
			sawWantAll = true
			// Give the delta a moment to cross before judging the peer.
			time.Sleep(100 * time.Millisecond)
			if c.agent(1).Status().WantAll && !c.agent(0).PeerWants("b2", "zzz/unrelated") {
				bad++
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !sawWantAll {
		t.Fatal("b2's agent never wanted everything after its broker restarted")
	}
	if bad > 0 {
		t.Errorf("%d samples where b2 wanted everything but b1 would not relay to it", bad)
	}
	if f := c.agent(1).Status().ForgedInterest; f != 0 {
		t.Errorf("b2 took its own retained interest messages for forgeries: %d", f)
	}
}

// Contract 6/7: a persistent session that predates the agent resumes without its subscriptions
// being logged; the agent keeps wanting everything, so it still gets its messages.
func TestRegressionPersistentClientPredatingAgent(t *testing.T) {
	c := newCluster(t, 2, nil)
	p := connect(t, c.brokers[1].Addr, "persist", false)
	p.subscribe("early/#", 1)
	p.c.Disconnect(50)
	for i := range c.brokers {
		c.startAgent(i)
	}
	time.Sleep(time.Second)
	p2 := connect(t, c.brokers[1].Addr, "persist", false) // session present: nothing logged
	time.Sleep(3 * time.Second)                           // several $SYS rounds
	if !c.agent(1).Status().WantAll {
		t.Fatal("b2's agent claims exact interest while a resumed session's subscriptions are unknown")
	}
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("early/x", 1, false, "hello")
	p2.waitCount(1, 5*time.Second)
}

// Contract 7: a client restored from the state file that left while the agent was away must not
// mask a new client whose subscription the agent never saw.
func TestRegressionRestoredGhostDoesNotMaskNewClient(t *testing.T) {
	c := startCluster(t, 2)
	a := connect(t, c.brokers[1].Addr, "A", true)
	a.subscribe("a/#", 1)
	c.waitPeerFilters(1, 1)
	c.stopAgent(1)
	a.c.Disconnect(50)
	b := connect(t, c.brokers[1].Addr, "B", true)
	b.subscribe("b/#", 1) // never logged to an agent
	c.startAgent(1)
	time.Sleep(3 * time.Second)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("b/x", 1, false, "hello")
	b.waitCount(1, 5*time.Second)
}

// Contract 7/8: while a peer's agent is down, nobody tells what its clients want: they get
// everything, queued in the agent's persistent session and delivered when it returns.
func TestRegressionPeerAgentDownGetsEverything(t *testing.T) {
	c := startCluster(t, 2)
	c.stopAgent(1)
	s := connect(t, c.brokers[1].Addr, "newsub", true)
	s.subscribe("new/#", 1)
	waitFor(t, 5*time.Second, "b1 to relay everything to b2 while b2's agent is down", func() string {
		if !c.agent(0).PeerWants("b2", "new/x") {
			return "b1 would not relay new/x"
		}
		return ""
	})
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("new/x", 1, false, "during-downtime")
	time.Sleep(500 * time.Millisecond)
	c.startAgent(1)
	if got := s.waitCount(1, 10*time.Second); got[0].Payload != "during-downtime" {
		t.Errorf("got %s", summary(got))
	}
}

// Contract 2/5: pulling a peer's retained messages on link-up republishes only what differs, so
// live subscribers get no copy of an unchanged retained value.
func TestRegressionPullDoesNotDuplicate(t *testing.T) {
	c := startCluster(t, 3)
	pub := connect(t, c.brokers[1].Addr, "pub", true)
	pub.publish("cfg", 1, true, "v1")
	time.Sleep(time.Second)
	s := connect(t, c.brokers[0].Addr, "live", true)
	s.subscribe("cfg", 1)
	s.waitCount(1, 5*time.Second) // the retained value on subscribing
	c.stopAgent(0)
	c.startAgent(0)
	// The restarted agent relays everything until it has seen "live" again (it cannot be sure
	// the client it restored is still there); its links and pulls are what matter here.
	waitFor(t, 10*time.Second, "b1's links up", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if !p.Up {
				return p.Name + " down"
			}
		}
		return ""
	})
	time.Sleep(2 * time.Second)
	if got := s.messages(); len(got) != 1 {
		t.Errorf("live subscriber got %d copies of an unchanged retained value: %s", len(got), summary(got))
	}
}

// Contract 5: a retained value published while a peer's broker was down is not reverted by that
// peer's older copy when the link comes back.
func TestRegressionPullKeepsNewerRetained(t *testing.T) {
	c := startCluster(t, 2)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("cfg", 1, true, "v1")
	waitFor(t, 5*time.Second, "v1 on b2", func() string {
		s := connect(t, c.brokers[1].Addr, fmt.Sprintf("r-%d", time.Now().UnixNano()), true)
		defer s.c.Disconnect(10)
		s.subscribe("cfg", 1)
		time.Sleep(100 * time.Millisecond)
		if m := s.messages(); len(m) != 1 || m[0].Payload != "v1" {
			return "not yet"
		}
		return ""
	})
	c.brokers[1].Stop()
	time.Sleep(500 * time.Millisecond)
	pub.publish("cfg", 0, true, "v2") // QoS 0: kept for the peer all the same (retained)
	c.brokers[1].StartAgain()
	time.Sleep(4 * time.Second)
	for i, b := range c.brokers {
		s := connect(t, b.Addr, fmt.Sprintf("late-%d", i), true)
		s.subscribe("cfg", 1)
		got := s.waitCount(1, 5*time.Second)
		if got[0].Payload != "v2" {
			t.Errorf("b%d holds retained %q, want the newer v2", i+1, got[0].Payload)
		}
	}
}
