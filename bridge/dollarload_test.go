// Issue 10, finding 5: many '$' filters do not stall relaying.

package bridge_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Finding 5: a client with tens of thousands of '$' filters does not stall relaying: the peers
// mirror them in bounded packets, off the dispatcher, and still deliver on them.
func TestFinding5DollarFiltersDoNotStallRelaying(t *testing.T) {
	// Parallel only with TestSessionRestoredConnectionProvenAfterAQuietMinute, which sleeps.
	t.Parallel()
	// No autosave each second: writing 100,000 subscriptions to disk stalls a broker by itself.
	c := newClusterExtra(t, 3, func(int) string { return "autosave_interval 3600\n" })
	sub := connect(t, c.brokers[2].Addr, "flow-sub", true)
	sub.subscribe("flow/#", 1)
	c.waitPeerFilters(2, 1)

	const n = 200000
	many := connect(t, c.brokers[1].Addr, "many", true)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // one publish every 20 ms on b1, for b3's subscriber
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			pub.c.Publish("flow/x", 1, false, fmt.Sprint(k))
		}
	}()
	var at []time.Time
	var mu sync.Mutex
	sub.c.AddRoute("flow/#", func(_ mqtt.Client, _ mqtt.Message) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
	})
	time.Sleep(500 * time.Millisecond)
	for i := 0; i < n; i += 1000 {
		fs := map[string]byte{}
		for j := i; j < i+1000; j++ {
			fs[fmt.Sprintf("$d/%d", j)] = 0
		}
		if tok := many.c.SubscribeMultiple(fs, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
	}
	waitFor(t, 60*time.Second, "b1 to learn the $ filters", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if p.Name == "b2" && p.Filters < n {
				return fmt.Sprintf("%d filters", p.Filters)
			}
		}
		return ""
	})
	got := many.messages()
	waitFor(t, 30*time.Second, "a publish on the last $ filter to reach b2", func() string {
		pub.c.Publish(fmt.Sprintf("$d/%d", n-1), 0, false, "dollar")
		if len(many.messages()) == len(got) {
			return "not yet"
		}
		return ""
	})
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	var worst time.Duration
	for i := 1; i < len(at); i++ {
		worst = max(worst, at[i].Sub(at[i-1]))
	}
	t.Logf("%d publishes received, longest gap %s", len(at), worst)
	if worst > 2*time.Second {
		t.Errorf("relaying to b3 stalled %s while b1 mirrored %d $ filters", worst, n)
	}
}
