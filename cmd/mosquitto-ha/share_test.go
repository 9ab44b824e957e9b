package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"mosquitto-ha/bridge"
)

// `status` and the metrics point at a $share subscription whose members sit on several brokers,
// and count the extra deliveries (README, shared subscriptions).
func TestStatusAndMetricsShowSharedSplit(t *testing.T) {
	s := bridge.Status{Node: "b1", AgentUp: true, LocalUp: true, Time: time.Now(), SharedExtra: 7,
		SharedSplit: []bridge.SharedSplit{{Share: "$share/g/jobs/#", Peers: []string{"b3"}}},
		Peers:       []bridge.PeerStatus{{Name: "b3", Up: true}}}
	var out bytes.Buffer
	printHealth(&out, []nodeHealth{{Node: "b1", Broker: brokerUp, BrokerUp: true, Agent: &s}})
	if !strings.Contains(out.String(), "shared subscriptions split over brokers: $share/g/jobs/# (also on b3)") {
		t.Errorf("status does not name the split group:\n%s", out.String())
	}
	out.Reset()
	writeMetrics(&out, s, time.Now())
	for _, want := range []string{
		`mosquitto_ha_shared_extra_deliveries_total{node="b1"} 7`,
		`mosquitto_ha_shared_split_subscriptions{node="b1"} 1`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, out.String())
		}
	}
}
