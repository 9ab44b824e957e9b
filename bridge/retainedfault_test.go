package bridge_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"mosquitto-ha/bridge"
	"mosquitto-ha/sysparse/mosqtest"
)

// peerUp reports "" when agent i's link to peer is in state up.
func (c *testCluster) peerState(i int, peer string, up bool) string {
	for _, p := range c.agent(i).Status().Peers {
		if p.Name == peer && p.Up != up {
			return fmt.Sprintf("%s->%s up=%v", c.names[i], peer, p.Up)
		}
	}
	return ""
}

// Contract 5: a partition between b1 and b2 with writes and a deletion on both sides, and b1's
// agent restarted during it (its relay buffer lost: only the register and its broker remember
// b1's writes): after the link heals, all three brokers hold the last write of every topic.
func TestRetainedPartitionHeals(t *testing.T) {
	var px12, px21 *tcpProxy
	c := newCluster(t, 3, nil)
	px12 = newProxy(t, c.brokers[1].Addr) // b1's agent -> b2's broker
	px21 = newProxy(t, c.brokers[0].Addr) // b2's agent -> b1's broker
	c.opts = func(i int, o *bridge.Options) {
		for k := range o.Peers {
			switch {
			case i == 0 && o.Peers[k].Name == "b2":
				o.Peers[k].Address = px12.addr
			case i == 1 && o.Peers[k].Name == "b1":
				o.Peers[k].Address = px21.addr
			}
		}
	}
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	p1 := connect(t, c.brokers[0].Addr, "p1", true)
	p2 := connect(t, c.brokers[1].Addr, "p2", true)
	p1.publish("part/z", 1, true, "z-before")
	p1.publish("part/w", 1, true, "w-before")
	waitFor(t, 5*time.Second, "part/z everywhere", func() string {
		for i, b := range c.brokers {
			if got := retainedOn(t, b.Addr, "part/#"); got["part/z"] != "z-before" || got["part/w"] != "w-before" {
				return fmt.Sprintf("b%d holds %v", i+1, got)
			}
		}
		return ""
	})

	px12.cut()
	px21.cut()
	waitFor(t, 10*time.Second, "b1 and b2 apart", func() string {
		return c.peerState(0, "b2", false) + c.peerState(1, "b1", false)
	})
	p1.publish("part/x", 1, true, "x-b1-older")
	p2.publish("part/y", 1, true, "y-b2-older")
	p2.publish("part/w", 0, true, "w-b2-older")
	time.Sleep(20 * time.Millisecond)
	p2.publish("part/x", 1, true, "x-b2-last")
	p1.publish("part/y", 1, true, "y-b1-last")
	p1.publish("part/w", 1, true, "") // deleted last, on b1
	p2.publish("part/z", 1, true, "z-b2-last")
	// b1's agent restarts while apart: the relays it kept for b2 are gone.
	c.stopAgent(0)
	c.startAgent(0)
	time.Sleep(500 * time.Millisecond)
	px12.heal()
	px21.heal()

	want := map[string]string{"part/x": "x-b2-last", "part/y": "y-b1-last", "part/z": "z-b2-last"}
	waitFor(t, 20*time.Second, "every broker to hold the last writes", func() string {
		for i, b := range c.brokers {
			got := retainedOn(t, b.Addr, "part/#")
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Sprintf("b%d holds %v, want %v", i+1, got, want)
			}
		}
		return ""
	})
}

// helperEnv carries the options of an agent run as a separate process by
// TestRetainedHelperAgentProcess, so a test can kill it with SIGKILL.
const helperEnv = "MHA_TEST_HELPER_AGENT"

type helperOptions struct {
	Cluster, Node, Local, StatePath string
	Peers                           []bridge.PeerAddr
}

