package bridge_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Contract 1: a publish on any broker reaches every matching subscriber on every broker, with
// the QoS a single Mosquitto would give (the lower of publish and subscription QoS).
func TestContract1DeliveryAcrossBrokers(t *testing.T) {
	c := startCluster(t, 3)
	sub := connect(t, c.brokers[1].Addr, "sub-b2", true)
	sub.subscribe("sensors/+/temp", 2)
	sub.subscribe("alerts/#", 1)
	c.waitPeerFilters(1, 2)

	pub := connect(t, c.brokers[0].Addr, "pub-b1", true)
	for q := byte(0); q <= 2; q++ {
		pub.publish("sensors/kitchen/temp", q, false, fmt.Sprintf("t%d", q))
		pub.publish("alerts", q, false, fmt.Sprintf("a%d", q)) // 'alerts/#' matches 'alerts'
		pub.publish("alerts/fire/floor1", q, false, fmt.Sprintf("f%d", q))
		pub.publish("sensors/kitchen/humidity", q, false, "no") // matches nothing
	}
	got := sub.waitCount(9, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	got = sub.messages()
	want := map[string]byte{}
	for q := byte(0); q <= 2; q++ {
		want[fmt.Sprintf("sensors/kitchen/temp t%d", q)] = q
		want[fmt.Sprintf("alerts a%d", q)] = min(q, 1)
		want[fmt.Sprintf("alerts/fire/floor1 f%d", q)] = min(q, 1)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d: %s", len(got), len(want), summary(got))
	}
	for _, m := range got {
		q, ok := want[m.Topic+" "+m.Payload]
		if !ok {
			t.Errorf("unexpected message %s %q", m.Topic, m.Payload)
			continue
		}
		if m.QoS != q {
			t.Errorf("%s %q: QoS %d, want %d", m.Topic, m.Payload, m.QoS, q)
		}
		delete(want, m.Topic+" "+m.Payload)
	}
	c.assertNoWidening()
}

// Contract 2: in a full mesh of N >= 3 brokers, a subscriber gets each message exactly as often
// as on a single broker: once.
func TestContract2ExactlyOnceFullMesh(t *testing.T) {
	for _, n := range []int{3, 4} {
		t.Run(fmt.Sprintf("brokers=%d", n), func(t *testing.T) {
			c := startCluster(t, n)
			subs := make([]*client, n)
			for i := range subs {
				subs[i] = connect(t, c.brokers[i].Addr, fmt.Sprintf("sub-%d", i), true)
				subs[i].subscribe("mesh/#", 1)
			}
			for i := range subs {
				c.waitPeerFilters(i, 1)
			}
			const per = 20
			for i := range subs {
				pub := connect(t, c.brokers[i].Addr, fmt.Sprintf("pub-%d", i), true)
				for k := 0; k < per; k++ {
					pub.publish(fmt.Sprintf("mesh/from%d", i), byte(k%3), false, fmt.Sprint(k))
				}
			}
			total := n * per
			for i, s := range subs {
				s.waitCount(total, 10*time.Second)
				time.Sleep(300 * time.Millisecond) // room for any duplicate to show up
				got := counts(s.messages())
				if len(got) != total {
					t.Errorf("subscriber on b%d: %d distinct messages, want %d", i+1, len(got), total)
				}
				for k, v := range got {
					if v != 1 {
						t.Errorf("subscriber on b%d got %q %d times", i+1, k, v)
					}
				}
			}
		})
	}
}

// Contract 3: an ordinary client subscribed to '#' sees exactly what it would on one broker: no
// relay or control topics, no duplicates.
func TestContract3NoLeaks(t *testing.T) {
	c := startCluster(t, 3)
	var all []*client
	for i := range c.brokers {
		s := connect(t, c.brokers[i].Addr, fmt.Sprintf("all-%d", i), true)
		s.subscribe("#", 2)
		all = append(all, s)
	}
	for i := range c.brokers {
		c.waitPeerFilters(i, 1)
	}
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("plain/topic", 1, false, "x")
	pub.publish("kept", 1, true, "r")
	for i, s := range all {
		got := s.waitCount(2, 5*time.Second)
		time.Sleep(300 * time.Millisecond)
		got = s.messages()
		cnt := counts(got)
		c.assertNoWidening()
		if len(got) != 2 || cnt["plain/topic x"] != 1 || cnt["kept r"] != 1 {
			t.Errorf("'#' subscriber on b%d saw %s, want plain/topic and kept once each", i+1, summary(got))
		}
		for _, m := range got {
			if strings.HasPrefix(m.Topic, "$") || strings.Contains(m.Topic, "forward") {
				t.Errorf("'#' subscriber on b%d saw control or relay topic %q", i+1, m.Topic)
			}
		}
	}
}

// Contract 4: a publish crosses to a broker only when one of its clients has a matching
// subscription; retained publishes are the documented exception.
func TestContract4MinimalTraffic(t *testing.T) {
	c := startCluster(t, 3)
	sub := connect(t, c.brokers[1].Addr, "sub-b2", true)
	sub.subscribe("wanted/+", 1)
	c.waitPeerFilters(1, 1)
	before2, before3 := c.relayed(0, "b2"), c.relayed(0, "b3")

	pub := connect(t, c.brokers[0].Addr, "pub", true)
	for k := 0; k < 50; k++ {
		pub.publish("unwanted/x", 1, false, "no")
		pub.publish("wanted/x", 1, false, "yes")
	}
	sub.waitCount(50, 5*time.Second)
	if d := c.relayed(0, "b2") - before2; d != 50 {
		t.Errorf("relays b1->b2: %d, want exactly the 50 wanted messages", d)
	}
	if d := c.relayed(0, "b3") - before3; d != 0 {
		t.Errorf("relays b1->b3: %d, want 0 (no client of b3 subscribed)", d)
	}

	// After the last unsubscribe nothing crosses any more.
	sub.unsubscribe("wanted/+")
	c.waitPeerFilters(1, 0)
	before2 = c.relayed(0, "b2")
	for k := 0; k < 20; k++ {
		pub.publish("wanted/x", 1, false, "late")
	}
	time.Sleep(300 * time.Millisecond)
	if d := c.relayed(0, "b2") - before2; d != 0 {
		t.Errorf("relays b1->b2 after unsubscribe: %d, want 0", d)
	}
}

// Contract 5: a new subscriber anywhere gets the current retained value, wherever it was
// published; deletions propagate too; a broker that joins late gets the retained state.
func TestContract5Retained(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAgent(0)
	c.startAgent(1)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	waitFor(t, 10*time.Second, "b1 and b2 linked", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if p.Name == "b2" && !p.Up {
				return "b1->b2 down"
			}
		}
		return ""
	})
	pub.publish("state/lamp", 1, true, "on")
	pub.publish("state/door", 1, true, "open")
	pub.publish("state/door", 1, true, "") // deletion

	// A late subscriber on b2 gets the current value, and not the deleted one.
	waitFor(t, 5*time.Second, "retained value on b2", func() string {
		s := connect(t, c.brokers[1].Addr, fmt.Sprintf("late-%d", time.Now().UnixNano()), true)
		defer s.c.Disconnect(10)
		s.subscribe("state/#", 1)
		time.Sleep(100 * time.Millisecond)
		cnt := counts(s.messages())
		if len(cnt) != 1 || cnt["state/lamp on"] != 1 {
			return fmt.Sprintf("b2 subscriber got %v", keys(cnt))
		}
		return ""
	})

	// b3 joins late: its agent starts after the retained publishes, and gets them anyway.
	c.startAgent(2)
	waitFor(t, 10*time.Second, "retained value on late-joining b3", func() string {
		s := connect(t, c.brokers[2].Addr, fmt.Sprintf("late3-%d", time.Now().UnixNano()), true)
		defer s.c.Disconnect(10)
		s.subscribe("state/#", 1)
		time.Sleep(100 * time.Millisecond)
		cnt := counts(s.messages())
		if len(cnt) != 1 || cnt["state/lamp on"] != 1 {
			return fmt.Sprintf("b3 subscriber got %v", keys(cnt))
		}
		return ""
	})
}

