// Interest that must not outlive its client: sessions a broker lost (issue 11), cut log lines
// and the id "<unknown>" (issue 10, findings 9 and 11), and the log of a peer's unknown interest.

package bridge_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/bridge"
	"mosquitto-ha/sysparse/mosqtest"
)

// newClusterExtra is newCluster with extra broker configuration for broker i.
func newClusterExtra(t *testing.T, n int, extra func(i int) string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, name: "t", dir: t.TempDir(),
		agents: make([]*bridge.Agent, n), cancels: make([]context.CancelFunc, n), dones: make([]chan error, n)}
	for i := 0; i < n; i++ {
		c.brokers = append(c.brokers, mosqtest.Start(t, mosqtest.Options{Persistence: true, Extra: brokerExtra + extra(i)}))
		c.names = append(c.names, fmt.Sprintf("b%d", i+1))
	}
	t.Cleanup(c.stopAll)
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	return c
}

// Issue 11, interest after a broker restart: a broker killed with -9 before it saved its
// sessions lost the persistent session of client P, which was away; once the broker's count of
// clients proves no such session came back, P's filters are no longer advertised, although
// another persistent client R, which reconnected after the restart, keeps the agent wanting
// everything (its subscriptions may have come from disk). When the broker restored the sessions
// (stopped with SIGTERM, which saves them), P's filters are kept.
func TestBrokerRestartLostSessionsDropInterest(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill bool
	}{
		{"sessions lost", true},
		{"sessions restored", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClusterExtra(t, 2, func(i int) string { return "autosave_interval 3600\n" })
			p := connect(t, c.brokers[1].Addr, "P", false)
			p.subscribe("gone/#", 1)
			connectR := func() mqtt.Client {
				o := mqtt.NewClientOptions().AddBroker("tcp://" + c.brokers[1].Addr).SetClientID("R").
					SetCleanSession(false).SetAutoReconnect(false)
				r := mqtt.NewClient(o)
				if tok := r.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("connect R: %v", tok.Error())
				}
				return r
			}
			r := connectR()
			r.Subscribe("r/#", 1, nil).WaitTimeout(5 * time.Second)
			c.waitPeerFilters(1, 2)
			p.c.Disconnect(50)
			if tc.kill {
				c.brokers[1].Kill()
			} else {
				c.brokers[1].Stop()
			}
			r.Disconnect(0)
			c.brokers[1].StartAgain()
			waitFor(t, 10*time.Second, "b2's agent back on its broker", func() string {
				if !c.agent(1).Status().LocalUp {
					return "local down"
				}
				return ""
			})
			time.Sleep(1500 * time.Millisecond) // a $SYS tick on the new log subscription
			r = connectR()
			defer r.Disconnect(0)
			if !tc.kill {
				deadline := time.Now().Add(4 * time.Second)
				for time.Now().Before(deadline) {
					if s := c.agent(1).Status(); s.LocalFilters != 2 || !c.agent(0).PeerWants("b2", "gone/x") {
						t.Fatalf("a restored session's interest was dropped: %+v", s)
					}
					time.Sleep(100 * time.Millisecond)
				}
				pub := connect(t, c.brokers[0].Addr, "pub", true)
				pub.publish("gone/x", 1, false, "kept")
				p2 := connect(t, c.brokers[1].Addr, "P", false)
				p2.waitCount(1, 5*time.Second)
				return
			}
			waitFor(t, 10*time.Second, "b1 to see b2's interest without P's filter", func() string {
				for _, ps := range c.agent(0).Status().Peers {
					if ps.Filters != 1 {
						return fmt.Sprintf("b1 sees %d filters on b2, b2 holds %d", ps.Filters, c.agent(1).Status().LocalFilters)
					}
				}
				return ""
			})
		})
	}
}

// Finding 9: a client id so long that its log lines are cut leaves its interest under a cut id
// that no line can end; once the broker's count proves that client gone, it goes, also when a
// resumed session keeps the agent wanting everything, and also after a restart of the agent,
// which restores it from the state file.
func TestFinding9CutLinesDoNotPinInterest(t *testing.T) {
	c := startCluster(t, 2)
	r := connect(t, c.brokers[1].Addr, "R", false)
	r.subscribe("r/#", 1)
	c.waitPeerFilters(1, 1)
	long := connect(t, c.brokers[1].Addr, strings.Repeat("L", 2000), true)
	long.subscribe("cut/x", 1)
	// Finding 11: the id "<unknown>", which Mosquitto also prints for a connection without
	// CONNECT, makes its disconnect line ambiguous: its interest must not stay for good either.
	unk := connect(t, c.brokers[1].Addr, "<unknown>", true)
	unk.subscribe("unk/#", 1)
	waitFor(t, 5*time.Second, "b2 to read the cut line", func() string {
		if c.agent(1).Status().Truncated == 0 {
			return "no truncated line yet"
		}
		return ""
	})
	// An agent restart: R resumes without its subscriptions being logged (wanting everything
	// from now on), the cut id comes back from the state file.
	c.stopAgent(1)
	c.startAgent(1)
	c.waitLinksUp(1)
	time.Sleep(500 * time.Millisecond) // its log subscription is in place
	r.c.Disconnect(50)
	r = connect(t, c.brokers[1].Addr, "R", false)
	long.c.Disconnect(50)
	unk.c.Disconnect(50)
	waitFor(t, 10*time.Second, "b2's interest without the cut id's widened filter and <unknown>'s", func() string {
		if s := c.agent(1).Status(); s.LocalFilters != 1 {
			return fmt.Sprintf("b2 holds %d filters (want_all=%v)", s.LocalFilters, s.WantAll)
		}
		return ""
	})
	// Dropped for good: another restart does not bring them back from the state file, even
	// though R, connected across it, keeps the count from proving anything this time.
	c.stopAgent(1)
	c.startAgent(1)
	c.waitLinksUp(1)
	time.Sleep(3 * time.Second)
	if s := c.agent(1).Status(); s.LocalFilters != 1 {
		t.Errorf("after another restart b2 holds %d filters, want 1 (r/#)", s.LocalFilters)
	}
}

// Finding 11: while a peer's interest is unknown, each delta that cannot be applied is not a
// log line of its own: one Info per episode (then at most one a minute).
func TestFinding11GapLoggedOncePerEpisode(t *testing.T) {
	var logs lockedBuffer
	c := newCluster(t, 2, func(i int, o *bridge.Options) {
		if i == 0 {
			o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}
	})
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	evil := connect(t, c.brokers[1].Addr, "evil", true)
	for k := 0; k < 200; k++ {
		d := []byte("MHA1D")
		d = binary.AppendUvarint(d, 1<<62)
		d = binary.AppendUvarint(d, uint64(10+2*k)) // every one a gap
		d = append(d, 0)
		d = binary.AppendUvarint(d, 0)
		evil.publish("$HA/t/b2/interest/delta", 0, false, string(d))
	}
	time.Sleep(time.Second)
	if n := strings.Count(logs.String(), "interest gap"); n != 1 {
		t.Errorf("%d \"interest gap\" lines for 200 deltas in one episode, want 1", n)
	}
}