// TestRetainedHelperAgentProcess is not a test: run with helperEnv set (by startAgentProcess),
// it runs one agent until killed.
func TestRetainedHelperAgentProcess(t *testing.T) {
	raw := os.Getenv(helperEnv)
	if raw == "" {
		return
	}
	var o helperOptions
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		t.Fatal(err)
	}
	a, err := bridge.New(bridge.Options{Cluster: o.Cluster, Node: o.Node, Local: o.Local, StatePath: o.StatePath,
		Peers: o.Peers, Keepalive: 2 * time.Second, SnapshotInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Fatal(a.Run(context.Background()))
}

// startAgentProcess runs agent i of c as a separate process (this test binary, re-executed).
func startAgentProcess(t *testing.T, c *testCluster, i int) *mosqtest.Proc {
	t.Helper()
	o := c.options(i)
	b, _ := json.Marshal(helperOptions{Cluster: o.Cluster, Node: o.Node, Local: o.Local, StatePath: o.StatePath, Peers: o.Peers})
	cmd := exec.Command(os.Args[0], "-test.run=^TestRetainedHelperAgentProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	return mosqtest.StartProc(t, cmd)
}

// forgedStampedRelay is a relay batch from node carrying one retained write to topic with the
// given stamp (wire format version 2), as a peer agent would send it.
func stampedBatch(topic, payload string, stamp uint64) []byte {
	b := []byte("MHB2")
	b = binary.AppendUvarint(b, 0)                  // epoch
	b = binary.AppendUvarint(b, 1)                  // count
	b = append(b, 1|4|16)                           // QoS 1, retain, has stamp
	b = binary.AppendUvarint(b, 0)                  // mid
	b = binary.BigEndian.AppendUint64(b, stamp)     // stamp
	b = binary.AppendUvarint(b, uint64(len(topic))) // topic
	b = append(b, topic...)
	b = binary.AppendUvarint(b, uint64(len(payload)))
	return append(b, payload...)
}

func stampAt(t time.Time) uint64 { return uint64(t.UnixMilli()) << 16 }

// Contract 5 through a crash: b2's agent is killed with SIGKILL after a newer write, and
// restarted; a relay of an older write arriving afterwards does not replace the newer value,
// because the register survived in the state directory. A newer relay still does (the check
// can fail), and without the register file the older relay would win.
func TestRetainedRegisterSurvivesKill9(t *testing.T) {
	testRegisterSurvivesKill9(t, false)
}

// testRegisterSurvivesKill9 runs b2's agent alone (b1's agent never runs, so nothing but b2's
// own register can refuse the older relay); lose removes the register file at the kill, to
// show that the test fails without it.
func testRegisterSurvivesKill9(t *testing.T, lose bool) {
	c := newCluster(t, 2, nil)
	agent2 := startAgentProcess(t, c, 1)
	p2 := connect(t, c.brokers[1].Addr, "p2", true)
	regFile := c.options(1).StatePath + ".retained"
	// A write, stamped: a value the broker sent while the agent's new '#' subscription brought
	// the stored retained messages (until its flood marker came) is recorded as of unknown age,
	// which any relay beats.
	waitFor(t, 15*time.Second, "b2's agent to record a local write", func() string {
		p2.publish("cfg/k", 1, true, "newer")
		b, _ := os.ReadFile(regFile)
		last := "" // the file is appended to: the last record of the topic stands
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `"t":"cfg/k","s":`) {
				last = l
			}
		}
		if last == "" || strings.Contains(last, `"t":"cfg/k","s":1,`) {
			return "no stamped record in " + regFile + ": " + string(b)
		}
		return ""
	})
	time.Sleep(300 * time.Millisecond) // every copy of the write handled: none redelivered later
	agent2.Kill()
	if lose {
		os.Remove(regFile)
	}
	agent2 = startAgentProcess(t, c, 1)
	defer agent2.Stop()

	waitFor(t, 10*time.Second, "the restarted agent connected", func() string {
		if !strings.Contains(agent2.Out.String(), "local broker connected") {
			return "not yet"
		}
		return ""
	})
	inject := connect(t, c.brokers[1].Addr, "inject", true)
	batchTopic := "$forward-b/b1"
	inject.publish(batchTopic, 1, false, string(stampedBatch("cfg/k", "older", stampAt(time.Now().Add(-time.Minute)))))
	// A relay to another topic behind it: once it is applied, the agent has handled the first.
	inject.publish(batchTopic, 1, false, string(stampedBatch("cfg/probe", "p", stampAt(time.Now()))))
	waitFor(t, 5*time.Second, "the relays handled", func() string {
		if got := retainedOn(t, c.brokers[1].Addr, "cfg/#"); got["cfg/probe"] != "p" {
			return fmt.Sprint(got)
		}
		return ""
	})
	if got := retainedOn(t, c.brokers[1].Addr, "cfg/#"); got["cfg/k"] != "newer" {
		t.Fatalf("after a kill -9 and an older relay, b2 holds %v, want newer", got)
	}
	inject.publish(batchTopic, 1, false, string(stampedBatch("cfg/k", "newest", stampAt(time.Now()))))
	waitFor(t, 5*time.Second, "a newer relay applied", func() string {
		if got := retainedOn(t, c.brokers[1].Addr, "cfg/#"); got["cfg/k"] != "newest" {
			return fmt.Sprint(got)
		}
		return ""
	})
}