// Contract 6: a persistent-session subscriber keeps drawing messages while offline; its broker
// queues them and delivers them when it returns.
func TestContract6PersistentSession(t *testing.T) {
	c := startCluster(t, 3)
	p := connect(t, c.brokers[1].Addr, "persistent-1", false)
	p.subscribe("queue/#", 1)
	c.waitPeerFilters(1, 1)
	p.c.Disconnect(50)
	// The interest must outlive the disconnect.
	time.Sleep(300 * time.Millisecond)
	c.waitPeerFilters(1, 1)

	pub := connect(t, c.brokers[0].Addr, "pub", true)
	for k := 0; k < 10; k++ {
		pub.publish("queue/jobs", 1, false, fmt.Sprint(k))
	}
	time.Sleep(300 * time.Millisecond)
	back := connect(t, c.brokers[1].Addr, "persistent-1", false)
	got := back.waitCount(10, 5*time.Second)
	cnt := counts(got)
	for k := 0; k < 10; k++ {
		if cnt[fmt.Sprintf("queue/jobs %d", k)] != 1 {
			t.Errorf("message %d arrived %d times while the client was offline", k, cnt[fmt.Sprintf("queue/jobs %d", k)])
		}
	}

	// A clean reconnect ends the session, and with it the interest.
	back.c.Disconnect(50)
	clean := connect(t, c.brokers[1].Addr, "persistent-1", true)
	c.waitPeerFilters(1, 0)
	clean.c.Disconnect(50)
}

// Contract 1 for '$' topics: '#' never matches them, so agents subscribe to the '$' filters their
// peers' clients hold; a '#' subscriber still sees none of them (contract 3).
func TestContract1DollarTopics(t *testing.T) {
	c := startCluster(t, 3)
	sub := connect(t, c.brokers[1].Addr, "dollar-sub", true)
	sub.subscribe("$app/+/x", 1)
	all := connect(t, c.brokers[1].Addr, "hash-sub", true)
	all.subscribe("#", 1)
	c.waitPeerFilters(1, 2)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	waitFor(t, 5*time.Second, "a $ publish on b1 to reach b2", func() string {
		pub.publish("$app/1/x", 1, false, "d")
		if len(sub.messages()) == 0 {
			return "not yet"
		}
		return ""
	})
	time.Sleep(300 * time.Millisecond)
	first := sub.messages()[0]
	if first.Topic != "$app/1/x" {
		t.Fatalf("got %s", summary(sub.messages()))
	}
	// Once it flows, one publish arrives exactly once.
	before := len(sub.messages())
	pub.publish("$app/2/x", 1, false, "once")
	time.Sleep(300 * time.Millisecond)
	if got := sub.messages()[before:]; len(got) != 1 || got[0].Payload != "once" {
		t.Errorf("after one publish: %s", summary(got))
	}
	for _, m := range all.messages() {
		if strings.HasPrefix(m.Topic, "$") {
			t.Errorf("'#' subscriber saw %q", m.Topic)
		}
	}
}
