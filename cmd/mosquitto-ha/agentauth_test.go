package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

// A local broker that refuses the agent's credentials is a permanent failure: the agent exits 1
// at once, naming the cause and the keys that fix it, instead of retrying "not ready" forever.
// Nothing listening yet is transient: it keeps retrying.
func TestAgentExitsOnRefusedCredentials(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	if out, err := exec.Command(mosqtest.LookPath(t, "mosquitto_passwd", mosqtest.InstallHint), "-b", "-c", passwd, "mha-agent", "right-password").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	pwFile := filepath.Join(dir, "agent.pw")
	os.WriteFile(pwFile, []byte("wrong-password\n"), 0o600)
	br := mosqtest.Start(t, mosqtest.Options{Extra: fmt.Sprintf("password_file %s\n", passwd)})
	cfg := writeCluster(t, []*mosqtest.Broker{br}, fmt.Sprintf("  username: mha-agent\n  password_file: %s\n", pwFile))

	p := startAgentProc(t, cfg, "b1")
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("the agent still runs 5 s after its broker refused its password:\n%s", p.Out.String())
	}
	var ee *exec.ExitError
	if err := p.Err(); !errors.As(err, &ee) || ee.ExitCode() != exitFail {
		t.Errorf("exit: %v, want status %d", err, exitFail)
	}
	out := p.Out.String()
	for _, want := range []string{"refused the agent's credentials", `user \"mha-agent\"`, "agent.username", "agent.password_file", "MOSQUITTO_HA_PASSWORD", "FAULT (wrong password)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not ready, retrying") {
		t.Errorf("a refusal was retried as transient:\n%s", out)
	}

	// Nothing listens: transient, retried.
	gone := mosqtest.Start(t, mosqtest.Options{})
	gone.Stop()
	p = startAgentProc(t, writeCluster(t, []*mosqtest.Broker{gone}, ""), "b1")
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.Out.String(), "local broker not ready, retrying") < 2 {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("want retries while nothing listens (exited: %v):\n%s", p.Exited(), p.Out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
