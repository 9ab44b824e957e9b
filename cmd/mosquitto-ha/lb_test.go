package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/sysparse/mosqtest"
)

// authCluster starts a broker that requires a password, with the ACL `mosquitto --acl` prints,
// and writes a cluster file with one plain HAProxy host (no vip) whose health check has an
// account of its own. Accounts: mha-agent, hc-account (the check), alice (an ordinary user).
func authCluster(t *testing.T) (cfgPath string, b *mosqtest.Broker) {
	t.Helper()
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	for i, u := range []string{"mha-agent", "hc-account", "alice"} {
		args := []string{"-b", passwd, u, "pw-" + u}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd (apt-get install -y mosquitto): %v %s", err, out)
		}
	}
	for _, u := range []string{"mha-agent", "hc-account"} {
		os.WriteFile(filepath.Join(dir, u+".pw"), []byte("pw-"+u+"\n"), 0o600)
	}
	port := mosqtest.FreePort(t)
	cfgPath = filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`cluster: it
nodes:
  - {name: b1, address: 127.0.0.1:%d}
agent:
  username: mha-agent
  password_file: %s/mha-agent.pw
load_balancer:
  listen: 127.0.0.1:%d
  stats_socket: %s/admin.sock
  health_check: {username: hc-account, password_file: %s/hc-account.pw}
  hosts:
    - {name: lb1, address: 127.0.0.1}
`, port, dir, mosqtest.FreePort(t), dir, dir)), 0o600)
	acl, errOut, code := runCmd(t, "mosquitto", "--config", cfgPath, "--node", "b1", "--acl")
	if code != 0 {
		t.Fatalf("--acl: exit %d: %s", code, errOut)
	}
	os.WriteFile(filepath.Join(dir, "acl"), []byte(acl), 0o600)
	b = mosqtest.Start(t, mosqtest.Options{Port: port, Extra: fmt.Sprintf("allow_anonymous false\npassword_file %s\nacl_file %s/acl\n", passwd, dir)})
	return cfgPath, b
}

// One HAProxy host without a VIP is a valid cluster file; haproxy.cfg logs its check in with
// the check's own account, never the agent's, is written 0640 and passes `haproxy -c`; the
// keepalived command says there is nothing to generate.
func TestHAProxySingleHostOwnCheckAccount(t *testing.T) {
	cfgPath, b := authCluster(t)
	if out, errOut, code := runCmd(t, "check", "--config", cfgPath); code != 0 {
		t.Fatalf("check of a single load balancer host: exit %d\n%s%s", code, out, errOut)
	}
	cfgFile := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(cfgFile, []byte("old, world readable"), 0o644)
	if out, errOut, code := runCmd(t, "haproxy", "--config", cfgPath, "--output", cfgFile); code != 0 || out != "" {
		t.Fatalf("haproxy --output: exit %d\n%s%s", code, out, errOut)
	}
	if st, err := os.Stat(cfgFile); err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("haproxy.cfg: %v, mode %v, want 0640", err, st.Mode())
	}
	text, _ := os.ReadFile(cfgFile)
	for _, secret := range []string{"mha-agent", "pw-mha-agent"} {
		if bytes.Contains(text, []byte(hex.EncodeToString([]byte(secret)))) {
			t.Errorf("haproxy.cfg holds the agent's %q (hex)", secret)
		}
	}
	if out, err := exec.Command("haproxy", "-c", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c (apt-get install -y haproxy): %v\n%s", err, out)
	}
	// The check's CONNECT, sent as HAProxy sends it, gets "accepted" from the broker that
	// requires a password: the account works.
	m := regexp.MustCompile(`tcp-check send-binary ([0-9a-f]+)\n`).FindSubmatch(text)
	if m == nil {
		t.Fatalf("no tcp-check send-binary in haproxy.cfg:\n%s", text)
	}
	connect, _ := hex.DecodeString(string(m[1]))
	if !bytes.Contains(connect, []byte("hc-account")) || !bytes.Contains(connect, []byte("pw-hc-account")) {
		t.Errorf("the check's CONNECT does not log in as hc-account")
	}
	conn, err := net.DialTimeout("tcp", b.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write(connect)
	connack := make([]byte, 4)
	if _, err := io.ReadFull(conn, connack); err != nil || hex.EncodeToString(connack) != "20020000" {
		t.Errorf("the check's CONNECT got %x (%v), want CONNACK accepted 20020000", connack, err)
	}

	out, errOut, code := runCmd(t, "keepalived", "--config", cfgPath, "--lb", "lb1")
	if code != 0 || out != "" || !strings.Contains(errOut, "no keepalived.conf to generate") {
		t.Errorf("keepalived without a vip: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// The health check's password is in haproxy.cfg: its account can read and write nothing, while
// an ordinary account can (the same 'pattern readwrite #' line would otherwise cover both).
func TestHealthCheckAccountHasNoTopicRights(t *testing.T) {
	_, b := authCluster(t)
	client := func(user, id string, got chan<- string) mqtt.Client {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr).SetClientID(id).
			SetUsername(user).SetPassword("pw-" + user).SetAutoReconnect(false)
		c := mqtt.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: %v", user, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(10) })
		if got != nil {
			c.Subscribe("#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() }).WaitTimeout(5 * time.Second)
		}
		return c
	}
	aliceGot, hcGot := make(chan string, 10), make(chan string, 10)
	alice := client("alice", "alice", aliceGot)
	hc := client("hc-account", "hc", hcGot)

	hc.Publish("plant/from-hc", 1, false, "x").WaitTimeout(5 * time.Second)
	alice.Publish("plant/from-alice", 1, false, "y").WaitTimeout(5 * time.Second)
	select {
	case topic := <-aliceGot:
		if topic != "plant/from-alice" {
			t.Errorf("alice got %q: the check account could publish", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alice did not get her own publish: the ACL is too strict for ordinary accounts")
	}
	select {
	case topic := <-hcGot:
		t.Errorf("the check account read %q", topic)
	case topic := <-aliceGot:
		t.Errorf("alice got %q: the check account could publish", topic)
	case <-time.After(500 * time.Millisecond):
	}
}
