package keepalived_test

// End-to-end tests with a real keepalived running in a fresh network namespace (unshare -n),
// as in the lab where network namespaces are the hosts. All addresses are loopback ones, on a
// veth pair that exists only inside that namespace: nothing leaves it.

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"mosquitto-ha/keepalived"
	"mosquitto-ha/sysparse/mosqtest"
)

// startKeepalived runs keepalived in the foreground (-n) in a new network namespace with the
// interface iface, VRRP only, logging to the console, with its pid files under t.TempDir().
func startKeepalived(t *testing.T, conf []byte, iface string, extra ...string) *mosqtest.Proc {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("running keepalived needs root (a network namespace, VIPs): run the tests as root or scripts/test.sh")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{mosqtest.LookPath(t, "keepalived", installHint), "-n", "-l", "-D", "-G", "-P",
		"-p", filepath.Join(dir, "keepalived.pid"), "-r", filepath.Join(dir, "vrrp.pid"), "-f", path}, extra...)
	k := mosqtest.StartProc(t, inNetns(t, iface, args...))
	// Once keepalived prints its banner, unshare and the namespace setup are done and the
	// pid is keepalived's, in the new namespace (nsenter on it before that could enter the
	// test's own namespace).
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(k.Out.String(), "Starting Keepalived"); {
		if k.Exited() || time.Now().After(deadline) {
			t.Fatalf("keepalived did not start:\n%s", k.Out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return k
}

// nsenter returns a command that runs argv in the network namespace of pid.
func nsenter(t *testing.T, pid int, argv ...string) *exec.Cmd {
	t.Helper()
	bin := mosqtest.LookPath(t, "nsenter", "apt-get install -y util-linux")
	return exec.Command(bin, append([]string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--"}, argv...)...)
}

// TestDefaultCheckScriptParsedByKeepalived shows how keepalived splits the script line into
// arguments (its -d dump): the quoting Generate writes reaches /bin/sh intact, for the default
// script and for a custom one with double quotes.
func TestDefaultCheckScriptParsedByKeepalived(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   []string // arguments after the program
	}{
		{keepalived.DefaultCheckScript, []string{"-c",
			`me=$(readlink /proc/self/ns/net); for p in $(pidof haproxy); do [ "$(readlink /proc/$p/ns/net)" = "$me" ] && exit 0; done; exit 1`}},
		{`/bin/sh -c "test -S /run/haproxy/admin.sock"`, []string{"-c", "test -S /run/haproxy/admin.sock"}},
		{`/bin/sh -c 'exit 0' two   words`, []string{"-c", "exit 0", "two", "words"}},
	} {
		p := loopbackParams()
		p.CheckScript = tc.script
		conf, err := keepalived.Generate(p)
		if err != nil {
			t.Fatal(err)
		}
		k := startKeepalived(t, conf, "eth0", "-d")
		re := regexp.MustCompile(`Command = (.*)`)
		var got string
		for deadline := time.Now().Add(5 * time.Second); got == "" && time.Now().Before(deadline); {
			if m := re.FindStringSubmatch(k.Out.String()); m != nil {
				got = m[1]
			}
			time.Sleep(20 * time.Millisecond)
		}
		k.Stop()
		if got == "" {
			t.Fatalf("keepalived -d printed no Command line:\n%s", k.Out)
		}
		// keepalived prints each argument in single quotes: 'a' 'b c'.
		args := regexp.MustCompile(`'([^']*)'`).FindAllStringSubmatch(got, -1)
		var words []string
		for _, a := range args {
			words = append(words, a[1])
		}
		if len(words) < 1 || !strings.HasSuffix(words[0], "/sh") {
			t.Fatalf("script %q: program %q, want .../sh", tc.script, got)
		}
		want := "'" + strings.Join(tc.want, "' '") + "'"
		if rest := strings.TrimSpace(strings.TrimPrefix(got, "'"+words[0]+"'")); rest != want {
			t.Errorf("script %q reached keepalived as\n %s\nwant\n %s", tc.script, rest, want)
		}
	}
}

// loopbackParams is a two-host cluster on loopback addresses (nothing leaves the namespace).
func loopbackParams() keepalived.Params {
	return keepalived.Params{
		Cluster: "e2e", Self: "lb1",
		Hosts:     []keepalived.Peer{{Name: "lb1", Address: "127.0.0.1"}, {Name: "lb2", Address: "127.0.0.2"}},
		VIP:       "127.0.0.100/32",
		Interface: "eth0",
	}
}

// TestVIPFollowsHAProxyInItsNetns runs the generated keepalived.conf (default check script)
// in its own network namespace:
//   - an haproxy running in another network namespace (here the test's own: in the lab, the
//     other LB host's) must not count: no VIP, although `pidof haproxy` finds it;
//   - an haproxy in keepalived's namespace brings the VIP;
//   - killing it gives the VIP away (FAULT).
func TestVIPFollowsHAProxyInItsNetns(t *testing.T) {
	hap := mosqtest.LookPath(t, "haproxy", installHint)
	ip := mosqtest.LookPath(t, "ip", "apt-get install -y iproute2")
	conf, err := keepalived.Generate(loopbackParams())
	if err != nil {
		t.Fatal(err)
	}

	// haproxy in the test's network namespace: the "other host".
	port := mosqtest.FreePort(t)
	foreign := mosqtest.StartProc(t, exec.Command(hap, "-db", "-f", haproxyConf(t, port)))
	if err := waitListening(foreign, port); err != nil {
		t.Fatalf("foreign haproxy: %v: %s", err, foreign.Out)
	}
	if out, err := exec.Command("pidof", "haproxy").Output(); err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Fatalf("pidof haproxy finds no haproxy in the test's namespace (%v): the negative case proves nothing", err)
	}

	k := startKeepalived(t, conf, "eth0")
	pid := k.Pid()
	vip := func() bool {
		out, err := nsenter(t, pid, ip, "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil {
			if k.Exited() {
				t.Fatalf("keepalived exited:\n%s", k.Out)
			}
			t.Fatalf("ip addr in keepalived's namespace: %v: %s", err, out)
		}
		return bytes.Contains(out, []byte(" 127.0.0.100/32 "))
	}
	waitVIP := func(want bool, within time.Duration, why string) {
		t.Helper()
		deadline := time.Now().Add(within)
		for vip() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: VIP present = %v after %s, want %v; keepalived said:\n%s", why, !want, within, want, k.Out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// If the check were fooled by the foreign haproxy, the VIP would come after rise (2) x 1s
	// + Master_Down_Interval (0.64s). Watch for twice as long.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if vip() {
			t.Fatalf("keepalived took the VIP with no haproxy in its namespace (fooled by the one outside):\n%s", k.Out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(k.Out.String(), "VRRP_Script(chk_haproxy) failed") &&
		!strings.Contains(k.Out.String(), "Script `chk_haproxy` now returning 1") {
		t.Fatalf("the check script did not run and fail:\n%s", k.Out)
	}

	// haproxy in keepalived's namespace: the VIP comes.
	local := mosqtest.StartProc(t, nsenter(t, pid, hap, "-db", "-f", haproxyConf(t, 1883)))
	came := time.Now()
	waitVIP(true, 8*time.Second, "haproxy running in keepalived's namespace")
	t.Logf("VIP up %s after haproxy started", time.Since(came).Round(time.Millisecond))

	// haproxy dies: FAULT, the VIP goes.
	local.Kill()
	died := time.Now()
	waitVIP(false, 6*time.Second, "haproxy killed")
	t.Logf("VIP released %s after haproxy died", time.Since(died).Round(time.Millisecond))
	if !strings.Contains(k.Out.String(), "Entering FAULT STATE") {
		t.Errorf("keepalived did not log the FAULT state:\n%s", k.Out)
	}
}

// haproxyConf writes a minimal haproxy.cfg listening on 127.0.0.1:port (in whichever network
// namespace haproxy runs).
func haproxyConf(t *testing.T, port int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	cfg := "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n" +
		"listen mqtt\n    bind 127.0.0.1:" + strconv.Itoa(port) + "\n    server b1 127.0.0.1:1\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitListening waits until something accepts on 127.0.0.1:port of the test's namespace.
func waitListening(p *mosqtest.Proc, port int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p.Exited() || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
