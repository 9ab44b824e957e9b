package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/bridge"
	"mosquitto-ha/sysparse/mosqtest"
)

// Contract 2 under faults (issue 11): a 10,000-message stream, as fast as the publisher can,
// from b1 to a persistent subscriber on b2, while the sending agent is killed -9 and restarted
// 1 s later, or the receiving agent is, or the link between b1's agent and b2's broker is cut.
// The agents run as separate processes (this test binary, see TestHelperAgentProcess) so that
// kill -9 is a real one. QoS 2 must arrive exactly once; QoS 1 loses nothing and its duplicates
// are reported.
//
// MHA_EXACTLY_ONCE_RUNS sets the runs per case (default 1, for CI: about 5-10 s per run, 6
// cases). By hand, 10 runs per case on a 2-core machine shared with other jobs (runs with
// duplicates, duplicates in all; lost messages):
//
//	                    before (wire v1, no dedupe)      after (two series for every case:
//	                                                      the same figures but this one)
//	sender-kill   QoS 2  9/10, 108                        0/10, 0
//	sender-kill   QoS 1 10/10, 168                        0/10, 0
//	receiver-kill QoS 2 10/10, 127; 4 runs lost 1-6       0/10, 0
//	receiver-kill QoS 1  9/10, 235 (max 119 a run)        7/10, 208 and 9/10, 298 in two
//	                                                      series (max 92 a run: the QoS 1
//	                                                      republishes the broker took before
//	                                                      the kill, unacknowledged, at most
//	                                                      republishWindowQoS1)
//	link-cut      QoS 2  6/10, 45                         0/10, 0
//	link-cut      QoS 1  8/10, 103                        0/10, 0
//
// Every run delivered all 10,000 within the wait: the stall of issue 11 (messages that did not
// arrive until the next agent restart) did not occur. Wills (TestWillOnceAcrossBrokerRestart,
// 5 runs each): before, twice on both subscribers in 4 of 5 runs; after, once in 5 of 5.
func TestExactlyOnceUnderFaults(t *testing.T) {
	runs := 1
	if s := os.Getenv("MHA_EXACTLY_ONCE_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("MHA_EXACTLY_ONCE_RUNS=%q: want a positive number", s)
		}
		runs = n
	}
	for _, fault := range []string{"sender-kill", "receiver-kill", "link-cut"} {
		for _, qos := range []byte{2, 1} {
			t.Run(fmt.Sprintf("%s/qos%d", fault, qos), func(t *testing.T) {
				dupRuns, dups := 0, 0
				for r := 0; r < runs; r++ {
					d := exactlyOnceRun(t, fault, qos, 10000)
					if d > 0 {
						dupRuns++
						dups += d
					}
				}
				t.Logf("%s QoS %d: %d runs, %d with duplicates, %d duplicates in all", fault, qos, runs, dupRuns, dups)
			})
		}
	}
}

