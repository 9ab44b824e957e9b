package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/bridge"
	"mosquitto-ha/sysparse/mosqtest"
)

// mqttClient connects to addr as id; clean false keeps (or resumes) a persistent session.
func mqttClient(t *testing.T, addr, id string, clean bool, onMessage mqtt.MessageHandler) (mqtt.Client, bool) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(false).SetDefaultPublishHandler(onMessage)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s as %s: %v", addr, id, tok.Error())
	}
	return c, tok.(*mqtt.ConnectToken).SessionPresent()
}

// A removed node's persistent agent session keeps queueing every QoS 1 publish of its broker;
// decommission removes it (and the node's retained status), and leaves every other session
// and its queued messages alone.
func TestDecommissionRemovesLeftoverSession(t *testing.T) {
	removed := mosqtest.Start(t, mosqtest.Options{}) // b9's broker, no longer in the file
	peer := mosqtest.Start(t, mosqtest.Options{})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: %s}\nagent:\n  state_dir: %s\n", peer.Addr, dir)), 0o600)

	// What the agent of b9 left on its broker: its local session subscribed to '#' at QoS 1,
	// its retained status; on the peer, a link session. Beside it, an ordinary persistent client.
	for _, s := range []struct{ addr, id string }{{removed.Addr, "mha-it-b9-local"}, {removed.Addr, "keep-me"}, {peer.Addr, "mha-it-b9-to-b1"}} {
		c, _ := mqttClient(t, s.addr, s.id, false, nil)
		if tok := c.Subscribe("#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		c.Disconnect(50)
	}
	pub, _ := mqttClient(t, removed.Addr, "publisher", true, nil)
	for i := 0; i < 5; i++ {
		pub.Publish(fmt.Sprintf("plant/%d", i), 1, false, "reading").WaitTimeout(5 * time.Second)
	}
	pub.Publish("$HA/it/b9/status", 1, true, `{"agent_up":false}`).WaitTimeout(5 * time.Second)
	pub.Disconnect(50)

	// Still in the file: refused, nothing removed.
	os.WriteFile(cfgPath+".with-b9", []byte(fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: %s}\n  - {name: b9, address: %s}\n", peer.Addr, removed.Addr)), 0o600)
	if _, errOut, code := runCmd(t, "decommission", "--config", cfgPath+".with-b9", "--node", "b9"); code != 2 || !strings.Contains(errOut, "still in the nodes") {
		t.Fatalf("decommission of a node still in the file: exit %d, want 2:\n%s", code, errOut)
	}

	out, errOut, code := runCmd(t, "decommission", "--config", cfgPath, "--node", "b9", "--broker", removed.Addr)
	if code != 0 {
		t.Fatalf("decommission: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{removed.Addr + ": removed session mha-it-b9-local\n", peer.Addr + ": removed session mha-it-b9-to-b1\n",
		removed.Addr + ": cleared retained $HA/it/b9/status\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// The session is gone with its queue: resuming it finds no session and no message.
	got := make(chan string, 10)
	c, present := mqttClient(t, removed.Addr, "mha-it-b9-local", false, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() })
	defer c.Disconnect(50)
	if present {
		t.Errorf("the broker still has a session for mha-it-b9-local")
	}
	// The ordinary client's session still has the five messages: they were queued, and
	// decommission touched nothing else.
	kept := make(chan string, 10)
	k, present := mqttClient(t, removed.Addr, "keep-me", false, func(_ mqtt.Client, m mqtt.Message) { kept <- m.Topic() })
	defer k.Disconnect(50)
	if !present {
		t.Errorf("decommission removed the session of keep-me")
	}
	for i := 0; i < 5; i++ {
		select {
		case <-kept:
		case <-time.After(5 * time.Second):
			t.Fatalf("keep-me got %d of its 5 queued messages", i)
		}
	}
	select {
	case topic := <-got:
		t.Errorf("the decommissioned session still delivered %q", topic)
	case <-time.After(300 * time.Millisecond):
	}
	status := make(chan string, 1)
	s, _ := mqttClient(t, removed.Addr, "status-reader", true, nil)
	defer s.Disconnect(50)
	s.Subscribe("$HA/it/b9/status", 0, func(_ mqtt.Client, m mqtt.Message) { status <- string(m.Payload()) }).WaitTimeout(5 * time.Second)
	select {
	case p := <-status:
		t.Errorf("the retained status of b9 is still there: %s", p)
	case <-time.After(300 * time.Millisecond):
	}
}

// An agent that says it is up would come back at once: decommission refuses unless --force.
func TestDecommissionRefusesLiveAgent(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: %s}\n", b.Addr)), 0o600)
	c, _ := mqttClient(t, b.Addr, "mha-it-b9-local", false, nil)
	c.Publish("$HA/it/b9/status", 1, true, `{"agent_up":true}`).WaitTimeout(5 * time.Second)
	c.Disconnect(50)

	_, errOut, code := runCmd(t, "decommission", "--config", cfgPath, "--node", "b9")
	if code != 1 || !strings.Contains(errOut, "says it is up on "+b.Addr) {
		t.Fatalf("decommission with the agent up: exit %d, want 1:\n%s", code, errOut)
	}
	out, errOut, code := runCmd(t, "decommission", "--config", cfgPath, "--node", "b9", "--force")
	if code != 0 || !strings.Contains(out, "removed session mha-it-b9-local") {
		t.Fatalf("decommission --force: exit %d\n%s%s", code, out, errOut)
	}
}

// After a cluster rename the ACL gives the agent account the new cluster's control topics
// only: decommission of the old name cannot read them, says so, and still removes the old
// persistent session (sessions need no topic rights).
func TestDecommissionRenamedClusterUnderACL(t *testing.T) {
	cfgPath, b := authCluster(t) // cluster "it", node b1, password and ACL required
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr).SetClientID("mha-old-b1-local").SetCleanSession(false).
		SetUsername("alice").SetPassword("pw-alice").SetProtocolVersion(4).SetAutoReconnect(false)
	old := mqtt.NewClient(o)
	if tok := old.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	old.Subscribe("#", 1, nil).WaitTimeout(5 * time.Second)
	old.Disconnect(50)

	out, errOut, code := runCmd(t, "decommission", "--config", cfgPath, "--cluster", "old", "--node", "b1", "--timeout", "1s")
	if code != 0 || !strings.Contains(out, b.Addr+": removed session mha-old-b1-local\n") {
		t.Fatalf("decommission --cluster old: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "cannot read the node's control topics $HA/old/b1/#") {
		t.Errorf("decommission did not say it could not read the old control topics:\n%s", errOut)
	}
	o.SetUsername("alice").SetPassword("pw-alice")
	again := mqtt.NewClient(o)
	tok := again.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer again.Disconnect(50)
	if tok.(*mqtt.ConnectToken).SessionPresent() {
		t.Errorf("the old cluster's session is still there")
	}
}

// With a cluster secret the agents' client ids end in a tag derived from it (issue 10, finding
// 4): decommission removes the session under that id, which it derives the same way.
func TestDecommissionRemovesSecretDerivedSession(t *testing.T) {
	removed := mosqtest.Start(t, mosqtest.Options{})
	peer := mosqtest.Start(t, mosqtest.Options{})
	dir := t.TempDir()
	secretPath := filepath.Join(dir, "secret")
	os.WriteFile(secretPath, []byte("a cluster secret of enough bytes\n"), 0o600)
	cfgPath := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: %s}\nagent:\n  state_dir: %s\n  cluster_secret_file: %s\n", peer.Addr, dir, secretPath)), 0o600)
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := cfg.ClusterSecret()
	if err != nil {
		t.Fatal(err)
	}
	id := bridge.NewTopics("it", cfg.Agent.ForwardPrefix).WithIDSecret(secret).LocalID("b9")
	if !strings.HasPrefix(id, "mha-it-b9-local-") {
		t.Fatalf("derived id %q", id)
	}
	c, _ := mqttClient(t, removed.Addr, id, false, nil)
	c.Subscribe("#", 1, nil).WaitTimeout(5 * time.Second)
	c.Disconnect(50)
	out, errOut, code := runCmd(t, "decommission", "--config", cfgPath, "--node", "b9", "--broker", removed.Addr)
	if code != 0 || !strings.Contains(out, removed.Addr+": removed session "+id+"\n") {
		t.Fatalf("decommission: exit %d\n%s%s", code, out, errOut)
	}
	if c, present := mqttClient(t, removed.Addr, id, false, nil); present {
		c.Disconnect(50)
		t.Errorf("the broker still has a session for %s", id)
	}
}
