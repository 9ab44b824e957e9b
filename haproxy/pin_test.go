package haproxy_test

import (
	"fmt"
	"testing"
	"time"

	"mosquitto-ha/haproxy"
)

// A pinned client id prefix sends every such client to its broker, whatever the hash would
// choose; while that broker is down, they fall back to the hash (a live broker), and they come
// back once it is up.
func TestE2EPinnedClientIDs(t *testing.T) {
	brokers := twoBrokers(t)
	// Pin to whichever broker the hash sends "worker-0" away from, so the pin must act.
	plain := startHAProxy(t, haproxy.Params{Cluster: "pin", Brokers: backends(brokers)})
	for name := range brokers {
		plain.waitStatus(name, "UP", 5*time.Second)
	}
	target := other(brokerOf(t, plain.Bind, "worker-0"))

	lb := startHAProxy(t, haproxy.Params{Cluster: "pin", Brokers: backends(brokers),
		Pins: []haproxy.Pin{{ClientIDPrefix: "worker-", Broker: target}}})
	for name := range brokers {
		lb.waitStatus(name, "UP", 5*time.Second)
	}
	hashed := map[string]int{}
	for i := 0; i < 8; i++ {
		id := fmt.Sprintf("worker-%d", i)
		if got := brokerOf(t, lb.Bind, id); got != target {
			t.Errorf("pinned %s landed on %s, want %s", id, got, target)
		}
		hashed[brokerOf(t, lb.Bind, fmt.Sprintf("other-%d", i))]++
	}
	if len(hashed) != 2 {
		t.Errorf("client ids without the prefix all went to one broker (the pin leaked?): %v", hashed)
	}

	brokers[target].Stop()
	lb.waitStatus(target, "DOWN", 5*time.Second)
	if got := brokerOf(t, lb.Bind, "worker-0"); got != other(target) {
		t.Errorf("with %s down, pinned worker-0 landed on %s, want the live %s", target, got, other(target))
	}
	brokers[target].StartAgain()
	announce(t, brokers[target], target) // its retained whoami went with it
	lb.waitStatus(target, "UP", 5*time.Second)
	if got := brokerOf(t, lb.Bind, "worker-0"); got != target {
		t.Errorf("with %s up again, pinned worker-0 landed on %s", target, got)
	}
}
