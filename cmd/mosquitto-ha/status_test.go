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

	"mosquitto-ha/sysparse/mosqtest"
)

// setPassword writes mha-agent's password into a Mosquitto password file.
func setPassword(t *testing.T, passwd, password string, create bool) {
	t.Helper()
	args := []string{"-b", passwd, "mha-agent", password}
	if create {
		args = append([]string{"-c"}, args...)
	}
	if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd (%s): %v %s", mosqtest.InstallHint, err, out)
	}
}

// waitStatus runs `status` until its output matches re, and returns it.
func waitStatus(t *testing.T, cfg string, re *regexp.Regexp, within time.Duration, what string) string {
	t.Helper()
	var out, errOut string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if out, errOut, _ = runCmd(t, "status", "--config", cfg); re.MatchString(out) {
			return out
		}
	}
	t.Fatalf("status: %s: no line matching %s within %s:\n%s%s", what, re, within, out, errOut)
	return ""
}

func statusJSON(t *testing.T, cfg string) []nodeHealth {
	t.Helper()
	js, errOut, _ := runCmd(t, "status", "--config", cfg, "--json")
	var health []nodeHealth
	if err := json.Unmarshal([]byte(js), &health); err != nil {
		t.Fatalf("status --json: %v\n%s%s", err, js, errOut)
	}
	return health
}

// A running agent shows its version and uptime; a killed one (kill -9) shows since when it is
// down, from its last live status (its will carries no time), within the 2 s refresh.
func TestStatusVersionUptimeDownSince(t *testing.T) {
	brokers := []*mosqtest.Broker{
		mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 1\n"}),
		mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 1\n"}),
	}
	cfg := writeCluster(t, brokers, "")
	b1 := startAgentProc(t, cfg, "b1")
	b2 := startAgentProc(t, cfg, "b2")
	waitLog(t, b1, "advertising exact interest", 15*time.Second)
	waitLog(t, b2, "advertising exact interest", 15*time.Second)
	ver, _, _ := runCmd(t, "--version") // "mosquitto-ha <version> (commit <rev>, go...)"
	version := strings.Fields(ver)[1]

	// Uptime grows past the first refresh: at least 2 s once the agent has run 3 s.
	time.Sleep(3 * time.Second)
	row := regexp.MustCompile(`(?m)^b1\s+up\s+up \d+s ago\s+` + regexp.QuoteMeta(version) + `( \S+)?\s+([2-9]|\d\d)s\s+1/1\s`)
	waitStatus(t, cfg, row, 10*time.Second, "running agent with version and uptime")
	h := statusJSON(t, cfg)[0]
	if h.Agent == nil || h.Agent.Version == "" || h.Agent.Started.IsZero() || h.Agent.Time.Sub(h.Agent.Started) < 2*time.Second || !h.DownSince.IsZero() {
		t.Fatalf("status --json b1: %+v, want version, started 2 s or more before its time, no down_since", h.Agent)
	}

	killed := time.Now()
	b1.Kill()
	out := waitStatus(t, cfg, regexp.MustCompile(`(?m)^b1\s+up\s+down since \S+\s+`+regexp.QuoteMeta(version)+`.*agent down \d+s ago`), 15*time.Second, "killed agent")
	h = statusJSON(t, cfg)[0]
	// The last live status is at most one refresh (2 s) older than the kill.
	if h.DownSince.IsZero() || h.DownSince.After(killed) || killed.Sub(h.DownSince) > 2500*time.Millisecond {
		t.Errorf("down_since %v, killed at %v: want within 2.5 s before the kill\n%s", h.DownSince, killed, out)
	}
	if h.Agent == nil || h.Agent.AgentUp || h.LastSeen == nil || !h.LastSeen.AgentUp {
		t.Errorf("status --json b1: agent %+v last_seen %+v: want the will and a live last status", h.Agent, h.LastSeen)
	}
	// A clean stop says when it stopped.
	stopped := time.Now()
	b2.Stop()
	waitStatus(t, cfg, regexp.MustCompile(`(?m)^b2\s+up\s+down since `), 10*time.Second, "stopped agent")
	if h := statusJSON(t, cfg)[1]; h.DownSince.Before(stopped) || time.Since(h.DownSince) > 10*time.Second {
		t.Errorf("b2 stopped at %v: down_since %v", stopped, h.DownSince)
	}
}

