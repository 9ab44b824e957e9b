package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/sysparse/mosqtest"
)

// The command line an operator meets: help on stdout with exit 0, errors with usage on stderr
// with exit 2, never silence, never an ignored argument.
func TestCLIHelpAndUsageErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "cluster.yaml")
	os.WriteFile(cfg, []byte("cluster: it\nnodes:\n  - {name: b1, address: 127.0.0.1:1}\n"), 0o600)
	cases := []struct {
		name     string
		args     []string
		code     int
		stdout   []string // substrings of stdout
		stderr   []string // substrings of stderr
		quietOut bool     // stdout must be empty
		quietErr bool     // stderr must be empty
	}{
		{"help", []string{"--help"}, 0, []string{"commands:", "agent ", "exit codes:", "2  usage or configuration error"}, nil, false, true},
		{"-h", []string{"-h"}, 0, []string{"commands:"}, nil, false, true},
		{"command help", []string{"agent", "--help"}, 0, []string{"usage: mosquitto-ha agent [flags]", "--log-format", "--node", "exit codes:"}, nil, false, true},
		{"help command", []string{"help", "status"}, 0, []string{"usage: mosquitto-ha status [flags]", "--json"}, nil, false, true},
		{"no command", nil, 2, nil, []string{"usage: mosquitto-ha <command>"}, true, false},
		{"unknown command", []string{"frob"}, 2, nil, []string{`unknown command "frob"`, "commands:"}, true, false},
		{"mistyped flag", []string{"check", "--config", cfg, "--nodee", "b1"}, 2, nil,
			[]string{"mosquitto-ha check: unknown flag: --nodee", "usage: mosquitto-ha check [flags]", "--node"}, true, false},
		{"positional argument", []string{"check", cfg}, 2, nil,
			[]string{fmt.Sprintf("mosquitto-ha check: unexpected argument %q (the cluster file is given with --config %s)", cfg, cfg), "usage: mosquitto-ha check"}, true, false},
		{"bad log format", []string{"agent", "--config", cfg, "--node", "b1", "--log-format", "xml"}, 2, nil,
			[]string{`--log-format "xml": want text or json`}, true, false},
		{"invalid cluster file", []string{"check", "--config", cfg + ".missing"}, 2, nil, []string{"no such file or directory"}, true, false},
		{"unknown node", []string{"agent", "--config", cfg, "--node", "b9"}, 2, nil, []string{`--node "b9": not in nodes (have b1)`}, true, false},
		{"missing node", []string{"agent", "--config", cfg}, 2, nil, []string{"--node: missing (want one of b1)"}, true, false},
		{"valid", []string{"check", "--config", cfg}, 0, []string{"valid"}, nil, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCmd(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if n := strings.Count(out+errOut, "usage: "); n > 1 {
				t.Errorf("usage printed %d times:\n%s%s", n, out, errOut)
			}
			if tc.quietOut && out != "" {
				t.Errorf("stdout not empty:\n%s", out)
			}
			if tc.quietErr && errOut != "" {
				t.Errorf("stderr not empty:\n%s", errOut)
			}
		})
	}
}

// --version names the commit the binary was built from (Go's VCS stamp), and a packaged build
// sets both with -ldflags -X.
func TestCLIVersion(t *testing.T) {
	out, errOut, code := runCmd(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "mosquitto-ha ") || !strings.Contains(out, "(commit ") {
		t.Fatalf("--version: exit %d\n%s%s", code, out, errOut)
	}
	// The commit Go stamped into the binary (none with -buildvcs=false, as GOFLAGS may say).
	info, err := exec.Command("go", "version", "-m", binary).Output()
	if err != nil {
		t.Fatal(err)
	}
	rev := "unknown"
	if m := regexp.MustCompile(`(?m)^\s*build\s+vcs\.revision=(\w+)`).FindSubmatch(info); m != nil {
		rev = string(m[1])
		if regexp.MustCompile(`(?m)^\s*build\s+vcs\.modified=true`).Match(info) {
			rev += "-modified"
		}
	}
	if !strings.Contains(out, "(commit "+rev+", go1.") {
		t.Errorf("--version %q does not name the stamped commit %s", out, rev)
	}
	bin := filepath.Join(t.TempDir(), "mosquitto-ha")
	if b, err := exec.Command("go", "build", "-o", bin, "-ldflags", "-X main.version=9.8.7 -X main.commit=abc123", ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	got, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(got), "mosquitto-ha 9.8.7 (commit abc123, go1.") {
		t.Errorf("--version of a -ldflags -X build: %q, %v", got, err)
	}
}

// --log-format json makes every agent line one JSON object, starting with the version.
func TestCLIAgentLogsJSON(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 1\n"})
	cfg := writeCluster(t, []*mosqtest.Broker{b}, "")
	a := startAgentProcArgs(t, cfg, "b1", "--log-format", "json")
	waitLog(t, a, "advertising exact interest", 15*time.Second)
	a.Stop()
	lines := strings.Split(strings.TrimSpace(a.Out.String()), "\n")
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON line: %q (%v)", line, err)
		}
	}
	var first map[string]any
	json.Unmarshal([]byte(lines[0]), &first)
	if first["msg"] != "mosquitto-ha starting" || first["version"] == nil || first["commit"] == nil {
		t.Errorf("first line %q: want the version and commit", lines[0])
	}
}

