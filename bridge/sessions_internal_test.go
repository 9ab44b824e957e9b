package bridge

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mosquitto-ha/bridge/mqttconn"
	"mosquitto-ha/sysparse/mosqtest"
)

// A peer's registry is hostile input: every bound refuses it whole, with ErrRegistryRefused.
func TestDecodeRegistryRefuses(t *testing.T) {
	clock := newHLC(maxClockSkew)
	now := clock.now()
	ahead := stampOf(uint64(time.Now().Add(time.Hour).UnixMilli()), 0)
	entry := func(id string, proto int, subs string) string {
		return fmt.Sprintf(`{"id":%q,"conn":true,"since":%d,"proto":%d,"subs":{%s}}`, id, now, proto, subs)
	}
	many := make([]string, maxRegistryFilters+1)
	for i := range many {
		many[i] = fmt.Sprintf(`"f/%d":1`, i)
	}
	cases := map[string]string{
		"not json":                  `{"version":1,`,
		"wrong node":                `{"version":1,"node":"b9","sessions":[]}`,
		"wrong version":             `{"version":2,"node":"b2","sessions":[]}`,
		"empty id":                  `{"version":1,"node":"b2","sessions":[` + entry("", 4, "") + `]}`,
		"mqtt 5":                    `{"version":1,"node":"b2","sessions":[` + entry("x", 5, "") + `]}`,
		"qos 3":                     `{"version":1,"node":"b2","sessions":[` + entry("x", 4, `"a":3`) + `]}`,
		"$SYS filter":               `{"version":1,"node":"b2","sessions":[` + entry("x", 4, `"$SYS/#":0`) + `]}`,
		"too many subs":             `{"version":1,"node":"b2","sessions":[` + entry("x", 4, strings.Join(many, ",")) + `]}`,
		"stamp too far":             fmt.Sprintf(`{"version":1,"node":"b2","sessions":[{"id":"x","since":%d,"proto":4}]}`, ahead),
		"over the bytes":            `{"version":1,"node":"b2","sessions":[` + entry(strings.Repeat("x", 2000), 4, "") + `]}`,
		"drained filter too small":  fmt.Sprintf(`{"version":1,"node":"b2","sessions":[{"id":"x","since":%d,"proto":4,"drained":"AAAA"}]}`, now),
		"drained filter not base64": fmt.Sprintf(`{"version":1,"node":"b2","sessions":[{"id":"x","since":%d,"proto":4,"drained":"!!"}]}`, now),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeRegistry([]byte(in), "b2", 1000, clock); !errors.Is(err, ErrRegistryRefused) {
				t.Errorf("got %v, want ErrRegistryRefused", err)
			}
		})
	}
	big := base64.StdEncoding.EncodeToString(make([]byte, drainedMaxBytes+1))
	if _, err := decodeRegistry([]byte(fmt.Sprintf(`{"version":1,"node":"b2","sessions":[{"id":"x","since":%d,"proto":4,"drained":%q}]}`, now, big)), "b2", 1<<20, clock); !errors.Is(err, ErrRegistryRefused) {
		t.Errorf("drained filter over %d bytes: got %v, want ErrRegistryRefused", drainedMaxBytes, err)
	}
	withFilter := fmt.Sprintf(`{"version":1,"node":"b2","sessions":[{"id":"f","since":%d,"proto":4,"drained":"AAAAAAAAAAA="}]}`, now)
	if reg, err := decodeRegistry([]byte(withFilter), "b2", 1000, clock); err != nil || len(reg["f"].Drained) != 8 {
		t.Fatalf("registry with an 8-byte drained filter: %v %+v", err, reg)
	}
	ok := `{"version":1,"node":"b2","sessions":[` + entry("x y", 4, `"a/#":1`) + `]}`
	reg, err := decodeRegistry([]byte(ok), "b2", 1000, clock)
	if err != nil || reg["x y"].Subs["a/#"] != 1 {
		t.Fatalf("valid registry: %v %+v", err, reg)
	}
}

