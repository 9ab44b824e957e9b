package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/sysparse/mosqtest"
)

// binary is the mosquitto-ha binary built once for the process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mosquitto-ha-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mosquitto-ha")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// writeCluster writes a cluster file for brokers named b1..bN.
func writeCluster(t *testing.T, brokers []*mosqtest.Broker, extra string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("cluster: it\nnodes:\n")
	for i, br := range brokers {
		fmt.Fprintf(&b, "  - {name: b%d, address: %s}\n", i+1, br.Addr)
	}
	fmt.Fprintf(&b, "agent:\n  state_dir: %s\n  keepalive: 2s\n  snapshot_interval: 200ms\n%s", t.TempDir(), extra)
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// startAgentCluster starts n brokers with persistence and an agent process beside each, and
// waits until every agent advertises exact interest.
func startAgentCluster(t *testing.T, n int) ([]*mosqtest.Broker, string, []*mosqtest.Proc) {
	t.Helper()
	var brokers []*mosqtest.Broker
	for i := 0; i < n; i++ {
		brokers = append(brokers, mosqtest.Start(t, mosqtest.Options{Persistence: true, Extra: "sys_interval 1\n"}))
	}
	cfg := writeCluster(t, brokers, "")
	agents := make([]*mosqtest.Proc, n)
	for i := range agents {
		agents[i] = startAgentProc(t, cfg, fmt.Sprintf("b%d", i+1))
	}
	for _, a := range agents {
		waitLog(t, a, "advertising exact interest", 15*time.Second)
	}
	return brokers, cfg, agents
}

func startAgentProc(t *testing.T, config, node string) *mosqtest.Proc {
	t.Helper()
	return startAgentProcArgs(t, config, node)
}

func waitLog(t *testing.T, p *mosqtest.Proc, text string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Out.String(), text) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("agent did not log %q within %s:\n%s", text, limit, p.Out.String())
}

func TestCheckProbesBroker(t *testing.T) {
	good := mosqtest.Start(t, mosqtest.Options{})
	bad := mosqtest.Start(t, mosqtest.Options{NoLogConf: true})
	cfg := writeCluster(t, []*mosqtest.Broker{good, bad}, "")

	out, errOut, code := runCmd(t, "check", "--config", cfg, "--node", "b1")
	if code != 0 || !strings.Contains(out, "publishes every log line the agent needs") {
		t.Errorf("check of a configured broker: exit %d\n%s%s", code, out, errOut)
	}
	_, errOut, code = runCmd(t, "check", "--config", cfg, "--node", "b2")
	if code != 1 {
		t.Errorf("check of a broker without log_dest topic: exit %d, want 1", code)
	}
	// The fix is every line the tests' own brokers run with.
	for _, want := range strings.Split(strings.TrimSpace(mosqtest.LogConf), "\n") {
		if !strings.Contains(errOut, want+"\n") {
			t.Errorf("check output lacks the fix line %q:\n%s", want, errOut)
		}
	}
	// The agent runs the same probe and refuses to start blind.
	_, errOut, code = runCmd(t, "agent", "--config", cfg, "--node", "b2")
	if code != 1 || !strings.Contains(errOut, "log_dest topic") {
		t.Errorf("agent next to a broker without log lines: exit %d, want 1 with the fix:\n%s", code, errOut)
	}
}

