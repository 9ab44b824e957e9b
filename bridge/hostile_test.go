package bridge_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"mosquitto-ha/bridge"
)

func withSecret(_ int, o *bridge.Options) { o.ClusterSecret = []byte("cluster secret for tests") }

func startSecretCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := newCluster(t, n, withSecret)
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	return c
}

// Contract 9: with a cluster secret, relays and interest messages that any client can publish to
// `$` topics are refused unless signed; signed relays still flow.
func TestContract9ForgedRelayAndInterestRefused(t *testing.T) {
	c := startSecretCluster(t, 3)
	victim := connect(t, c.brokers[1].Addr, "victim", true)
	victim.subscribe("bank/#", 1)
	c.waitPeerFilters(1, 1)

	// A signed relay still arrives.
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("bank/legit", 1, false, "ok")
	victim.waitCount(1, 5*time.Second)

	// Any client of b2 forges a relay addressed to b2's agent, plain and retained.
	evil := connect(t, c.brokers[1].Addr, "evil", true)
	evil.publish("$forward/bank/transfer", 1, false, "forged")
	evil.publish("$forward-r/bank/balance", 1, false, "forged")
	// ...and a snapshot for b1's interest on b1's broker claiming '#', to draw all of b2's traffic.
	evil1 := connect(t, c.brokers[0].Addr, "evil1", true)
	evil1.publish("$HA/t/b1/interest/delta", 1, false, "MHA1D\x00\x01\x01\x00")
	waitFor(t, 5*time.Second, "forged relays counted on b2", func() string {
		if s := c.agent(1).Status(); s.Forged != 2 {
			return fmt.Sprintf("forged=%d", s.Forged)
		}
		return ""
	})
	waitFor(t, 5*time.Second, "forged delta counted by b1's peers", func() string {
		for _, p := range c.agent(1).Status().Peers {
			if p.Name == "b1" && p.Forged == 0 {
				return "b2 has not refused the forged delta from b1's broker"
			}
		}
		return ""
	})
	time.Sleep(200 * time.Millisecond)
	for _, m := range victim.messages() {
		if m.Payload == "forged" {
			t.Errorf("forged relay delivered: %s", m.Topic)
		}
	}
	// A forged retained snapshot on b2's own interest topic is replaced by the agent at once.
	evil.publish("$HA/t/b2/interest", 1, true, "garbage")
	waitFor(t, 5*time.Second, "b2 to restore its snapshot", func() string {
		if c.agent(1).Status().ForgedInterest == 0 {
			return "not noticed"
		}
		return ""
	})
	c.waitPeerFilters(1, 1)
	pub.publish("bank/after", 1, false, "still-ok")
	got := victim.waitCount(2, 5*time.Second)
	if got[1].Payload != "still-ok" {
		t.Errorf("relays after the attack: %s", summary(got))
	}
}

// Garbage, oversized and flooding interest messages from a peer's broker are refused; the agent
// keeps running, sends that peer everything meanwhile (never less), and recovers.
func TestHostileInterestPayloads(t *testing.T) {
	c := newCluster(t, 3, func(_ int, o *bridge.Options) { o.Limits.MaxInterestBytes = 4096 })
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	sub := connect(t, c.brokers[1].Addr, "sub", true)
	sub.subscribe("data/#", 1)
	c.waitPeerFilters(1, 1)
	refusedBefore := peerRefused(c, 0, "b2")

	evil := connect(t, c.brokers[1].Addr, "evil", true)
	payloads := [][]byte{
		[]byte("not a control message"),
		[]byte("MHA1D"),                              // truncated
		[]byte("MHA1D\x01\x09\x00\xff\xff\x03"),      // absurd count
		[]byte("MHA1D\x01\x09\x00\x01+\x03a\x00b"),   // NUL in a filter
		[]byte("MHA1D\x01\x09\x00\x01+\x02\xff\xfe"), // invalid UTF-8
		bytes.Repeat([]byte("x"), 5000),              // over MaxInterestBytes
	}
	for _, p := range payloads {
		evil.publish("$HA/t/b2/interest/delta", 0, false, string(p))
	}
	for k := 0; k < 500; k++ { // a flood
		evil.publish("$HA/t/b2/interest/delta", 0, false, "flood")
	}
	waitFor(t, 10*time.Second, "every hostile message refused by b1", func() string {
		if n := peerRefused(c, 0, "b2") - refusedBefore; n < uint64(len(payloads)+500) {
			return fmt.Sprintf("%d refused", n)
		}
		return ""
	})
	// Nothing lost: b2's subscriber still gets b1's publishes, during and after.
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("data/x", 1, false, "1")
	sub.waitCount(1, 5*time.Second)
	// And the interest recovers with the next snapshot: exact again.
	c.waitPeerFilters(1, 1)
}

func peerRefused(c *testCluster, i int, name string) uint64 {
	for _, p := range c.agent(i).Status().Peers {
		if p.Name == name {
			return p.Refused
		}
	}
	return 0
}

// Client ids crafted to look like other log lines, or like "<id> <qos> <filter>" splits, never
// cost their owner a message.
func TestHostileClientIDs(t *testing.T) {
	c := startCluster(t, 2)
	ids := []string{
		"evil 1 x",                         // "evil 1 x 1 y" reads two ways
		"x (p2, c0, k60). New client as y", // mimics a connect line
		"Client z disconnected.",           // mimics a disconnect line
		"ünïcödé id",
	}
	var subs []*client
	for i, id := range ids {
		s := connect(t, c.brokers[1].Addr, id, true)
		s.subscribe(fmt.Sprintf("y%d", i), 1)
		subs = append(subs, s)
	}
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	waitFor(t, 5*time.Second, "every crafted id's filter known to b1", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if p.Filters < len(ids) {
				return fmt.Sprintf("%d filters", p.Filters)
			}
		}
		return ""
	})
	for i := range ids {
		pub.publish(fmt.Sprintf("y%d", i), 1, false, "hi")
	}
	for i, s := range subs {
		if got := s.waitCount(1, 5*time.Second); got[0].Topic != fmt.Sprintf("y%d", i) {
			t.Errorf("client %q got %s", ids[i], summary(got))
		}
	}
}