// `status` connects the way the agent does: a broker that accepts only TLS is up when its
// agent is, a broker that refuses the agent's password is reported as refusing it, and only an
// absent broker is unreachable.
func TestStatusOverTLSAndRefusedPassword(t *testing.T) {
	dir := t.TempDir()
	ca, sc, sk, cc, ck := pki(t, dir)
	tlsBroker := mosqtest.Start(t, mosqtest.Options{Extra: fmt.Sprintf("sys_interval 1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n", ca, sc, sk)})
	passwd := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", passwd, "mha-agent", "the-brokers-password").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd (apt-get install -y mosquitto): %v %s", err, out)
	}
	pwBroker := mosqtest.Start(t, mosqtest.Options{Extra: fmt.Sprintf("sys_interval 1\nallow_anonymous false\npassword_file %s\n", passwd)})
	absent := fmt.Sprintf("127.0.0.1:%d", mosqtest.FreePort(t))
	pwFile := filepath.Join(dir, "agent.pw")
	os.WriteFile(pwFile, []byte("not-the-password\n"), 0o600)

	cfg := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`cluster: it
nodes:
  - {name: b1, address: %s, tls: {ca: %s, cert: %s, key: %s}}
  - {name: b2, address: %s}
  - {name: b3, address: %s}
agent:
  username: mha-agent
  password_file: %s
  state_dir: %s
  keepalive: 2s
  snapshot_interval: 200ms
`, tlsBroker.Addr, ca, cc, ck, pwBroker.Addr, absent, pwFile, t.TempDir())), 0o600)

	a := startAgentProc(t, cfg, "b1")
	waitLog(t, a, "advertising exact interest", 15*time.Second)
	var out, errOut string
	var code int
	ok := func() bool {
		return regexp.MustCompile(`(?m)^b1\s+up\s+up `).MatchString(out) &&
			regexp.MustCompile(`(?m)^b2\s+refused\s+-.*(bad user name or password|not authorised): the broker refuses the agent's`).MatchString(out) &&
			regexp.MustCompile(`(?m)^b3\s+down\s+-.*unreachable`).MatchString(out)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if out, errOut, code = runCmd(t, "status", "--config", cfg); ok() {
			break
		}
	}
	if code != 1 || !ok() {
		t.Fatalf("status: exit %d (want 1: b2 and b3 are not healthy)\n%s%s\nagent:\n%s", code, out, errOut, a.Out.String())
	}
	js, _, _ := runCmd(t, "status", "--config", cfg, "--json")
	var health []nodeHealth
	if err := json.Unmarshal([]byte(js), &health); err != nil || len(health) != 3 {
		t.Fatalf("status --json: %v\n%s", err, js)
	}
	if h := health[1]; h.Broker != brokerRefused || h.BrokerUp {
		t.Errorf("b2 in JSON: %+v, want broker %q", h, brokerRefused)
	}
	if h := health[0]; h.Broker != brokerUp || h.Agent == nil || !h.Agent.AgentUp {
		t.Errorf("b1 in JSON: %+v, want broker and agent up", h)
	}

	// The same broker with the right password: up, so the refusal above was the password.
	os.WriteFile(pwFile, []byte("the-brokers-password\n"), 0o600)
	out, errOut, _ = runCmd(t, "status", "--config", cfg)
	if !regexp.MustCompile(`(?m)^b2\s+up\s+-.*no agent status`).MatchString(out) {
		t.Errorf("status with the right password:\n%s%s", out, errOut)
	}

	// A killed agent: its will says down, and status shows no counters or interest for it
	// (not zeros and "exact").
	a.Kill()
	down := regexp.MustCompile(`(?m)^b1\s+up\s+down since \S+\s+\S+( \S+)?\s+-\s+-\s+-.*agent down \d+s ago`)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if out, errOut, _ = runCmd(t, "status", "--config", cfg); down.MatchString(out) {
			return
		}
	}
	t.Errorf("status after kill -9 of b1's agent:\n%s%s", out, errOut)
}