// Contract 8 with a real crash: kill -9 of the agents mid-stream loses no acknowledged QoS 1
// message, and the restarted agent still draws messages for clients that stayed connected.
func TestAgentKill9MidStream(t *testing.T) {
	brokers, cfg, agents := startAgentCluster(t, 3)

	var mu sync.Mutex
	seen := map[string]int{}
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + brokers[1].Addr).SetClientID("kill9-sub").
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			mu.Lock()
			seen[string(m.Payload())]++
			mu.Unlock()
		}))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(10)
	if tok := sub.Subscribe("kill9/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	time.Sleep(time.Second) // the subscription reaches every peer

	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + brokers[0].Addr).SetClientID("kill9-pub"))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(10)
	const total = 1500
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := 0; k < total; k++ {
			pub.Publish("kill9/x", 1, false, fmt.Sprint(k)).WaitTimeout(5 * time.Second)
			time.Sleep(500 * time.Microsecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	agents[1].Kill() // the subscriber's side
	agents[1] = startAgentProc(t, cfg, "b2")
	time.Sleep(200 * time.Millisecond)
	agents[0].Kill() // the publisher's side
	agents[0] = startAgentProc(t, cfg, "b1")
	<-done

	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for k := 0; k < total; k++ {
			if seen[fmt.Sprint(k)] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never arrived after kill -9 of two agents\nb1: %s\nb2: %s",
				missing, total, agents[0].Out.String(), agents[1].Out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(agents[1].Out.String(), "interest restored from state file") {
		t.Errorf("restarted b2 agent did not restore its interest:\n%s", agents[1].Out.String())
	}
	// SIGTERM ends an agent cleanly.
	agents[2].Stop()
	if !strings.Contains(agents[2].Out.String(), "agent stopped") {
		t.Errorf("SIGTERM did not stop the agent cleanly:\n%s", agents[2].Out.String())
	}
}

// SIGHUP adds a node while running; an invalid file is refused and the agent keeps running.
// The metrics endpoint shows the new peer.
func TestAgentReloadAndMetrics(t *testing.T) {
	var brokers []*mosqtest.Broker
	for i := 0; i < 3; i++ {
		brokers = append(brokers, mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 1\n"}))
	}
	cfg := writeCluster(t, brokers[:2], "  buffer_bytes: 1000000\n")
	metricsPort := mosqtest.FreePort(t)
	b1 := startAgentProcArgs(t, cfg, "b1", "--metrics", fmt.Sprintf("127.0.0.1:%d", metricsPort))
	waitLog(t, b1, "advertising exact interest", 15*time.Second)
	if m := getMetrics(t, metricsPort); !strings.Contains(m, `mosquitto_ha_peer_up{node="b1",peer="b2"} 1`) {
		t.Fatalf("metrics lack b2 up:\n%s", m)
	}

	// An invalid file is refused and changes nothing.
	good, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(append([]byte{}, good...), "bogus_key: 1\n"...), 0o600)
	if err := b1.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	waitLog(t, b1, "reload refused", 5*time.Second)

	// A third node joins the file; b1 links to it without a restart.
	withB3 := strings.Replace(string(good), "agent:\n", fmt.Sprintf("  - {name: b3, address: %s}\nagent:\n", brokers[2].Addr), 1)
	os.WriteFile(cfg, []byte(withB3), 0o600)
	b3 := startAgentProc(t, cfg, "b3")
	waitLog(t, b3, "advertising exact interest", 15*time.Second)
	if err := b1.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	waitLog(t, b1, "peer added", 5*time.Second)

	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + brokers[2].Addr).SetClientID("reload-sub"))
	got := make(chan string, 1)
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(10)
	sub.Subscribe("reload/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }).WaitTimeout(5 * time.Second)
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + brokers[0].Addr).SetClientID("reload-pub"))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(10)
	deadline := time.After(10 * time.Second)
	for {
		pub.Publish("reload/x", 1, false, "hello b3").WaitTimeout(time.Second)
		select {
		case p := <-got:
			if p != "hello b3" {
				t.Fatalf("got %q", p)
			}
			if m := getMetrics(t, metricsPort); !strings.Contains(m, `mosquitto_ha_peer_up{node="b1",peer="b3"} 1`) {
				t.Errorf("metrics lack b3 up:\n%s", m)
			}
			// `status` shows the whole cluster: b1 and b3 with agents up and both peers, b2 a
			// broker whose agent never ran, so it exits 1.
			time.Sleep(2500 * time.Millisecond) // agents refresh their status every 2 s
			out, errOut, code := runCmd(t, "status", "--config", cfg)
			if code != 1 || !regexp.MustCompile(`(?m)^b1\s+up\s+up .*2/2`).MatchString(out) ||
				!regexp.MustCompile(`(?m)^b2\s+up\s+-.*no agent status`).MatchString(out) {
				t.Errorf("status: exit %d (want 1: b2 has no agent)\n%s%s", code, out, errOut)
			}
			checkBufferAndLocalMetrics(t, metricsPort, brokers, pub)
			return
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("a publish on b1 never reached b3 after the reload:\n%s", b1.Out.String())
		}
	}
}

