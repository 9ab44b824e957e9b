package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"mosquitto-ha/bridge"
	"mosquitto-ha/sysparse/mosqtest"
)

func probe(t *testing.T, addr, user, password string, wildcard bool) (bridge.ProbeResult, error) {
	t.Helper()
	return bridge.Probe(context.Background(), bridge.ProbeOptions{Address: addr, ClientID: "mha-it-b1-probe-test",
		Username: user, Password: password, Timeout: 2 * time.Second, Topics: bridge.NewTopics("it", "$forward/"),
		ProveWildcard: wildcard})
}

// A probe that cannot connect says why: nothing listens, or the credentials were refused.
func TestProbeConnectErrors(t *testing.T) {
	_, err := probe(t, fmt.Sprintf("127.0.0.1:%d", mosqtest.FreePort(t)), "", "", false)
	if !errors.Is(err, bridge.ErrProbeNoListener) {
		t.Errorf("no listener: %v, want ErrProbeNoListener", err)
	}
	passwd := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", passwd, "mha-agent", "right").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd (%s): %v %s", mosqtest.InstallHint, err, out)
	}
	b := mosqtest.Start(t, mosqtest.Options{Extra: "password_file " + passwd + "\n"})
	if _, err := probe(t, b.Addr, "mha-agent", "wrong", false); !errors.Is(err, bridge.ErrProbeRefused) {
		t.Errorf("wrong password: %v, want ErrProbeRefused", err)
	}
	if _, err := probe(t, b.Addr, "mha-agent", "right", false); err != nil {
		t.Errorf("right password: %v", err)
	}
}

// sys_interval 0 and an ACL that keeps the account from '#' are told apart from missing log lines.
func TestProbeSysStatsAndDenied(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 0\n"})
	res, err := probe(t, b.Addr, "", "", true)
	if err != nil || !res.NoSysStats || res.NoSys || len(res.Missing) > 0 || len(res.Denied) > 0 {
		t.Errorf("sys_interval 0: %+v %v, want NoSysStats alone", res, err)
	}

	acl := filepath.Join(t.TempDir(), "acl")
	os.WriteFile(acl, []byte("topic read $SYS/#\ntopic readwrite $HA/it/#\ntopic readwrite $forward/#\n"), 0o600)
	b = mosqtest.Start(t, mosqtest.Options{Extra: "acl_file " + acl + "\n"})
	res, err = probe(t, b.Addr, "", "", true)
	if err != nil || !slices.Equal(res.Denied, []string{"#"}) || res.NoSys || res.NoSysStats || len(res.Missing) > 0 {
		t.Errorf("ACL without '#': %+v %v, want Denied [#] alone", res, err)
	}

	os.WriteFile(acl, []byte("topic read $SYS/#\ntopic readwrite #\n"), 0o600)
	b = mosqtest.Start(t, mosqtest.Options{Extra: "acl_file " + acl + "\n"})
	res, err = probe(t, b.Addr, "", "", true)
	if err != nil || !slices.Equal(res.Denied, []string{"$HA/it/#", "$forward/#"}) || res.AnonymousForward {
		t.Errorf("ACL without the cluster's topics: %+v %v, want Denied [$HA/it/# $forward/#]", res, err)
	}
}
