package bridge_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Contract 8 (issue 10, finding 2): QoS 1 messages larger in total than the relay buffer
// (64 MiB by default), published faster than they cross, all arrive: the agent never
// acknowledges to its broker a relay it dropped; it holds the broker's in-flight window instead.
func TestBackpressureLargeMessagesAllDelivered(t *testing.T) {
	c := startCluster(t, 2)
	for _, tc := range []struct{ n, size int }{{40, 5 << 20}, {20, 20 << 20}} {
		t.Run(fmt.Sprintf("%dx%dMB", tc.n, tc.size>>20), func(t *testing.T) {
			prefix := fmt.Sprintf("big%d", tc.size>>20)
			var mu sync.Mutex
			got := map[string]int{}
			o := mqtt.NewClientOptions().AddBroker("tcp://" + c.brokers[1].Addr).SetClientID("bigsub-" + prefix).
				SetCleanSession(true).SetProtocolVersion(4).SetOrderMatters(false).
				SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
					p := m.Payload()
					if len(p) != tc.size {
						t.Errorf("%s: %d bytes, want %d", m.Topic(), len(p), tc.size)
					}
					mu.Lock()
					got[string(p[:8])]++
					mu.Unlock()
				})
			sub := mqtt.NewClient(o)
			if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			defer sub.Disconnect(50)
			if tok := sub.Subscribe(prefix+"/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			c.waitPeerFilters(1, 1)

			pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + c.brokers[0].Addr).
				SetClientID("bigpub-" + prefix).SetProtocolVersion(4).SetWriteTimeout(60 * time.Second))
			if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			defer pub.Disconnect(50)
			payload := make([]byte, tc.size)
			var toks []mqtt.Token
			for i := 0; i < tc.n; i++ {
				copy(payload, fmt.Sprintf("%08d", i))
				toks = append(toks, pub.Publish(prefix+"/x", 1, false, append([]byte(nil), payload...)))
			}
			for i, tok := range toks {
				if !tok.WaitTimeout(2*time.Minute) || tok.Error() != nil {
					t.Fatalf("publish %d not acknowledged: %v", i, tok.Error())
				}
			}
			waitFor(t, 2*time.Minute, fmt.Sprintf("%d messages of %d MB", tc.n, tc.size>>20), func() string {
				mu.Lock()
				defer mu.Unlock()
				if len(got) < tc.n {
					return fmt.Sprintf("%d distinct received", len(got))
				}
				return ""
			})
			for _, p := range c.agent(0).Status().Peers {
				if p.Dropped != 0 {
					t.Errorf("b1 dropped %d relays to %s", p.Dropped, p.Name)
				}
			}
		})
	}
}
