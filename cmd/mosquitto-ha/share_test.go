package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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

// load_balancer.pins becomes a use-server rule of haproxy.cfg that `haproxy -c` accepts.
func TestHAProxyPinsFromClusterFile(t *testing.T) {
	out, errOut, code := runCmd(t, "haproxy", "--config", "../../testdata/config/valid-share-pins.yaml")
	want := "use-server b2 if { var(sess.mqtt_client_id) -m beg billing-worker- }"
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("haproxy: exit %d, want %q in\n%s%s", code, want, out, errOut)
	}
	cfgFile := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(cfgFile, []byte(out), 0o600)
	if out, err := exec.Command("haproxy", "-c", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c (apt-get install -y haproxy): %v\n%s", err, out)
	}
}

// `status` and the metrics show what sessions that follow their client cost and did.
func TestStatusAndMetricsShowSessions(t *testing.T) {
	s := bridge.Status{Node: "b1", AgentUp: true, LocalUp: true, Time: time.Now(),
		Sessions: &bridge.SessionsStatus{Held: 3, Connected: 2, Replicas: 5, Takeovers: 1, Drains: 40, DrainedMessages: 900, Refused: 2, RegistryRefused: 4, Forwarded: 7, ForwardSkipped: 3}}
	var out bytes.Buffer
	printHealth(&out, []nodeHealth{{Node: "b1", Broker: brokerUp, BrokerUp: true, Agent: &s}})
	for _, want := range []string{"sessions: 3 held (2 connected), 5 replicas, 1 takeovers, 40 drains (900 messages), 7 handed over (3 the client had at its new broker)", "2 refused by the broker"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	writeMetrics(&out, s, time.Now())
	for _, want := range []string{
		`mosquitto_ha_sessions_held{node="b1",state="connected"} 2`,
		`mosquitto_ha_session_replicas{node="b1"} 5`,
		`mosquitto_ha_session_connections_total{node="b1",job="refused"} 2`,
		`mosquitto_ha_session_drained_messages_total{node="b1"} 900`,
		`mosquitto_ha_session_forwarded_messages_total{node="b1"} 7`,
		`mosquitto_ha_session_forward_skipped_messages_total{node="b1"} 3`,
		`mosquitto_ha_refused_total{node="b1",cause="session_registry"} 4`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, out.String())
		}
	}
}