// Permanent versus transient local failures while running: when the broker reloads a password
// file that no longer holds the agent's password (SIGHUP), the broker drops the agent; the agent
// keeps running and retrying, logs the refusal once at error, sets
// mosquitto_ha_local_broker_auth_refused, and shows it in status (through its last live status on
// the peer's broker, since its own broker refuses it); when the password comes back it
// reconnects by itself.
func TestAgentLocalPasswordRefusedWhileRunning(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	setPassword(t, passwd, "agent-pw", true)
	b1 := mosqtest.Start(t, mosqtest.Options{Extra: fmt.Sprintf("sys_interval 1\nallow_anonymous false\npassword_file %s\n", passwd)})
	b2 := mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 1\n"})
	pwFile := filepath.Join(dir, "agent.pw")
	os.WriteFile(pwFile, []byte("agent-pw\n"), 0o600)
	cluster := func(pwFile string) string {
		path := filepath.Join(t.TempDir(), "cluster.yaml")
		os.WriteFile(path, []byte(fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: %s}\n  - {name: b2, address: %s}\n"+
			"agent:\n  username: mha-agent\n  password_file: %s\n  state_dir: %s\n  keepalive: 2s\n  snapshot_interval: 200ms\n",
			b1.Addr, b2.Addr, pwFile, t.TempDir())), 0o600)
		return path
	}
	cfg := cluster(pwFile)
	port := mosqtest.FreePort(t)
	a := startAgentProcArgs(t, cfg, "b1", "--metrics", fmt.Sprintf("127.0.0.1:%d", port))
	waitLog(t, a, "advertising exact interest", 15*time.Second)
	refusedMetric := func(v int) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`(?m)^mosquitto_ha_local_broker_auth_refused\{node="b1"\} %d$`, v))
	}
	if m := getMetrics(t, port); !refusedMetric(0).MatchString(m) {
		t.Fatalf("before the reload: want mosquitto_ha_local_broker_auth_refused 0:\n%s", m)
	}

	// The operator changes the broker's password and reloads it; the agent has the old one.
	setPassword(t, passwd, "new-pw", false)
	if err := syscall.Kill(b1.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, a, "local broker refuses the agent's credentials", 15*time.Second)
	if !strings.Contains(lastLine(a.Out.String(), "local broker refuses the agent's credentials"), "level=ERROR") {
		t.Errorf("the refusal is not logged at error:\n%s", a.Out.String())
	}
	if m := getMetrics(t, port); !refusedMetric(1).MatchString(m) {
		t.Errorf("while refused: want mosquitto_ha_local_broker_auth_refused 1:\n%s", m)
	}
	if a.Exited() {
		t.Fatalf("the agent exited on a refusal while running:\n%s", a.Out.String())
	}

	// Status from the operator's host, which has the new password: b1's broker holds the will,
	// b2's the agent's fresh last status, which says why.
	newPw := filepath.Join(dir, "new.pw")
	os.WriteFile(newPw, []byte("new-pw\n"), 0o600)
	opCfg := cluster(newPw)
	row := regexp.MustCompile(`(?m)^b1\s+up\s+up \(seen \d+s ago via peers\).*its broker refuses the agent's credentials`)
	errLine := regexp.MustCompile(`(?m)^b1: last error \S+ \(\d+s ago\): local broker \S+: .*(bad user name or password|not authorised)`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		out, errOut, code := runCmd(t, "status", "--config", opCfg)
		if row.MatchString(out) && errLine.MatchString(out) {
			if code != exitFail {
				t.Errorf("status exit %d, want %d while b1's agent is refused", code, exitFail)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status while b1's broker refuses its agent:\n%s%s", out, errOut)
		}
	}
	if h := statusJSON(t, opCfg)[0]; h.LastSeen == nil || !h.LastSeen.LocalAuthRefused || h.LastSeen.LocalUp {
		t.Errorf("status --json b1 last_seen %+v: want local_auth_refused and not local_up", h.LastSeen)
	}

	// The broker's password is put back: the agent reconnects without a restart.
	setPassword(t, passwd, "agent-pw", false)
	if err := syscall.Kill(b1.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, a, "local broker no longer refuses the agent's credentials", 15*time.Second)
	time.Sleep(4 * time.Second)
	waitStatus(t, cfg, regexp.MustCompile(`(?m)^b1\s+up\s+up \d+s ago\s`), 10*time.Second, "agent back on its broker")
	if m := getMetrics(t, port); !refusedMetric(0).MatchString(m) {
		t.Errorf("after the password came back: want mosquitto_ha_local_broker_auth_refused 0:\n%s", m)
	}
}
