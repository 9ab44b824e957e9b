package bridge_test

import (
	"fmt"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

const shareFilter = "$share/g/jobs/#"

// shareGroup is the members of one shared subscription, on any brokers.
type shareGroup struct {
	t       *testing.T
	members []*client
	where   []string // broker of each member, for messages
}

func (g *shareGroup) join(addr, broker, id string) {
	g.t.Helper()
	m := connect(g.t, addr, id, true)
	m.subscribe(shareFilter, 1)
	g.members = append(g.members, m)
	g.where = append(g.where, broker)
}

// deliveries counts, per payload that starts with tag, how many members got it, and on which
// brokers.
func (g *shareGroup) deliveries(tag string) (per map[string]int, on map[string][]string) {
	per, on = map[string]int{}, map[string][]string{}
	for i, m := range g.members {
		for _, r := range m.messages() {
			if len(r.Payload) >= len(tag) && r.Payload[:len(tag)] == tag {
				per[r.Payload]++
				on[r.Payload] = append(on[r.Payload], g.where[i])
			}
		}
	}
	return per, on
}

// publishJobs publishes n QoS 1 jobs from a new client on each address and waits until want
// deliveries per job arrived (or 5 s), then 300 ms more for any extra ones.
func (g *shareGroup) publishJobs(pubs map[string]string, n int, tag string, want func(pub string) int) map[string]int {
	g.t.Helper()
	total := 0
	for pub, addr := range pubs {
		p := connect(g.t, addr, fmt.Sprintf("pub-%s-%s", tag, pub), true)
		for i := 0; i < n; i++ {
			p.publish(fmt.Sprintf("jobs/%s/%d", pub, i), 1, false, fmt.Sprintf("%s/%s/%d", tag, pub, i))
		}
		total += n * want(pub)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		per, _ := g.deliveries(tag)
		sum := 0
		for _, k := range per {
			sum += k
		}
		if sum >= total {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	per, _ := g.deliveries(tag)
	return per
}

// sharedExtra sums every agent's count of extra deliveries to shared subscriptions.
func (c *testCluster) sharedExtra() uint64 {
	var n uint64
	for i := range c.agents {
		n += c.agent(i).Status().SharedExtra
	}
	return n
}

// Contract 10: with members of one shared subscription on one, two and three brokers and
// publishers on every broker, each message is delivered to exactly one member, as on one
// Mosquitto (checked against a lone broker with every member on it).
func TestSharedSubscriptionOncePerGroup(t *testing.T) {
	const n = 20
	once := func(string) int { return 1 }

	// The yardstick: one Mosquitto, the same members and publishers.
	lone := mosqtest.Start(t, mosqtest.Options{Extra: brokerExtra})
	lg := &shareGroup{t: t}
	for i := 0; i < 6; i++ {
		lg.join(lone.Addr, "lone", fmt.Sprintf("lone-m%d", i))
	}
	per := lg.publishJobs(map[string]string{"p1": lone.Addr, "p2": lone.Addr, "p3": lone.Addr}, n, "lone", once)
	assertOnce(t, "lone broker", per, 3*n, nil)

	c := startCluster(t, 3)
	pubs := map[string]string{}
	for i, b := range c.brokers {
		pubs[c.names[i]] = b.Addr
	}
	g := &shareGroup{t: t}
	for k := 0; k < 3; k++ {
		// Two members on each broker that has members: Mosquitto itself picks one of them.
		g.join(c.brokers[k].Addr, c.names[k], fmt.Sprintf("m-%s-1", c.names[k]))
		g.join(c.brokers[k].Addr, c.names[k], fmt.Sprintf("m-%s-2", c.names[k]))
		c.waitPeerFilters(k, 1)
		extraBefore := c.sharedExtra()
		tag := fmt.Sprintf("on%d", k+1)
		per := g.publishJobs(pubs, n, tag, once)
		_, on := g.deliveries(tag)
		assertOnce(t, fmt.Sprintf("members on %d broker(s)", k+1), per, 3*n, on)
		if d := c.sharedExtra() - extraBefore; d != 0 {
			t.Errorf("members on %d broker(s): the agents counted %d extra deliveries, want 0", k+1, d)
		}
		// Every broker with members serves some of the jobs published elsewhere: the relay
		// choice spreads, it does not send everything to one broker.
		served := map[string]int{}
		for _, bs := range on {
			for _, b := range bs {
				served[b]++
			}
		}
		for j := 0; j <= k; j++ {
			if served[c.names[j]] == 0 {
				t.Errorf("members on %d broker(s): %s served none of %d jobs: %v", k+1, c.names[j], 3*n, served)
			}
		}
		t.Logf("members on %d broker(s): jobs served per broker %v", k+1, served)
	}
	c.assertNoWidening()
}

func assertOnce(t *testing.T, what string, per map[string]int, want int, on map[string][]string) {
	t.Helper()
	bad := 0
	for p, k := range per {
		if k != 1 {
			bad++
			if bad <= 5 {
				t.Errorf("%s: job %s delivered %d times (on %v), want once", what, p, k, on[p])
			}
		}
	}
	if len(per) != want {
		t.Errorf("%s: %d of %d jobs delivered", what, len(per), want)
	}
}

// Where a message must reach several brokers with members anyway (a plain subscriber there, or
// a retained publish, which goes to every broker), each of those brokers delivers it to one of
// its members: the README states it, and the agents count exactly those extra deliveries.
func TestSharedSubscriptionExtraDeliveriesCounted(t *testing.T) {
	const n = 20
	c := startCluster(t, 3)
	g := &shareGroup{t: t}
	g.join(c.brokers[0].Addr, "b1", "m-b1")
	g.join(c.brokers[2].Addr, "b3", "m-b3")
	plain := connect(t, c.brokers[2].Addr, "plain-b3", true)
	plain.subscribe("jobs/#", 1)
	c.waitPeerFilters(0, 1)
	c.waitPeerFilters(2, 2)

	// Published on b1: served on b1, and it must reach b3 for the plain subscriber, whose
	// broker also delivers it to m-b3: twice. Published on b2: it goes to b3 for the plain
	// subscriber and is served there, once. Published on b3: served there, once.
	want := map[string]int{"b1": 2, "b2": 1, "b3": 1}
	pubs := map[string]string{"b1": c.brokers[0].Addr, "b2": c.brokers[1].Addr, "b3": c.brokers[2].Addr}
	per := g.publishJobs(pubs, n, "x", func(p string) int { return want[p] })
	observed := 0
	for p, k := range per {
		var pub string
		var i int
		fmt.Sscanf(p, "x/%2s/%d", &pub, &i)
		if k != want[pub] {
			t.Errorf("job %s: %d deliveries, want %d", p, k, want[pub])
		}
		observed += k - 1
	}
	if len(per) != 3*n {
		t.Errorf("%d of %d jobs delivered", len(per), 3*n)
	}
	if got := c.sharedExtra(); got != uint64(observed) || observed != n {
		t.Errorf("agents counted %d extra deliveries, observed %d, want %d", got, observed, n)
	}
	split := c.agent(0).Status().SharedSplit
	if len(split) != 1 || split[0].Share != shareFilter || fmt.Sprint(split[0].Peers) != "[b3]" {
		t.Errorf("b1's status does not point at the group split over b1 and b3: %+v", split)
	}

	// A retained publish goes to every broker: once per broker with members.
	before := c.sharedExtra()
	p := connect(t, c.brokers[1].Addr, "pub-retained", true)
	p.publish("jobs/r", 1, true, "ret/1")
	waitFor(t, 5*time.Second, "the retained job on b1 and b3", func() string {
		if per, _ = g.deliveries("ret/"); per["ret/1"] != 2 {
			return fmt.Sprint(per)
		}
		return ""
	})
	if got := c.sharedExtra() - before; got != 1 {
		t.Errorf("retained publish: %d extra deliveries counted, want 1", got)
	}
	p.publish("jobs/r", 1, true, "") // leave no retained message behind
}

// When every member on one broker leaves, nothing more is relayed there for the group, and
// nothing is lost: the members on the other broker get every job. While one of two members
// there is left, that broker keeps its turn.
func TestSharedSubscriptionMembersLeave(t *testing.T) {
	const n = 30
	c := startCluster(t, 3)
	g := &shareGroup{t: t}
	g.join(c.brokers[0].Addr, "b1", "m-b1")
	g.join(c.brokers[2].Addr, "b3", "m-b3-1")
	g.join(c.brokers[2].Addr, "b3", "m-b3-2")
	c.waitPeerFilters(0, 1)
	c.waitPeerFilters(2, 1)
	pubs := map[string]string{"b2": c.brokers[1].Addr}
	once := func(string) int { return 1 }
	assertOnce(t, "members on b1 and b3", g.publishJobs(pubs, n, "both", once), n, nil)

	g.members[1].c.Disconnect(50)      // m-b3-1, a clean session: its subscription ends
	time.Sleep(300 * time.Millisecond) // let b3's Mosquitto end that session before the jobs
	before := c.relayed(1, "b3")
	assertOnce(t, "one of b3's two members left", g.publishJobs(pubs, n, "one", once), n, nil)
	if got := c.relayed(1, "b3") - before; got == 0 {
		t.Errorf("no job relayed to b3 while m-b3-2 is still a member there")
	}

	g.members[2].c.Disconnect(50) // m-b3-2: b3 has no member left
	c.waitPeerFilters(2, 0)
	before = c.relayed(1, "b3")
	left := len(g.members[0].messages())
	assertOnce(t, "after b3's members left", g.publishJobs(pubs, n, "left", once), n, nil)
	if got := c.relayed(1, "b3") - before; got != 0 {
		t.Errorf("%d jobs relayed to b3 after its members left", got)
	}
	if got := len(g.members[0].messages()) - left; got != n {
		t.Errorf("m-b1 got %d of the %d jobs published after b3's members left", got, n)
	}
}