// Issue 10 finding 10: a flapping link does not make back-to-back full reads of the retained
// set, and a push holds no copy of it. b1's broker holds 40 MB of retained values; the link
// from b1's agent to b2's broker flaps ten times in five seconds: b1 starts at most one push
// per retainedPushMinInterval (2 s) or four times the last push's duration, the coalesced push
// after the flapping still runs, and the live heap of this process (both agents) grows by less
// than the retained set meanwhile: by what the windows hold (the push waits past 4 MiB queued,
// 16 batches of 256 KiB in flight, the receiver's republish windows), whatever the set's size.
func TestRetainedPushFlappingLinkBounded(t *testing.T) {
	const n, size = 2500, 16 << 10
	c := newCluster(t, 2, nil)
	px := newProxy(t, c.brokers[1].Addr)
	c.opts = func(i int, o *bridge.Options) {
		if i == 0 {
			o.Peers[0].Address = px.addr
		}
	}
	pub := connect(t, c.brokers[0].Addr, "filler", true)
	payload := strings.Repeat("x", size)
	for k := 0; k < n; k++ {
		pub.c.Publish(fmt.Sprintf("big/%d", k), 1, true, payload)
	}
	pub.publish("big/last", 1, true, "end")
	c.startAgent(0)
	c.startAgent(1)
	settled := func() string {
		st := c.agent(0).Status()
		if st.Retained.Pushes == 0 || st.Retained.Pushed%(n+1) != 0 || st.Peers[0].Buffered != 0 {
			return fmt.Sprintf("pushes %d, pushed %d, buffered %d", st.Retained.Pushes, st.Retained.Pushed, st.Peers[0].Buffered)
		}
		return ""
	}
	waitFor(t, 60*time.Second, "the first push to b2", settled)
	var was uint64
	waitFor(t, 30*time.Second, "b2 done republishing", func() string {
		now := c.agent(1).Status().Republished
		defer func() { was = now }()
		if now != was {
			time.Sleep(300 * time.Millisecond)
			return fmt.Sprintf("republished %d", now)
		}
		return ""
	})
	live := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	time.Sleep(500 * time.Millisecond)
	base := live()
	peak := base
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			peak = max(peak, live())
		}
	}()
	first := c.agent(0).Status().Retained
	start := time.Now()
	for k := 0; k < 10; k++ {
		px.cut()
		time.Sleep(250 * time.Millisecond)
		px.heal()
		time.Sleep(250 * time.Millisecond)
	}
	// The requests made while flapping are served by one push once the interval allows.
	waitFor(t, 60*time.Second, "the coalesced push", func() string {
		if c.agent(0).Status().Retained.Pushes == first.Pushes {
			return "none yet"
		}
		return settled()
	})
	close(stop)
	<-sampled
	window := time.Since(start)
	pushes := c.agent(0).Status().Retained.Pushes - first.Pushes
	t.Logf("10 link-ups, then %s until the push after them was done: %d pushes started; live heap %d MiB before, peak %d MiB (retained set %d MiB)",
		window.Round(time.Millisecond), pushes, base>>20, peak>>20, n*size>>20)
	if limit := uint64(window/(2*time.Second)) + 1; pushes > limit {
		t.Errorf("%d pushes in %s, want at most %d", pushes, window, limit)
	}
	// The pull this replaces held two copies of the set per link-up (the local broker's and the
	// peer's), one per concurrent pull.
	if grew := int64(peak) - int64(base); grew >= n*size {
		t.Errorf("live heap grew by %d MiB during the pushes, the size of the retained set (%d MiB)", grew>>20, n*size>>20)
	}
}

// Contract 5 after a broker crash: b2's broker is killed with SIGKILL and restarts from its
// last autosave, which may hold the agent's session but not the latest retained values; when
// it is back, b1's push restores them, although b2's register already holds the same writes: a
// broker the agent reconnected to may have lost what the register says it holds.
func TestRetainedBrokerKill9Restored(t *testing.T) {
	c := startCluster(t, 2)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("keep/a", 1, true, "A")
	pub.publish("keep/b", 0, true, "B")
	want := map[string]string{"keep/a": "A", "keep/b": "B"}
	waitFor(t, 5*time.Second, "both values on b2", func() string {
		if got := retainedOn(t, c.brokers[1].Addr, "keep/#"); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Sprint(got)
		}
		return ""
	})
	c.brokers[1].Kill()
	c.brokers[1].StartAgain()
	if got := retainedOn(t, c.brokers[1].Addr, "keep/#"); len(got) != 0 {
		t.Logf("b2 kept %v through kill -9 (saved before): this run shows nothing", got)
	}
	waitFor(t, 15*time.Second, "b2 restored from b1", func() string {
		if got := retainedOn(t, c.brokers[1].Addr, "keep/#"); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Sprint(got)
		}
		return ""
	})
}

