// Issue 13: sessions that follow their client, with agents as separate processes killed with
// SIGKILL in the middle of their drains.

package main

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/sysparse/mosqtest"
)

// kill -9 of an agent while it drains its replicas, three times, loses nothing its client
// needs: the client, subscribed once on b1, moves to b2 after kill -9 of b1 and gets every QoS 1
// message published on b2 and b3 after the kill, with its session and subscription there.
func TestSessionsAgentKill9DuringDrains(t *testing.T) {
	brokers, cfg, agents := startAgentCluster(t, 3)
	var mu sync.Mutex
	seen := map[string]int{}
	client := func(addr string) (mqtt.Client, bool) {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("k9-follow").SetCleanSession(false).
			SetAutoReconnect(false).SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			mu.Lock()
			seen[m.Topic()+" "+string(m.Payload())]++
			mu.Unlock()
		})
		c := mqtt.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect to %s: %v", addr, tok.Error())
		}
		return c, tok.(*mqtt.ConnectToken).SessionPresent()
	}
	sub, _ := client(brokers[0].Addr)
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("k9/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	waitLog(t, agents[1], `job=drain`, 15*time.Second)

	// Publishers on b2 and b3, 25 messages a second each.
	var stop atomic.Bool
	var wg sync.WaitGroup
	next := make([]atomic.Int64, 2)
	for i, b := range brokers[1:] {
		pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr).SetClientID(fmt.Sprintf("k9-pub-%d", i)))
		if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		defer pub.Disconnect(10)
		wg.Add(1)
		go func(i int, pub mqtt.Client) {
			defer wg.Done()
			for !stop.Load() {
				n := next[i].Load()
				if tok := pub.Publish(fmt.Sprintf("k9/b%d", i+2), 1, false, fmt.Sprint(n)); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
					next[i].Add(1)
				}
				time.Sleep(40 * time.Millisecond)
			}
		}(i, pub)
	}
	port := mosqtest.FreePort(t)
	for round := 0; round < 3; round++ {
		time.Sleep(700 * time.Millisecond)
		agents[1].Kill() // in the middle of its drains, or between two
		agents[1] = startAgentProcArgs(t, cfg, "b2", "--metrics", fmt.Sprintf("127.0.0.1:%d", port))
		waitLog(t, agents[1], `job=drain`, 15*time.Second)
	}
	// The replica and its drains are in b2's metrics.
	m := getMetrics(t, port)
	for _, want := range []string{`mosquitto_ha_session_replicas{node="b2"} 1`, `mosquitto_ha_session_connections_total{node="b2",job="drain"} `} {
		if !strings.Contains(m, want) {
			t.Errorf("b2's metrics lack %s", want)
		}
	}
	killed := []int64{next[0].Load(), next[1].Load()}
	brokers[0].Kill()
	time.Sleep(200 * time.Millisecond)
	moved, present := client(brokers[1].Addr)
	defer moved.Disconnect(0)
	if !present {
		t.Errorf("no session present on b2 after kill -9 of b1")
	}
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var missing []string
		lost, dups := 0, 0
		mu.Lock()
		for i := range next {
			for k := int64(0); k < next[i].Load(); k++ {
				key := fmt.Sprintf("k9/b%d %d", i+2, k)
				switch n := seen[key]; {
				case n == 0 && k >= killed[i]:
					missing = append(missing, key)
				case n == 0:
					lost++
				case n > 1:
					dups += n - 1
				}
			}
		}
		mu.Unlock()
		if len(missing) == 0 {
			t.Logf("published %d+%d, duplicates %d, missing before the kill of b1 %d", next[0].Load(), next[1].Load(), dups, lost)
			if lost > 0 {
				t.Errorf("%d messages published before the kill never arrived", lost)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages published after the kill of b1 missing, e.g. %s\nb2 agent:\n%s\nb2 broker:\n%s", len(missing), strings.Join(missing[:min(5, len(missing))], ", "), agents[1].Out.String(), brokers[1].Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