// checkBufferAndLocalMetrics: relays for a peer that is down count in its buffered bytes,
// against the configured limit; the local broker's loss shows as local_broker_up 0.
func checkBufferAndLocalMetrics(t *testing.T, port int, brokers []*mosqtest.Broker, pub mqtt.Client) {
	t.Helper()
	waitMetric := func(what string, ok func(m string) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			m := getMetrics(t, port)
			if ok(m) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("metrics never showed %s:\n%s", what, m)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	has := func(line string) func(string) bool {
		return func(m string) bool { return strings.Contains(m, line+"\n") }
	}
	waitMetric("the local broker up", has(`mosquitto_ha_local_broker_up{node="b1"} 1`))
	waitMetric("b2's buffer limit from agent.buffer_bytes", has(`mosquitto_ha_peer_buffer_limit_bytes{node="b1",peer="b2"} 1e+06`))
	brokers[1].Stop()
	waitMetric("b2 down", has(`mosquitto_ha_peer_up{node="b1",peer="b2"} 0`))
	payload := strings.Repeat("x", 1000)
	for i := 0; i < 3; i++ {
		pub.Publish("buffered/x", 1, false, payload).WaitTimeout(time.Second)
	}
	// b2's interest is unknown (no agent): all three wait for it in its buffer, which counts
	// their payloads.
	waitMetric("3 relays and 3000 bytes buffered for b2", func(m string) bool {
		return strings.Contains(m, `mosquitto_ha_peer_buffered_relays{node="b1",peer="b2"} 3`+"\n") &&
			strings.Contains(m, `mosquitto_ha_peer_buffered_bytes{node="b1",peer="b2"} 3000`+"\n")
	})
	brokers[0].Stop()
	waitMetric("the local broker down", has(`mosquitto_ha_local_broker_up{node="b1"} 0`))
}

func startAgentProcArgs(t *testing.T, config, node string, extra ...string) *mosqtest.Proc {
	t.Helper()
	args := append([]string{"agent", "--config", config, "--node", node, "--log-level", "debug"}, extra...)
	return mosqtest.StartProc(t, exec.Command(binary, args...))
}

func getMetrics(t *testing.T, port int) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Contract 9: with the printed ACL, a client without the cluster's credentials cannot inject
// relays; without it, check warns.
func TestACLStopsInjection(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	if out, err := exec.Command(mosqtest.LookPath(t, "mosquitto_passwd", mosqtest.InstallHint), "-b", "-c", passwd, "mha-agent", "s3cret-agent").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	pwFile := filepath.Join(dir, "agent.pw")
	os.WriteFile(pwFile, []byte("s3cret-agent\n"), 0o600)
	port := mosqtest.FreePort(t)
	cfgPath := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: 127.0.0.1:%d}\nagent:\n  username: mha-agent\n  password_file: %s\n", port, pwFile)), 0o600)

	aclText, errOut, code := runCmd(t, "mosquitto", "--config", cfgPath, "--node", "b1", "--acl")
	if code != 0 {
		t.Fatalf("--acl: exit %d: %s", code, errOut)
	}
	acl := filepath.Join(dir, "mosquitto-ha.acl")
	os.WriteFile(acl, []byte(aclText), 0o600)
	mosqtest.Start(t, mosqtest.Options{Port: port, Extra: fmt.Sprintf("password_file %s\nacl_file %s\n", passwd, acl)})
	out, errOut, code := runCmd(t, "check", "--config", cfgPath, "--node", "b1")
	if code != 0 || strings.Contains(errOut, "WARNING") {
		t.Fatalf("check with the ACL: exit %d\n%s%s", code, out, errOut)
	}
	// Nor can it read the cluster's control and relay topics: what the agent account publishes
	// there never reaches an anonymous subscriber, while it does reach the agent account.
	readers := map[string]chan string{}
	for _, who := range []string{"anonymous", "agent"} {
		got := make(chan string, 10)
		o := mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", port)).SetClientID("acl-read-" + who)
		if who == "agent" {
			o.SetUsername("mha-agent").SetPassword("s3cret-agent")
		}
		c := mqtt.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s reader: %v", who, tok.Error())
		}
		defer c.Disconnect(10)
		c.SubscribeMultiple(map[string]byte{"$HA/#": 1, "$forward/#": 1}, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() }).WaitTimeout(5 * time.Second)
		readers[who] = got
	}
	writer := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", port)).
		SetClientID("acl-writer").SetUsername("mha-agent").SetPassword("s3cret-agent"))
	if tok := writer.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer writer.Disconnect(10)
	writer.Publish("$HA/it/b1/interest/delta", 1, false, "x").WaitTimeout(5 * time.Second)
	writer.Publish("$forward/secret", 1, false, "y").WaitTimeout(5 * time.Second)
	for i := 0; i < 2; i++ {
		select {
		case <-readers["agent"]:
		case <-time.After(5 * time.Second):
			t.Fatal("the agent account did not read the cluster's topics: the ACL is too strict")
		}
	}
	select {
	case topic := <-readers["anonymous"]:
		t.Errorf("an anonymous client read %q", topic)
	case <-time.After(300 * time.Millisecond):
	}

	open := mosqtest.Start(t, mosqtest.Options{Extra: fmt.Sprintf("password_file %s\n", passwd)})
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: %s}\nagent:\n  username: mha-agent\n  password_file: %s\n", open.Addr, pwFile)), 0o600)
	_, errOut, _ = runCmd(t, "check", "--config", cfgPath, "--node", "b1")
	if !strings.Contains(errOut, "WARNING (forward prefix open): a client without credentials can publish") {
		t.Fatalf("check without the ACL did not warn:\n%s", errOut)
	}
}