// Contract 5 for a broker that holds a value its agent never saw written: b1's broker stores
// "stale" while its agent is down and has lost its session there (as after a restart from an
// old autosave, or when a node with old data joins). When the agent starts, the broker sends
// every stored value on the new subscription; none is a write: not relayed, and older than the
// write b2 made and b1's agent had recorded, which b2's push puts back on b1.
func TestRetainedStoredValueOnNewSessionDoesNotWin(t *testing.T) {
	c := startCluster(t, 2)
	p2 := connect(t, c.brokers[1].Addr, "p2", true)
	p2.publish("cfg/mode", 1, true, "recorded")
	waitFor(t, 5*time.Second, "the value on b1", func() string {
		if got := retainedOn(t, c.brokers[0].Addr, "cfg/#"); got["cfg/mode"] != "recorded" {
			return fmt.Sprint(got)
		}
		return ""
	})
	live := connect(t, c.brokers[1].Addr, "live-b2", true)
	live.subscribe("cfg/#", 1)
	live.waitCount(1, 5*time.Second)

	c.stopAgent(0)
	// The agent's session on b1 is gone: a clean-session CONNECT with its id discards it.
	gone := connect(t, c.brokers[0].Addr, "mha-t-b1-local", true)
	gone.c.Disconnect(50)
	p1 := connect(t, c.brokers[0].Addr, "p1", true)
	p1.publish("cfg/mode", 1, true, "stale")
	c.startAgent(0)

	want := map[string]string{"cfg/mode": "recorded"}
	waitFor(t, 15*time.Second, "both brokers back on the recorded write", func() string {
		for i, b := range c.brokers {
			if got := retainedOn(t, b.Addr, "cfg/#"); fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Sprintf("b%d holds %v", i+1, got)
			}
		}
		return ""
	})
	for _, m := range live.messages() {
		if m.Payload == "stale" {
			t.Errorf("a live subscriber on b2 got the stored value b1's agent never saw written")
		}
	}
	if st := c.agent(0).Status().Retained; st.Stored == 0 {
		t.Errorf("b1's agent counted no stored values on its new session: %+v", st)
	}
}

// Contract 5 for values no agent saw written (an existing install joining the cluster): b1 and
// b2 hold different values for one topic before their agents start; afterwards both hold the
// same one, chosen the same way on both (the value hash breaks the tie of two unknown stamps).
func TestRetainedPreexistingValuesConverge(t *testing.T) {
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			c := newCluster(t, 2, nil)
			for i, b := range c.brokers {
				p := connect(t, b.Addr, fmt.Sprintf("old-%d", i), true)
				p.publish("old/cfg", 1, true, fmt.Sprintf("from-b%d-%d", i+1, round))
				p.publish(fmt.Sprintf("old/only-b%d", i+1), 1, true, "x")
			}
			c.startAgent(0)
			c.startAgent(1)
			waitFor(t, 15*time.Second, "both brokers to agree", func() string {
				a := retainedOn(t, c.brokers[0].Addr, "old/#")
				b := retainedOn(t, c.brokers[1].Addr, "old/#")
				if fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 3 {
					return fmt.Sprintf("b1 %v, b2 %v", a, b)
				}
				return ""
			})
		})
	}
}

