package bridge_test

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkInterestExchange holds 100k filters on node b2 (MHA_SCALE_FILTERS overrides) while a
// client changes 1,000 subscriptions a second there, and measures, against real brokers:
//   - how long a new subscription on b2 takes to be known to every peer (p50, p99);
//   - the control bytes per second b2's agent publishes for it.
//
// Each iteration is one new subscription.
func BenchmarkInterestExchange(b *testing.B) {
	nFilters := 100000
	if v, err := strconv.Atoi(os.Getenv("MHA_SCALE_FILTERS")); err == nil {
		nFilters = v
	}
	c := startClusterTB(b, 3)
	hold := benchClient(b, c.brokers[1].Addr, "holder")
	for k := 0; k < nFilters; k += 1000 {
		subs := map[string]byte{}
		for i := k; i < min(k+1000, nFilters); i++ {
			subs[fmt.Sprintf("fleet/%d/+/state", i)] = 0
		}
		if tok := hold.SubscribeMultiple(subs, nil); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			b.Fatalf("subscribe: %v", tok.Error())
		}
	}
	deadline := time.Now().Add(120 * time.Second)
	for !peersKnow(c, "b2", fmt.Sprintf("fleet/%d/x/state", nFilters-1)) || filtersSeen(c, "b2") < nFilters {
		if time.Now().After(deadline) {
			b.Fatalf("peers never learned %d filters (b1 sees %d)", nFilters, filtersSeen(c, "b2"))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// 1,000 subscription changes a second in the background: subscribe and unsubscribe in turn.
	churn := benchClient(b, c.brokers[1].Addr, "churner")
	stop := make(chan struct{})
	var changes atomic.Int64
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			f := fmt.Sprintf("churn/%d", i/2)
			if i%2 == 0 {
				churn.Subscribe(f, 0, nil)
			} else {
				churn.Unsubscribe(f)
			}
			changes.Add(1)
		}
	}()
	probe := benchClient(b, c.brokers[1].Addr, "prober")
	bytesBefore := c.agent(1).Status().ControlBytes
	start := time.Now()
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f := fmt.Sprintf("probe/%d/%d", time.Now().UnixNano(), i)
		t0 := time.Now()
		if tok := probe.Subscribe(f, 0, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("probe subscribe: %v", tok.Error())
		}
		for !peersKnow(c, "b2", f) {
			if time.Since(t0) > 30*time.Second {
				b.Fatalf("subscription %q not known to every peer after 30s", f)
			}
			time.Sleep(200 * time.Microsecond)
		}
		lat = append(lat, time.Since(t0))
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	close(stop)
	elapsed := time.Since(start).Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(c.agent(1).Status().ControlBytes-bytesBefore)/elapsed, "control-B/s")
	b.ReportMetric(float64(changes.Load())/elapsed, "changes/s")
	b.ReportMetric(float64(nFilters), "filters")
}

// peersKnow reports whether every agent other than node's relays topic to node.
func peersKnow(c *testCluster, node, topic string) bool {
	for i, n := range c.names {
		if n == node {
			continue
		}
		if !c.agent(i).PeerWants(node, topic) {
			return false
		}
	}
	return true
}

func filtersSeen(c *testCluster, node string) int {
	for _, p := range c.agent(0).Status().Peers {
		if p.Name == node {
			return p.Filters
		}
	}
	return 0
}

func benchClient(b *testing.B, addr, id string) mqtt.Client {
	b.Helper()
	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetWriteTimeout(30 * time.Second))
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		b.Fatalf("connect: %v", tok.Error())
	}
	b.Cleanup(func() { cl.Disconnect(10) })
	return cl
}