// exactlyOnceRun runs one stream of total messages with one fault and returns the duplicates.
func exactlyOnceRun(t *testing.T, fault string, qos byte, total int) int {
	t.Helper()
	dir := t.TempDir()
	b1 := mosqtest.Start(t, mosqtest.Options{Persistence: true, Extra: brokerExtra})
	b2 := mosqtest.Start(t, mosqtest.Options{Persistence: true, Extra: brokerExtra})
	defer b1.Stop()
	defer b2.Stop()
	proxy := newProxy(t, b2.Addr)
	spec := func(node, local string, peers map[string]string) helperAgentSpec {
		return helperAgentSpec{Node: node, Local: local, Peers: peers, State: filepath.Join(dir, node+".json")}
	}
	s1 := spec("b1", b1.Addr, map[string]string{"b2": proxy.addr})
	s2 := spec("b2", b2.Addr, map[string]string{"b1": b1.Addr})
	a1 := startHelperAgent(t, s1)
	a2 := startHelperAgent(t, s2)
	defer func() { a1.Stop(); a2.Stop() }()

	sub := connect(t, b2.Addr, "eo-sub", false)
	defer sub.c.Disconnect(50)
	sub.subscribe("eo/#", qos)
	pub := connect(t, b1.Addr, "eo-pub", true)
	defer pub.c.Disconnect(50)
	// The stream starts once b1's agent relays to b2: probes until one arrives.
	waitFor(t, 20*time.Second, "b1's agent to relay to b2", func() string {
		pub.c.Publish("eo/probe", 1, false, "p")
		for _, m := range sub.messages() {
			if m.Topic == "eo/probe" {
				return ""
			}
		}
		time.Sleep(200 * time.Millisecond)
		return "no probe arrived yet"
	})

	var published atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// As fast as the publisher can, with at most 10 publishes unacknowledged: Mosquitto drops
		// QoS 2 publishes past about 20 unfinished ones from one client (design.md).
		window := make(chan mqtt.Token, 10)
		for k := 0; k < total; k++ {
			if len(window) == cap(window) {
				tok := <-window
				tok.WaitTimeout(10 * time.Second)
			}
			window <- pub.c.Publish("eo/x", qos, false, strconv.Itoa(k))
			published.Add(1)
		}
		for len(window) > 0 {
			tok := <-window
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Errorf("publish not acknowledged: %v", tok.Error())
			}
		}
	}()
	at := int64(total / 4)
	for published.Load() < at {
		time.Sleep(time.Millisecond)
	}
	switch fault {
	case "sender-kill":
		a1.Kill()
		time.Sleep(time.Second)
		a1 = startHelperAgent(t, s1)
	case "receiver-kill":
		a2.Kill()
		time.Sleep(time.Second)
		a2 = startHelperAgent(t, s2)
	case "link-cut":
		proxy.drop()
	}
	wg.Wait()
	missing, dups := 0, 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen := map[string]int{}
		for _, m := range sub.messages() {
			if m.Topic == "eo/x" {
				seen[m.Payload]++
			}
		}
		missing, dups = 0, 0
		for k := 0; k < total; k++ {
			switch n := seen[strconv.Itoa(k)]; {
			case n == 0:
				missing++
			case n > 1:
				dups += n - 1
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if missing == 0 {
		time.Sleep(time.Second) // late copies
		dups = 0
		seen := map[string]int{}
		for _, m := range sub.messages() {
			if m.Topic == "eo/x" {
				seen[m.Payload]++
			}
		}
		for _, n := range seen {
			dups += max(n-1, 0)
		}
	}
	t.Logf("%s QoS %d: %d of %d arrived, %d duplicates", fault, qos, total-missing, total, dups)
	if missing > 0 {
		t.Errorf("%s QoS %d: %d messages lost", fault, qos, missing)
	}
	if qos == 2 && dups > 0 {
		t.Errorf("%s QoS 2: %d duplicates", fault, dups)
	}
	return dups
}

// helperAgentSpec is what TestHelperAgentProcess runs, passed as JSON in MHA_HELPER_AGENT.
type helperAgentSpec struct {
	Node, Local string
	Peers       map[string]string
	State       string
}

// startHelperAgent runs an agent in a child process (this test binary) so that it can be killed
// -9.
func startHelperAgent(t *testing.T, s helperAgentSpec) *mosqtest.Proc {
	t.Helper()
	b, _ := json.Marshal(s)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAgentProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MHA_HELPER_AGENT="+string(b), "GOCOVERDIR=")
	return mosqtest.StartProc(t, cmd)
}

// TestHelperAgentProcess is the child process of startHelperAgent: it runs one agent until
// SIGTERM. Without MHA_HELPER_AGENT it has nothing to do.
func TestHelperAgentProcess(t *testing.T) {
	env := os.Getenv("MHA_HELPER_AGENT")
	if env == "" {
		return
	}
	var s helperAgentSpec
	if err := json.Unmarshal([]byte(env), &s); err != nil {
		t.Fatal(err)
	}
	o := bridge.Options{Cluster: "t", Node: s.Node, Local: s.Local, StatePath: s.State,
		Keepalive: 2 * time.Second, SnapshotInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if os.Getenv("MHA_TEST_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for name, addr := range s.Peers {
		o.Peers = append(o.Peers, bridge.PeerAddr{Name: name, Address: addr})
	}
	a, err := bridge.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// Contract 2, wills (issue 11): a will published while its broker stops reaches the
// subscribers of every other broker exactly once, although the broker also keeps it in the
// agent's persistent session and delivers it again after its restart.
func TestWillOnceAcrossBrokerRestart(t *testing.T) {
	runs := 1
	if s := os.Getenv("MHA_EXACTLY_ONCE_RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	for r := 0; r < max(runs, 1); r++ {
		willOnceRun(t)
		if t.Failed() {
			return
		}
	}
}

func willOnceRun(t *testing.T) {
	c := startCluster(t, 3)
	defer c.stopAll()
	s2 := connect(t, c.brokers[1].Addr, "will-sub-2", false)
	s2.subscribe("wills/#", 1)
	s3 := connect(t, c.brokers[2].Addr, "will-sub-3", false)
	s3.subscribe("wills/#", 1)
	c.waitPeerFilters(1, 1)
	c.waitPeerFilters(2, 1)
	o := mqtt.NewClientOptions().AddBroker("tcp://"+c.brokers[0].Addr).SetClientID("dying").
		SetProtocolVersion(4).SetWill("wills/dying", "gone", 1, false).SetAutoReconnect(false)
	dying := mqtt.NewClient(o)
	if tok := dying.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	c.brokers[0].Stop()
	time.Sleep(500 * time.Millisecond)
	c.brokers[0].StartAgain()
	s2.waitCount(1, 15*time.Second)
	s3.waitCount(1, 15*time.Second)
	// The redelivery from the agent's session came about 6.5 s after the restart (issue 11).
	time.Sleep(10 * time.Second)
	for _, s := range []*client{s2, s3} {
		if n := counts(s.messages())["wills/dying gone"]; n != 1 {
			t.Errorf("a subscriber got the will %d times, want once: %s", n, summary(s.messages()))
		}
	}
}

// During a rolling upgrade a peer agent of the previous release reads relay wire version 1
// only: its status has no relay_wire, and relays to it are sent in version 1 (without the
// identity) instead of being refused there.
func TestRelaysToOldPeerUseVersion1(t *testing.T) {
	t.Run("open", func(t *testing.T) { relaysToOldPeer(t, nil, true) })
	// With a secret the old agent's statuses are unsigned (status signing is newer than wire
	// version 2): refused as forged, they still lower the version, never raise it.
	t.Run("secret", func(t *testing.T) { relaysToOldPeer(t, withSecret, false) })
}

func relaysToOldPeer(t *testing.T, opts func(int, *bridge.Options), canUpgrade bool) {
	c := newCluster(t, 2, opts)
	c.startAgent(0)
	// b2 runs "an old agent": its status says up, without relay_wire.
	old := connect(t, c.brokers[1].Addr, "old-agent", true)
	old.publish("$HA/t/b2/status", 1, true, `{"node":"b2","agent_up":true}`)
	raw := connect(t, c.brokers[1].Addr, "raw", true)
	raw.subscribe("$forward/#", 1)
	raw.subscribe("$forward-b/#", 1)
	waitFor(t, 10*time.Second, "b1 linked to b2", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if p.Name == "b2" && !p.Up {
				return "down"
			}
		}
		return ""
	})
	time.Sleep(500 * time.Millisecond) // the status arrives right after the link's subscribe
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish("up/x", 1, false, "v1 please")
	got := raw.waitCount(1, 5*time.Second)
	if got[0].Topic != "$forward/up/x" || !strings.HasPrefix(got[0].Payload, "v1 please") { // signed: a tag follows
		t.Fatalf("relay to an old peer: %s, want the version 1 topic $forward/up/x", summary(got))
	}
	if !canUpgrade {
		return // an unsigned status claiming version 2 proves nothing
	}
	// Upgraded (relay_wire 2): version 2 batches.
	old.publish("$HA/t/b2/status", 1, true, `{"node":"b2","agent_up":true,"relay_wire":2}`)
	time.Sleep(300 * time.Millisecond)
	pub.publish("up/x", 1, false, "v2 now")
	got = raw.waitCount(2, 5*time.Second)
	if got[1].Topic != "$forward-b/b1" || !strings.HasPrefix(got[1].Payload, "MHB2") {
		t.Fatalf("relay to an upgraded peer: %s, want a version 2 batch", summary(got[1:]))
	}
}

// With a secret, an unsigned status cannot downgrade relays to a live, upgraded agent (it
// signs a status every 2 s): a client forging one must not strip the identity off them.
func TestForgedStatusCannotDowngradeRelayWire(t *testing.T) {
	c := newCluster(t, 2, withSecret)
	c.startAgent(0)
	c.startAgent(1)
	c.waitSettled()
	raw := connect(t, c.brokers[1].Addr, "raw", true)
	raw.subscribe("$forward/#", 1)
	raw.subscribe("$forward-b/#", 1)
	// The forger keeps at it, every 50 ms, while relays flow.
	forger := connect(t, c.brokers[1].Addr, "forger", true)
	stop := make(chan struct{})
	forging := make(chan struct{})
	go func() {
		defer close(forging)
		for {
			forger.publish("$HA/t/b2/status", 1, false, `{"node":"b2","agent_up":true}`)
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-forging }()
	time.Sleep(300 * time.Millisecond)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	sub := connect(t, c.brokers[1].Addr, "sub", true)
	sub.subscribe("up/#", 1)
	// Until b1's agent learns the new subscription nothing is relayed: publish until it is.
	waitFor(t, 10*time.Second, "a relay to b2", func() string {
		pub.publish("up/x", 1, false, "still v2")
		time.Sleep(100 * time.Millisecond)
		if len(raw.messages()) == 0 {
			return "nothing relayed"
		}
		return ""
	})
	for i := 0; i < 20; i++ {
		pub.publish("up/x", 1, false, "still v2")
		time.Sleep(20 * time.Millisecond)
	}
	raw.waitCount(21, 5*time.Second)
	for _, m := range raw.messages() {
		if m.Topic != "$forward-b/b1" || !strings.HasPrefix(m.Payload, "MHB") || strings.HasPrefix(m.Payload, "MHB1") {
			t.Fatalf("relay while a client forges unsigned statuses: %s, want version 2 or later batches only", summary(raw.messages()))
		}
	}
}
