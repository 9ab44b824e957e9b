package bridge_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

// A subscription takes effect when its broker accepts it, as on one broker: a publish made on
// another broker right after the subscriber's SUBACK reaches it, though the news of the
// subscription reaches that broker's agent a moment later; a publish made 20 ms before the
// subscription does not. The same probe runs on one lone broker, and the cluster must agree.
func TestLateSubscriptionCaughtUp(t *testing.T) {
	const rounds = 30
	probe := func(t *testing.T, subAddr, pubAddr, name string) (late, early int) {
		sub := connect(t, subAddr, "late-sub-"+name, true)
		pub := connect(t, pubAddr, "late-pub-"+name, true)
		for i := 0; i < rounds; i++ {
			pub.publish(fmt.Sprintf("early/%d", i), 1, false, "early")
			time.Sleep(20 * time.Millisecond)
			sub.subscribe(fmt.Sprintf("early/%d", i), 1)
			sub.subscribe(fmt.Sprintf("late/%d", i), 1)
			pub.publish(fmt.Sprintf("late/%d", i), 1, false, "late")
		}
		time.Sleep(time.Second)
		for _, m := range sub.messages() {
			switch {
			case strings.HasPrefix(m.Topic, "late/"):
				late++
			case strings.HasPrefix(m.Topic, "early/"):
				early++
			}
		}
		return late, early
	}
	lone := mosqtest.Start(t, mosqtest.Options{Extra: brokerExtra})
	wantLate, wantEarly := probe(t, lone.Addr, lone.Addr, "lone")
	if wantLate != rounds || wantEarly != 0 {
		t.Fatalf("lone broker: %d of %d publishes after the SUBACK, %d before the subscription; want %d and 0", wantLate, rounds, wantEarly, rounds)
	}
	c := startCluster(t, 2)
	late, early := probe(t, c.brokers[1].Addr, c.brokers[0].Addr, "cluster")
	if late != wantLate || early != wantEarly {
		t.Errorf("cluster: %d of %d publishes after the SUBACK, %d before the subscription; one broker gives %d and %d",
			late, rounds, early, wantLate, wantEarly)
	}
	t.Logf("b1 caught up %d relays for b2's late subscriptions", c.agent(0).Status().CaughtUp)
}

// A delta is stamped (interest wire version 3) only while every peer's status says it reads
// one: an agent of an earlier release would refuse it and relay everything to its sender.
func TestStampedDeltasOnlyForPeersThatReadThem(t *testing.T) {
	c := newCluster(t, 2, nil)
	c.startAgent(0)
	// b2 runs "an old agent": its status says up, without interest_wire.
	old := connect(t, c.brokers[1].Addr, "old-agent", true)
	old.publish("$HA/t/b2/status", 1, true, `{"node":"b2","agent_up":true,"relay_wire":3}`)
	raw := connect(t, c.brokers[0].Addr, "raw", true)
	raw.subscribe("$HA/t/b1/interest/delta", 1)
	sub := connect(t, c.brokers[0].Addr, "sub", true)
	deltaAfter := func(filter string) string {
		t.Helper()
		n := len(raw.messages())
		sub.subscribe(filter, 1)
		var magic string
		waitFor(t, 10*time.Second, "b1's delta adding "+filter, func() string {
			for _, m := range raw.messages()[n:] {
				if strings.Contains(m.Payload, filter) {
					magic = m.Payload[:4]
					return ""
				}
			}
			return "not yet"
		})
		return magic
	}
	time.Sleep(500 * time.Millisecond) // the old agent's status arrives right after the link's subscribe
	if got := deltaAfter("old/peer"); got != "MHA1" {
		t.Errorf("delta for a peer without interest_wire starts %q, want MHA1", got)
	}
	old.publish("$HA/t/b2/status", 1, true, `{"node":"b2","agent_up":true,"relay_wire":3,"interest_wire":3}`)
	time.Sleep(300 * time.Millisecond)
	if got := deltaAfter("new/peer"); got != "MHA3" {
		t.Errorf("delta for a peer with interest_wire 3 starts %q, want MHA3", got)
	}
}
