// Issue 10, findings 6, 7 and 8: nobody without the cluster secret writes the cluster's control
// topics through a relay, forges a status, or makes an agent flood its peers with snapshots.
// Each test reproduced its finding against real brokers before the change that added it.

package bridge_test

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

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