// The skew bound: a retained write stamped more than 30 s ahead of this node's clock is refused
// (counted), and does not drag this node's clock into the future; one within the bound is
// applied.
func TestRetainedFutureStampRefused(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.startAgent(0)
	c.waitExact(0, "b1 exact")
	inject := connect(t, c.brokers[0].Addr, "inject", true)
	inject.publish("$forward-b/b9", 1, false, string(stampedBatch("clock/x", "future", stampAt(time.Now().Add(time.Hour)))))
	inject.publish("$forward-b/b9", 1, false, string(stampedBatch("clock/y", "near", stampAt(time.Now().Add(10*time.Second)))))
	waitFor(t, 5*time.Second, "the near write applied", func() string {
		if got := retainedOn(t, c.brokers[0].Addr, "clock/#"); fmt.Sprint(got) != "map[clock/y:near]" {
			return fmt.Sprint(got)
		}
		return ""
	})
	if st := c.agent(0).Status().Retained; st.Skewed != 1 {
		t.Errorf("skewed %d, want 1: %+v", st.Skewed, st)
	}
	// A local write now is stamped after the accepted near-future write, not after the refused one.
	p := connect(t, c.brokers[0].Addr, "p", true)
	p.publish("clock/z", 1, true, "local")
	waitFor(t, 5*time.Second, "the local write recorded", func() string {
		if _, _, ok := c.agent(0).RetainedStamp("clock/z"); !ok {
			return "not yet"
		}
		return ""
	})
	sz, _, _ := c.agent(0).RetainedStamp("clock/z")
	sy, _, _ := c.agent(0).RetainedStamp("clock/y")
	if sz <= sy || sz >= stampAt(time.Now().Add(time.Hour/2)) {
		t.Errorf("local stamp %x: want after the near write %x and far from the refused one", sz, sy)
	}
}

// Contract 5 past the in-flight window: b1's broker stores 100 old QoS 1 values (more than
// Mosquitto's 20 in flight) while its agent has lost its session; the stored values beyond the
// window reach the agent after its SUBACK and must still not count as writes: afterwards both
// brokers hold b2's newer values.
func TestRetainedStoredFloodPastWindowDoesNotWin(t *testing.T) {
	const n = 100
	c := startCluster(t, 2)
	p2 := connect(t, c.brokers[1].Addr, "p2", true)
	want := map[string]string{}
	for i := 0; i < n; i++ {
		topic := fmt.Sprintf("flood/%03d", i)
		p2.publish(topic, 1, true, "new")
		want[topic] = "new"
	}
	waitFor(t, 10*time.Second, "the new values on b1", func() string {
		if got := retainedOn(t, c.brokers[0].Addr, "flood/#"); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Sprintf("%d of %d", len(got), n)
		}
		return ""
	})
	c.stopAgent(0)
	gone := connect(t, c.brokers[0].Addr, "mha-t-b1-local", true)
	gone.c.Disconnect(50)
	p1 := connect(t, c.brokers[0].Addr, "p1", true)
	for topic := range want {
		p1.publish(topic, 1, true, "old")
	}
	p1.c.Disconnect(50)
	c.startAgent(0)
	time.Sleep(3 * time.Second) // any stored value taken for a write has been relayed by now
	waitFor(t, 15*time.Second, "both brokers on the newer values", func() string {
		for i, b := range c.brokers {
			got := retainedOn(t, b.Addr, "flood/#")
			old := 0
			for _, v := range got {
				if v != "new" {
					old++
				}
			}
			if old > 0 || len(got) != n {
				return fmt.Sprintf("b%d holds %d topics, %d not the newer value", i+1, len(got), old)
			}
		}
		return ""
	})
}

// A local reconnection to the same broker process keeps the register's generation: a stamped
// retained relay delivered again after the agent's local link was cut (here: the same relay
// injected again while the agent reconnects) is equal to what the broker holds and is not
// republished a second time; a live subscriber sees the value once.
func TestRetainedRelayOnceAcrossLocalReconnect(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.startAgent(0)
	c.waitExact(0, "b1 exact")
	addr := c.brokers[0].Addr
	live := connect(t, addr, "live", true)
	live.subscribe("dup/#", 2)
	inject := connect(t, addr, "inject", true)
	batch := string(stampedBatch("dup/x", "v", stampAt(time.Now())))
	inject.publish("$forward-b/b9", 1, false, batch)
	live.waitCount(1, 5*time.Second)

	// The session stays: a CONNECT with the agent's id and clean session 0 takes the connection
	// over, and the agent reconnects to the same broker process with its session present.
	kick := connect(t, addr, "mha-t-b1-local", false)
	kick.c.Disconnect(50)
	inject.publish("$forward-b/b9", 1, false, batch)
	inject.publish("$forward-b/b9", 1, false, string(stampedBatch("dup/y", "end", stampAt(time.Now()))))
	live.waitCount(2, 15*time.Second)
	time.Sleep(500 * time.Millisecond)
	var got []string
	for _, m := range live.messages() {
		got = append(got, m.Topic+"="+m.Payload)
	}
	if fmt.Sprint(got) != "[dup/x=v dup/y=end]" {
		t.Errorf("live subscriber saw %v, want [dup/x=v dup/y=end]: the relay delivered again was republished again", got)
	}
}
