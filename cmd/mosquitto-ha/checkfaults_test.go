package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"mosquitto-ha/sysparse/mosqtest"
)

// agentACLFor is the agent account's ACL section for cluster "it", minus the lines in drop.
func agentACLFor(drop ...string) string {
	var keep []string
	for _, l := range strings.Split("user mha-agent\ntopic read $SYS/#\ntopic readwrite #\ntopic readwrite $HA/it/#\ntopic readwrite $forward/#\ntopic readwrite $forward-r/#\ntopic readwrite $forward-b/#", "\n") {
		dropped := false
		for _, d := range drop {
			dropped = dropped || l == d
		}
		if !dropped {
			keep = append(keep, l)
		}
	}
	return "topic readwrite #\n" + strings.Join(keep, "\n") + "\n"
}

// faultBroker starts a broker with the agent account mha-agent (password agent-pw), the ACL
// text and extra configuration, and writes a cluster file whose agent uses password.
func faultBroker(t *testing.T, opts mosqtest.Options, acl, password string) string {
	t.Helper()
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", passwd, "mha-agent", "agent-pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd (%s): %v %s", mosqtest.InstallHint, err, out)
	}
	opts.Extra += "password_file " + passwd + "\n"
	if acl != "" {
		aclPath := filepath.Join(dir, "acl")
		os.WriteFile(aclPath, []byte(acl), 0o600)
		opts.Extra += "acl_file " + aclPath + "\n"
	}
	b := mosqtest.Start(t, opts)
	pw := filepath.Join(dir, "agent.pw")
	os.WriteFile(pw, []byte(password+"\n"), 0o600)
	return writeNodeClusterAt(t, b.Addr, fmt.Sprintf("  username: mha-agent\n  password_file: %s\n", pw))
}

func writeNodeClusterAt(t *testing.T, addr, agentExtra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	text := fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: %s}\nagent:\n  state_dir: %s\n%s", addr, t.TempDir(), agentExtra)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkSays runs check --node b1 and asserts its exit code and that its output holds every
// want and none of notWant.
func checkSays(t *testing.T, cluster string, wantCode int, want, notWant []string) {
	t.Helper()
	out, errOut, code := runCmd(t, "check", "--config", cluster, "--node", "b1")
	all := out + errOut
	t.Logf("check:\n%s", all)
	if code != wantCode {
		t.Errorf("check: exit %d, want %d\n%s", code, wantCode, all)
	}
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("check does not say %q:\n%s", w, all)
		}
	}
	for _, w := range notWant {
		if strings.Contains(all, w) {
			t.Errorf("check says %q, a misreading:\n%s", w, all)
		}
	}
}

// The control case: the full agent ACL, right password: check passes with no fault.
func TestCheckFaultFreeBrokerPasses(t *testing.T) {
	cluster := faultBroker(t, mosqtest.Options{}, agentACLFor(), "agent-pw")
	checkSays(t, cluster, 0, []string{"publishes every log line the agent needs"}, []string{"FAULT", "WARNING"})
}

func TestCheckWrongPassword(t *testing.T) {
	cluster := faultBroker(t, mosqtest.Options{}, agentACLFor(), "not-the-password")
	checkSays(t, cluster, 1,
		[]string{"FAULT (wrong password)", `refused user "mha-agent"`, "mosquitto_passwd <the broker's password_file> mha-agent", "or correct agent.password_file"},
		[]string{"unreachable", "mosquitto_passwd -c"})
}

func TestCheckACLDeniesSys(t *testing.T) {
	cluster := faultBroker(t, mosqtest.Options{}, agentACLFor("topic read $SYS/#"), "agent-pw")
	checkSays(t, cluster, 1,
		[]string{"FAULT (ACL denies $SYS)", "does not let it read $SYS/#", "add `topic read $SYS/#` under `user mha-agent`"},
		[]string{"FAULT (missing log lines)", "FAULT (sys_interval 0)"})
}

func TestCheckACLDeniesWildcard(t *testing.T) {
	cluster := faultBroker(t, mosqtest.Options{}, agentACLFor("topic readwrite #"), "agent-pw")
	checkSays(t, cluster, 1,
		[]string{"FAULT (ACL denies #)", "add `topic readwrite #` under `user mha-agent`"},
		[]string{"FAULT (missing log lines)", "FAULT (ACL denies $SYS)"})
}

func TestCheckMissingLogLines(t *testing.T) {
	// log_dest topic, but without the subscribe and unsubscribe types.
	cluster := faultBroker(t, mosqtest.Options{NoLogConf: true, Extra: "log_dest topic\nlog_type error\nlog_type notice\n"}, agentACLFor(), "agent-pw")
	checkSays(t, cluster, 1,
		[]string{"FAULT (missing log lines)", "does not publish subscribe, unsubscribe log lines", "log_type subscribe\n", "log_type unsubscribe\n"},
		[]string{"FAULT (ACL denies", "log_type notice\n"})
}

func TestCheckSysInterval0(t *testing.T) {
	cluster := faultBroker(t, mosqtest.Options{Extra: "sys_interval 0\n"}, agentACLFor(), "agent-pw")
	checkSays(t, cluster, 1,
		[]string{"FAULT (sys_interval 0)", "asks its peers for every message forever", "set `sys_interval 10`"},
		[]string{"FAULT (missing log lines)", "FAULT (ACL denies"})
}

func TestCheckListenerMissing(t *testing.T) {
	port := mosqtest.FreePort(t) // nothing listens there
	cluster := writeNodeClusterAt(t, fmt.Sprintf("127.0.0.1:%d", port), "")
	checkSays(t, cluster, 1,
		[]string{"FAULT (listener missing)", "connection refused", fmt.Sprintf("give Mosquitto a `listener %d`", port)},
		[]string{"FAULT (wrong password)"})
}

func TestCheckForwardPrefixOpenToAnonymous(t *testing.T) {
	// The agent account works, but the ACL lets anonymous clients write $forward/#.
	acl := "topic readwrite #\ntopic readwrite $forward/#\n" + strings.TrimPrefix(agentACLFor(), "topic readwrite #\n")
	cluster := faultBroker(t, mosqtest.Options{}, acl, "agent-pw")
	checkSays(t, cluster, 0,
		[]string{`WARNING (forward prefix open): a client without credentials can publish to "$forward/"`, "grant $forward/#, $forward-r/#, $forward-b/# to `user mha-agent` alone", "agent.cluster_secret_file"},
		[]string{"FAULT"})
}

// Sessions that follow their client need the agent account to act for any client id:
// use_username_as_clientid gives every connection of the account one id, and check says so.
// (The agent's own connections then take each other over too: the probe fails as well.)
func TestCheckSessionsUsernameAsClientID(t *testing.T) {
	cluster := faultBroker(t, mosqtest.Options{Extra: "use_username_as_clientid true\n"}, agentACLFor(), "agent-pw")
	checkSays(t, cluster, 1,
		[]string{"WARNING (sessions)", "use_username_as_clientid", "agent.sessions.enabled: false"},
		[]string{"FAULT (wrong password)"})
}