func TestConnectAddress(t *testing.T) {
	for line, want := range map[string]string{
		"1796121482: New client connected from 127.0.0.1:42780 as v5 (p5, c1, k60).": "127.0.0.1:42780",
		"New client connected from ::1:5 as a as b (p2, c0, k60).":                   "::1:5",
		"New client connected from 127.0.0.1:1 as 1.2.3.4:5 as y (p2, c1, k60).":     "127.0.0.1:1",
		"Client x disconnected.": "",
	} {
		if got := connectAddress(line); got != want {
			t.Errorf("%q: got %q, want %q", line, got, want)
		}
	}
}

// The replicas of a client id are the first of its rendezvous order: stable, and a node that
// leaves moves only the replicas it held.
func TestRendezvous(t *testing.T) {
	// The order is part of the wire contract: agents of two releases must pick the same replica
	// nodes (FNV-1a 64 of "<id>\x00<node>", highest first).
	if got := strings.Join(rendezvous("client-7", []string{"b1", "b2", "b3", "b4", "b5"}), ","); got != "b3,b2,b1,b5,b4" {
		t.Errorf("rendezvous order changed: %s, want b3,b2,b1,b5,b4", got)
	}
	a := rendezvous("client-7", []string{"b1", "b2", "b3", "b4"})
	b := rendezvous("client-7", []string{"b4", "b3", "b2", "b1"})
	if strings.Join(a, ",") != strings.Join(b, ",") {
		t.Fatalf("order depends on the input order: %v %v", a, b)
	}
	var rest []string
	for _, n := range a {
		if n != a[0] {
			rest = append(rest, n)
		}
	}
	if c := rendezvous("client-7", rest); strings.Join(c, ",") != strings.Join(a[1:], ",") {
		t.Errorf("without %s: %v, want %v", a[0], c, a[1:])
	}
}

// The agent records its connections' addresses as Go writes them; Mosquitto logs them its own
// way ("::1:5", 4-in-6 on a dual-stack listener): both forms of one connection must match.
func TestOwnAddrForms(t *testing.T) {
	r := newSessionRegistry(func(string) bool { return false })
	r.addOwn("[::1]:5", false)
	r.addOwn("127.0.0.1:6", true)
	r.addOwn("[fe80::1%lo]:7", false)
	for addr, want := range map[string][2]bool{
		"::1:5":              {true, false},
		"[::1]:5":            {true, false},
		"::1:6":              {false, false},
		"127.0.0.1:6":        {true, true},
		"::ffff:127.0.0.1:6": {true, true},
		"fe80::1:7":          {true, false},
		"fe80::1%lo:7":       {true, false},
		"127.0.0.1:5":        {false, false},
		"not an address":     {false, false},
		"":                   {false, false},
	} {
		if own, fresh := r.ownAddr(addr, false); own != want[0] || fresh != want[1] {
			t.Errorf("%q: own %v fresh %v, want %v", addr, own, fresh, want)
		}
	}
}