// A SIGHUP against a running agent: a file that changes restart-only keys is refused, names
// each of them and changes nothing; a file that changes a limit is applied and the new limit
// holds at once.
func TestAgentReloadAppliesAndRefuses(t *testing.T) {
	dir := t.TempDir()
	ca, _, _, _, _ := pki(t, dir)
	brokers := []*mosqtest.Broker{
		mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 1\n"}),
		mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 1\n"}),
	}
	cfg := writeCluster(t, brokers, "")
	good, _ := os.ReadFile(cfg)
	metricsPort := mosqtest.FreePort(t)
	b1 := startAgentProcArgs(t, cfg, "b1", "--metrics", fmt.Sprintf("127.0.0.1:%d", metricsPort))
	b2 := startAgentProc(t, cfg, "b2")
	waitLog(t, b1, "advertising exact interest", 15*time.Second)
	waitLog(t, b2, "advertising exact interest", 15*time.Second)
	metric := func(name string) string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`).FindStringSubmatch(getMetrics(t, metricsPort))
		if m == nil {
			t.Fatalf("metrics lack %s", name)
		}
		return m[1] + " " + m[2]
	}
	if got := metric("mosquitto_ha_build_info"); !strings.Contains(got, `commit="`) || !strings.HasSuffix(got, " 1") {
		t.Errorf("mosquitto_ha_build_info = %q", got)
	}
	if got := metric("mosquitto_ha_config_last_reload_successful"); got != " 1" {
		t.Errorf("before any reload: last_reload_successful %q, want 1", got)
	}
	started := time.Now().Unix()

	got := make(chan string, 100)
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + brokers[0].Addr).SetClientID("hup-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(10)
	sub.Subscribe("hup/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }).WaitTimeout(5 * time.Second)
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + brokers[1].Addr).SetClientID("hup-pub"))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(10)
	// relayed publishes one payload after another from b2 to b1's subscriber and returns what arrives.
	relayed := func(payloads ...string) []string {
		t.Helper()
		for len(got) > 0 {
			<-got
		}
		for _, p := range payloads {
			pub.Publish("hup/x", 1, false, p).WaitTimeout(5 * time.Second)
		}
		var out []string
		last := payloads[len(payloads)-1]
		for deadline := time.After(10 * time.Second); ; {
			select {
			case p := <-got:
				out = append(out, p)
				if p == last {
					return out
				}
			case <-deadline:
				t.Fatalf("%q never arrived on b1 (got %q):\n%s", last, out, b1.Out.String())
			}
		}
	}
	long := strings.Repeat("x", 100)
	// b1's subscription reaches b2's agent; then a 100-byte relay arrives.
	for deadline := time.Now().Add(10 * time.Second); ; {
		pub.Publish("hup/x", 1, false, "warm-up").WaitTimeout(5 * time.Second)
		select {
		case <-got:
		case <-time.After(300 * time.Millisecond):
			if time.Now().Before(deadline) {
				continue
			}
			t.Fatalf("no relay from b2 to b1:\n%s", b1.Out.String())
		}
		break
	}
	if out := relayed(long, "short"); len(out) != 2 || out[0] != long {
		t.Fatalf("before any reload: got %q, want the long payload then the short one", out)
	}

	// Restart-only keys: refused, each named, nothing applied (not even the limit beside them).
	refused := strings.Replace(string(good), "  snapshot_interval: 200ms\n", "  snapshot_interval: 300ms\n  limits: {max_payload_bytes: 10}\n", 1)
	refused = strings.Replace(refused, fmt.Sprintf("address: %s}", brokers[1].Addr), fmt.Sprintf("address: %s, tls: {ca: %s}}", brokers[1].Addr, ca), 1)
	os.WriteFile(cfg, []byte(refused), 0o600)
	b1.Signal(syscall.SIGHUP)
	waitLog(t, b1, "these keys need an agent restart", 5*time.Second)
	line := lastLine(b1.Out.String(), "these keys need an agent restart")
	for _, key := range []string{"agent.snapshot_interval", "nodes[1].tls"} {
		if !strings.Contains(line, key) {
			t.Errorf("refused reload does not name %s:\n%s", key, line)
		}
	}
	if strings.Contains(line, "max_payload_bytes") {
		t.Errorf("refused reload names a key it could apply:\n%s", line)
	}
	if out := relayed(long, "short after refusal"); len(out) != 2 || out[0] != long {
		t.Fatalf("after a refused reload: got %q, want the long payload still relayed", out)
	}
	if got := metric("mosquitto_ha_config_last_reload_successful"); got != " 0" {
		t.Errorf("after a refused reload: last_reload_successful %q, want 0", got)
	}

	// A live key alone: applied, named, and in force for the next relay.
	applied := strings.Replace(string(good), "  snapshot_interval: 200ms\n", "  snapshot_interval: 200ms\n  limits: {max_payload_bytes: 10}\n", 1)
	os.WriteFile(cfg, []byte(applied), 0o600)
	b1.Signal(syscall.SIGHUP)
	waitLog(t, b1, "configuration reloaded", 5*time.Second)
	if line := lastLine(b1.Out.String(), "configuration reloaded"); !strings.Contains(line, "applied=agent.limits.max_payload_bytes") {
		t.Errorf("reload does not name the applied key:\n%s", line)
	}
	if out := relayed(long, "short"); len(out) != 1 || out[0] != "short" {
		t.Fatalf("after reloading max_payload_bytes 10: got %q, want only the short payload", out)
	}
	if got := metric("mosquitto_ha_config_last_reload_successful"); got != " 1" {
		t.Errorf("after an applied reload: last_reload_successful %q, want 1", got)
	}
	var at int64
	fmt.Sscan(metric("mosquitto_ha_config_last_reload_success_timestamp_seconds"), &at)
	if at < started {
		t.Errorf("last_reload_success_timestamp_seconds %d, want the applied reload's time (>= %d)", at, started)
	}
}

func lastLine(s, containing string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], containing) {
			return lines[i]
		}
	}
	return ""
}