// scripts/install.sh puts the binary, the unit and the config in place, keeps the previous
// binary, and rolls back to it.
func TestInstallScript(t *testing.T) {
	root := t.TempDir()
	install := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("bash", append([]string{"../../scripts/install.sh", "--root", root}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	install("--node", "b1", "--config", "../../testdata/config/valid-lab.yaml")
	bin := filepath.Join(root, "usr/local/bin/mosquitto-ha")
	if out, _ := exec.Command(bin, "check", "--config", filepath.Join(root, "etc/mosquitto-ha/cluster.yaml")).CombinedOutput(); !strings.Contains(string(out), "valid") {
		t.Errorf("installed binary and config do not check: %s", out)
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/mosquitto-ha@.service"))
	for _, want := range []string{"After=network-online.target mosquitto.service", "Restart=on-failure",
		"RestartPreventExitStatus=2", "User=mosquitto-ha", "EnvironmentFile=-/etc/default/mosquitto-ha",
		"ExecStart=/usr/local/bin/mosquitto-ha agent --config /etc/mosquitto-ha/cluster.yaml --node %i $ARGS\n"} {
		if err != nil || !strings.Contains(string(unit), want) {
			t.Errorf("unit file lacks %q: %v\n%s", want, err, unit)
		}
	}
	// The unit used to run with DynamicUser=yes, a user that could not read the root-only
	// cluster file: "permission denied", restarted forever. The user is now fixed and the file
	// is the group's to read, nobody else's.
	if strings.Contains(string(unit), "DynamicUser") {
		t.Errorf("unit file runs as a dynamic user that cannot read the cluster file")
	}
	for path, want := range map[string]os.FileMode{"etc/mosquitto-ha/cluster.yaml": 0o640, "etc/mosquitto-ha": 0o750 | os.ModeDir} {
		if st, err := os.Stat(filepath.Join(root, path)); err != nil {
			t.Error(err)
		} else if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, st.Mode(), want)
		}
	}
	if def, err := os.ReadFile(filepath.Join(root, "etc/default/mosquitto-ha")); err != nil || !strings.Contains(string(def), "\nARGS=") {
		t.Errorf("/etc/default/mosquitto-ha: %v\n%s", err, def)
	}
	if snip, err := os.ReadFile(filepath.Join(root, "etc/mosquitto-ha/mosquitto-b1.conf.snippet")); err != nil || !strings.Contains(string(snip), "log_dest topic") {
		t.Errorf("mosquitto snippet: %v", err)
	}
	// An upgrade keeps the previous binary; rollback restores it.
	os.WriteFile(bin, []byte("#!/bin/sh\necho old\n"), 0o755)
	install("--node", "b1")
	if old, _ := os.ReadFile(bin + ".previous"); !strings.Contains(string(old), "echo old") {
		t.Fatalf("upgrade did not keep the previous binary")
	}
	install("--rollback")
	if out, _ := exec.Command(bin).Output(); strings.TrimSpace(string(out)) != "old" {
		t.Errorf("rollback did not restore the previous binary: %q", out)
	}
}