// A drain or removal whose turn comes after its client connected to this broker, but before
// the agent read the client's connect line (the race the live check cannot see), finds the
// client by its own connect line (Mosquitto logs the takeover right before it): it closes
// the connection at once, acknowledges nothing and removes nothing. The client reconnects to
// its session intact, with everything in flight.
func TestSessionJobFindsClientUnseen(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 1\n"})
	a, err := New(Options{Cluster: "t", Node: "b1", Local: b.Addr, Sessions: DefaultSessionOptions()})
	if err != nil {
		t.Fatal(err)
	}
	a.sessWork.live = func(string) bool { return false } // the client's connect line is not read yet
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	within := func(what string, f func() bool) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); !f(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	within("the agent's local connection", func() bool { return a.Status().LocalUp })
	opts := func(id string, clean bool) mqttconn.ConnectOptions {
		return mqttconn.ConnectOptions{ClientID: id, Protocol: 4, CleanSession: clean, Keepalive: 10 * time.Second}
	}
	pub, _, err := mqttconn.Dial(ctx, b.Addr, opts("unseen-pub", true), func(*message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// connectUnacked connects id persistent, subscribes, and receives n messages it never
	// acknowledges: they are in flight in its session.
	connectUnacked := func(id string, n int) *mqttconn.Conn {
		var got atomic.Int32
		c, _, err := mqttconn.Dial(ctx, b.Addr, opts(id, false), func(*message) { got.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Subscribe(ctx, map[string]byte{"unseen/" + id: 1}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			pub.Publish("unseen/"+id, 1, false, []byte(fmt.Sprint(i)), nil)
		}
		within(id+" to receive its messages", func() bool { return int(got.Load()) == n })
		return c
	}
	x := connectUnacked("unseen-x", 5)
	y := connectUnacked("unseen-y", 1)
	w := a.sessWork
	all := func() bool { return true }
	w.submit(sessionJob{kind: jobDrain, id: "unseen-x", drain: true, check: all})
	w.submit(sessionJob{kind: jobRemove, id: "unseen-y", clean: true, check: all})
	within("both jobs to close the clients' connections", func() bool {
		return isDone(x.Done()) && isDone(y.Done()) && w.pendingCount() == 0
	})
	time.Sleep(300 * time.Millisecond) // the jobs end
	if n := w.drained.Load(); n > 0 {
		t.Errorf("the drain acknowledged %d messages of a client connected here", n)
	}
	var again atomic.Int32
	x2, present, err := mqttconn.Dial(ctx, b.Addr, opts("unseen-x", false), func(m *message) { again.Add(1); m.Ack() })
	if err != nil {
		t.Fatal(err)
	}
	defer x2.Close()
	if !present {
		t.Errorf("unseen-x: no session present after the drain")
	}
	time.Sleep(300 * time.Millisecond)
	if n := again.Load(); n != 5 {
		t.Errorf("unseen-x got %d of its 5 in-flight messages again, want 5", n)
	}
	y2, present, err := mqttconn.Dial(ctx, b.Addr, opts("unseen-y", false), func(m *message) { m.Ack() })
	if err != nil {
		t.Fatal(err)
	}
	defer y2.Close()
	if !present {
		t.Errorf("unseen-y: its session was removed while it was connected")
	}
	if s := a.Status().Sessions; s.ClosedLive < 2 {
		t.Errorf("closed_live %d, want 2: %+v", s.ClosedLive, s)
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// A takeover that failed (the broker away) is tried again after a backoff until one succeeds;
// one that succeeded is not repeated for the same connect. The worker forgets ids nobody lists.
func TestSessionTakeoverRetried(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	a, err := New(Options{Cluster: "t", Node: "b1", Local: "127.0.0.1:1", Sessions: DefaultSessionOptions()})
	if err != nil {
		t.Fatal(err)
	}
	w := a.sessWork
	w.addr = "127.0.0.1:1" // nothing listens: the first attempt fails
	h := heldBy{e: sessionEntry{ID: "retry-x", Conn: true, Since: 7, Proto: 4}, node: "b2"}
	ctx := context.Background()
	run := func() (ran bool) {
		j, ok := w.next()
		if ok {
			w.do(ctx, j)
		}
		return ok
	}
	a.takeover("retry-x", h, false)
	a.takeover("retry-x", h, false) // queued already: not twice
	if n := w.pendingCount(); n != 1 {
		t.Fatalf("%d takeovers queued, want 1", n)
	}
	run()
	if a.takeover("retry-x", h, false); w.pendingCount() != 0 {
		t.Fatalf("a failed takeover was tried again at once, without backoff")
	}
	time.Sleep(takeoverBackoff(1) + 20*time.Millisecond)
	if a.takeover("retry-x", h, false); w.pendingCount() != 1 {
		t.Fatalf("a failed takeover was not tried again after its backoff")
	}
	x, _, err := mqttconn.Dial(ctx, b.Addr, mqttconn.ConnectOptions{ClientID: "retry-x", Protocol: 4, Keepalive: 10 * time.Second}, func(*message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	w.addr = b.Addr
	run()
	select {
	case <-x.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("the retried takeover did not close the older connection")
	}
	if a.takeover("retry-x", h, false); w.pendingCount() != 0 || w.takeovers.Load() != 1 {
		t.Errorf("after a successful takeover: %d queued, %d counted, want 0 and 1", w.pendingCount(), w.takeovers.Load())
	}
	w.prune(func(id string) bool { return id != "retry-x" })
	if len(w.state) != 0 {
		t.Errorf("pruned state still holds %v", w.state)
	}
}
