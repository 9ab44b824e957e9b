// Issue 10, finding 4: the agents' client ids, and a takeover of one.

package bridge_test

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/bridge"
)

// Finding 4: with a cluster secret the agents' client ids cannot be guessed: clients that
// connect with the plain ids ("mha-<cluster>-<node>-local", "-to-") take nothing from the agents
// and cost no message; a takeover of a real id is logged at Warn and the agent comes back.
func TestFinding4AgentIDsUnguessable(t *testing.T) {
	var logs lockedBuffer
	c := newCluster(t, 2, func(i int, o *bridge.Options) {
		withSecret(i, o)
		if i == 1 {
			o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}
	})
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	plain := bridge.NewTopics("t", "$forward/")
	secret := plain.WithIDSecret([]byte("cluster secret for tests"))
	if id := secret.LocalID("b2"); id == plain.LocalID("b2") || !strings.HasPrefix(id, plain.LocalID("b2")+"-") {
		t.Fatalf("local id with a secret %q, plain %q", id, plain.LocalID("b2"))
	}
	sub := connect(t, c.brokers[1].Addr, "sub", false)
	sub.subscribe("t4/#", 1)
	c.waitPeerFilters(1, 1)

	// While b2's agent is away, b1 relays to b2's broker, which queues for the agent's session;
	// a client that connects once with the plain local id and a clean session would discard it.
	c.stopAgent(1)
	waitFor(t, 5*time.Second, "b1 to relay everything to b2", func() string {
		if !c.agent(0).PeerWants("b2", "zzz") {
			return "not yet"
		}
		return ""
	})
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	for i := 0; i < 10; i++ {
		pub.publish("t4/queued", 1, false, fmt.Sprint(i))
	}
	time.Sleep(300 * time.Millisecond)
	o := mqtt.NewClientOptions().AddBroker("tcp://" + c.brokers[1].Addr).SetClientID(plain.LocalID("b2")).
		SetCleanSession(true).SetAutoReconnect(false)
	once := mqtt.NewClient(o)
	if tok := once.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("intruder: %v", tok.Error())
	}
	once.Disconnect(0)
	c.startAgent(1)
	checkSequence(t, sub, "t4/queued", 10, 10*time.Second)

	// Intruders with the plain ids, persistent sessions that take what they are sent.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, in := range []struct{ addr, id string }{
		{c.brokers[1].Addr, plain.LocalID("b2")}, {c.brokers[1].Addr, plain.LinkID("b1", "b2")},
		{c.brokers[0].Addr, plain.LocalID("b1")}, {c.brokers[0].Addr, plain.LinkID("b2", "b1")},
	} {
		wg.Add(1)
		go func(addr, id string) {
			defer wg.Done()
			for {
				o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(false)
				cl := mqtt.NewClient(o)
				cl.Connect().WaitTimeout(2 * time.Second)
				select {
				case <-stop:
					cl.Disconnect(0)
					return
				case <-time.After(300 * time.Millisecond):
				}
				cl.Disconnect(0)
			}
		}(in.addr, in.id)
	}
	const n = 1000
	for i := 0; i < n; i++ {
		pub.c.Publish("t4/x", 1, false, fmt.Sprint(i))
		if i%100 == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	checkSequence(t, sub, "t4/x", n, 15*time.Second)

	// A takeover of the real id is noticed and logged, and relaying comes back.
	o = mqtt.NewClientOptions().AddBroker("tcp://" + c.brokers[1].Addr).SetClientID(secret.LocalID("b2")).
		SetCleanSession(true).SetAutoReconnect(false)
	intruder := mqtt.NewClient(o)
	if tok := intruder.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("intruder: %v", tok.Error())
	}
	time.Sleep(500 * time.Millisecond)
	intruder.Disconnect(0)
	waitFor(t, 10*time.Second, "a Warn naming the taken client id", func() string {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "took over a cluster client id") && strings.Contains(l, secret.LocalID("b2")) {
				return ""
			}
		}
		return "none yet"
	})
	// It came with a clean session, which discarded the agent's: that is reported too.
	waitFor(t, 10*time.Second, "a Warn saying the agent's session was discarded", func() string {
		if !strings.Contains(logs.String(), "the agent's session on its broker was discarded") {
			return "none yet"
		}
		return ""
	})
	// What was published while the intruder held the id is lost with the session it discarded
	// (the derived ids are the defence); once the agent is back, relaying works again.
	waitFor(t, 10*time.Second, "b2's agent back and b1's link to it up", func() string {
		if !c.agent(1).Status().LocalUp {
			return "b2 local down"
		}
		for _, p := range c.agent(0).Status().Peers {
			if !p.Up {
				return "b1's link down"
			}
		}
		return ""
	})
	time.Sleep(500 * time.Millisecond)
	pub.publish("t4/y", 1, false, "after")
	waitFor(t, 10*time.Second, "t4/y after the takeover", func() string {
		for _, m := range sub.messages() {
			if m.Topic == "t4/y" {
				return ""
			}
		}
		return "not delivered"
	})
}

// The persistent session an agent left under its plain local id, before the cluster secret
// derived its ids, is removed when the agent starts with the secret: nobody would resume it, and
// it would queue every publish of its broker for good.
func TestFinding4PlainSessionRemovedOnUpgrade(t *testing.T) {
	c := newCluster(t, 2, withSecret)
	plain := bridge.NewTopics("t", "$forward/").LocalID("b2")
	o := mqtt.NewClientOptions().AddBroker("tcp://" + c.brokers[1].Addr).SetClientID(plain).
		SetCleanSession(false).SetAutoReconnect(false)
	old := mqtt.NewClient(o)
	if tok := old.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("old agent session: %v", tok.Error())
	}
	old.Subscribe("#", 1, nil).WaitTimeout(5 * time.Second)
	old.Disconnect(50)
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	o.SetCleanSession(false)
	again := mqtt.NewClient(o)
	tok := again.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer again.Disconnect(0)
	if tok.(*mqtt.ConnectToken).SessionPresent() {
		t.Errorf("the broker still holds the session of the plain id %s", plain)
	}
}
