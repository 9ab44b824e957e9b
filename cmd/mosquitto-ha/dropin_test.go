package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/cmd/mosquitto-ha/internal/mosqconf"
	"mosquitto-ha/sysparse/mosqtest"
)

// install is Debian's /etc/mosquitto laid out in a temporary directory, as a test host.
type install struct {
	root string // stands for /
	etc  string // stands for /etc/mosquitto
	conf string // etc/mosquitto.conf
}

// debianInstall copies Debian's stock configuration (testdata/debian-mosquitto) into a
// temporary root and rewrites its absolute paths into it: pid_file, persistence_location, the
// log file and include_dir. It adds `user root` at the top: the tests run as root and Mosquitto
// would otherwise switch to the user mosquitto, who cannot enter the test's directories.
func debianInstall(t *testing.T) *install {
	t.Helper()
	root := t.TempDir()
	in := &install{root: root, etc: filepath.Join(root, "etc/mosquitto")}
	in.conf = filepath.Join(in.etc, "mosquitto.conf")
	for _, d := range []string{"etc/mosquitto/conf.d", "run/mosquitto", "var/lib/mosquitto", "var/log/mosquitto"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stock, err := os.ReadFile("../../testdata/debian-mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../testdata/debian-mosquitto/conf.d/README")
	if err != nil {
		t.Fatal(err)
	}
	text := string(stock)
	for _, p := range []string{"/run/mosquitto/", "/var/lib/mosquitto/", "/var/log/mosquitto/", "/etc/mosquitto/"} {
		if !strings.Contains(text, p) {
			t.Fatalf("Debian's mosquitto.conf no longer mentions %s: update the test", p)
		}
		text = strings.ReplaceAll(text, p, filepath.Join(root, p)+"/")
	}
	text = strings.ReplaceAll(text, filepath.Join(root, "/etc/mosquitto/conf.d")+"/", filepath.Join(in.etc, "conf.d"))
	in.write(t, "mosquitto.conf", "# test: run as root (see debianInstall)\nuser root\n"+text)
	in.write(t, "conf.d/README", string(readme))
	return in
}

func (in *install) write(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(in.etc, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// withAuth turns the stock install into one with authentication, as an operator would write it
// in conf.d: a listener (on port, standing for 1883), a password file with the user alice and
// an ACL that gives alice sensors/#.
func (in *install) withAuth(t *testing.T, port int) {
	t.Helper()
	passwd := filepath.Join(in.etc, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", passwd, "alice", "alice-pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd (%s): %v %s", mosqtest.InstallHint, err, out)
	}
	acl := in.write(t, "acl", "user alice\ntopic readwrite sensors/#\n")
	in.write(t, "conf.d/auth.conf", fmt.Sprintf("listener %d\npassword_file %s\nacl_file %s\n", port, passwd, acl))
}

// generate runs `mosquitto-ha mosquitto` against the install and installs its output as
// conf.d/mosquitto-ha.conf, as the README says.
func (in *install) generate(t *testing.T, cluster string) (snippet, steps string) {
	t.Helper()
	snippet, steps, code := runCmd(t, "mosquitto", "--config", cluster, "--node", "b1", "--broker-conf", in.conf)
	if code != 0 {
		t.Fatalf("mosquitto: exit %d\n%s", code, steps)
	}
	in.write(t, "conf.d/"+dropinName, snippet)
	return snippet, steps
}

// broker is a mosquitto started on an install's configuration, stopped by pid.
type broker struct {
	cmd *exec.Cmd
	out *mosqtest.Output
}

// startInstall starts the real mosquitto with the install's mosquitto.conf and waits until
// every address in addrs accepts connections.
func startInstall(t *testing.T, in *install, addrs ...string) *broker {
	t.Helper()
	b := &broker{cmd: exec.Command(mosqtest.Binary(t), "-c", in.conf), out: &mosqtest.Output{}}
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { b.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = b.cmd.Process.Kill()
			<-exited
		}
	})
	for _, a := range addrs {
		deadline := time.Now().Add(10 * time.Second)
		for {
			select {
			case <-exited:
				t.Fatalf("mosquitto refused the merged configuration: %s\n%s", b.out, readTree(in))
			default:
			}
			if c, err := net.DialTimeout("tcp", a, 200*time.Millisecond); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("mosquitto does not listen on %s: %s", a, b.out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return b
}

func readTree(in *install) string {
	var b strings.Builder
	filepath.Walk(in.etc, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.HasSuffix(p, ".conf") {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "==> %s\n%s", p, data)
		}
		return nil
	})
	return b.String()
}

// assertMerged checks the merged configuration holds no option twice that Mosquitto reads once,
// and no listener twice.
func assertMerged(t *testing.T, in *install) {
	t.Helper()
	c, err := mosqconf.Load(in.conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"allow_anonymous", "password_file", "acl_file", "persistence", "persistence_location",
		"max_queued_messages", "set_tcp_nodelay", "sys_interval", "per_listener_settings", "pid_file", "user"} {
		if all := c.All(name); len(all) > 1 {
			t.Errorf("%s is set %d times: %v", name, len(all), all)
		}
	}
	seen := map[string]bool{}
	for _, l := range c.Listeners {
		k := fmt.Sprintf("%d %s", l.Port, l.Bind)
		if seen[k] {
			t.Errorf("listener %s twice", k)
		}
		seen[k] = true
	}
}

// pubSub connects as user (empty: anonymous) and proves a message goes round trip on topic.
func pubSub(addr, user, password, topic string) error {
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("existing-" + strconv.Itoa(os.Getpid()) + "-" + user).
		SetConnectTimeout(3 * time.Second).SetAutoReconnect(false)
	if user != "" {
		o.SetUsername(user).SetPassword(password)
	}
	got := make(chan struct{}, 1)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect %s as %q: %v", addr, user, tok.Error())
	}
	defer c.Disconnect(10)
	if tok := c.Subscribe(topic, 1, func(mqtt.Client, mqtt.Message) { got <- struct{}{} }); !tok.WaitTimeout(5 * time.Second) {
		return fmt.Errorf("subscribe %s: no answer", topic)
	}
	c.Publish(topic, 1, false, "x").WaitTimeout(5 * time.Second)
	select {
	case <-got:
		return nil
	case <-time.After(3 * time.Second):
		return fmt.Errorf("%q published on %s and did not get it back", user, topic)
	}
}

// loopbackOnly rewrites every listener the snippet adds on all addresses to 127.0.0.1 (tests
// use only the loopback) and the local-only replacement listener 1883 to port local.
func loopbackOnly(snippet string, local int) string {
	snippet = strings.ReplaceAll(snippet, "listener 1883 localhost", fmt.Sprintf("listener %d localhost", local))
	return regexp.MustCompile(`(?m)^listener (\d+)$`).ReplaceAllString(snippet, "listener $1 127.0.0.1")
}

// Debian's stock install (local-only mode: anonymous clients on localhost:1883) with the
// snippet: the broker starts, the agent's probe passes, local anonymous clients still connect,
// and the log file keeps its lines.
func TestDropinDebianStock(t *testing.T) {
	for _, account := range []bool{false, true} {
		t.Run(fmt.Sprintf("agent-account=%v", account), func(t *testing.T) {
			in := debianInstall(t)
			port, local := mosqtest.FreePort(t), mosqtest.FreePort(t)
			extra := ""
			if account {
				pw := filepath.Join(t.TempDir(), "agent.pw")
				os.WriteFile(pw, []byte("agent-pw\n"), 0o600)
				extra = fmt.Sprintf("  username: mha-agent\n  password_file: %s\n", pw)
			}
			cluster := writeNodeCluster(t, port, extra)
			snippet, steps := in.generate(t, cluster)
			// Generating again with the file in place gives the same file: it reads its own
			// earlier output as not part of the install.
			again, _, _ := runCmd(t, "mosquitto", "--config", cluster, "--node", "b1", "--broker-conf", in.conf)
			if again != snippet {
				t.Errorf("regenerating with the snippet installed changed it:\n%s", again)
			}
			for _, want := range []string{"listener " + strconv.Itoa(port) + "\n", "listener 1883 localhost\n", "allow_anonymous true\n",
				"log_dest topic\n", "log_type subscribe\n", "log_type information\n", "max_queued_messages 100000\n",
				"WHAT CHANGES: anonymous clients can now connect from any address", "SIDE EFFECT: the limit applies to every client",
				"/var/log/mosquitto/mosquitto.log will also receive one line per subscribe", "kept: `persistence true`"} {
				if !strings.Contains(snippet, want) && !strings.Contains(flat(snippet), want) {
					t.Errorf("snippet lacks %q:\n%s", want, snippet)
				}
			}
			if strings.Contains(snippet, "\npersistence true") || strings.Contains(snippet, "\nsys_interval") {
				t.Errorf("snippet repeats an option the install sets, or changes sys_interval:\n%s", snippet)
			}
			if account {
				// What the operator is told to do: create the new password file and the ACL.
				if !strings.Contains(steps, "mosquitto_passwd -c "+filepath.Join(in.etc, "passwd")+" mha-agent") {
					t.Errorf("steps do not say how to create the password file:\n%s", steps)
				}
				exec.Command("mosquitto_passwd", "-b", "-c", filepath.Join(in.etc, "passwd"), "mha-agent", "agent-pw").Run()
				acl, _, _ := runCmd(t, "mosquitto", "--config", cluster, "--node", "b1", "--acl")
				in.write(t, "mosquitto-ha.acl", acl)
			} else if steps != "" {
				t.Errorf("stock install with an anonymous agent needs no manual step, got:\n%s", steps)
			}
			in.write(t, "conf.d/"+dropinName, loopbackOnly(snippet, local))
			assertMerged(t, in)

			startInstall(t, in, fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", local))
			if out, errOut, code := runCmd(t, "check", "--config", cluster, "--node", "b1"); code != 0 {
				t.Errorf("check against the merged install: exit %d\n%s%s", code, out, errOut)
			}
			// The clients that used local-only mode: anonymous on localhost (port local stands for 1883).
			if err := pubSub(fmt.Sprintf("localhost:%d", local), "", "", "app/temperature"); err != nil {
				t.Errorf("a pre-existing anonymous local client: %v", err)
			}
			logFile, _ := os.ReadFile(filepath.Join(in.root, "var/log/mosquitto/mosquitto.log"))
			if !strings.Contains(string(logFile), "New client connected from 127.0.0.1") {
				t.Errorf("the log file lost its notice lines:\n%s", logFile)
			}

		})
	}
}

// Debian with authentication (a listener, a password file with alice, an ACL): the snippet adds
// no listener, no second password_file or acl_file, and says which lines to add to the existing
// files, without `mosquitto_passwd -c`. Done as told, the broker starts, the agent's probe
// passes, alice still works and anonymous clients are still refused.
func TestDropinDebianWithAuth(t *testing.T) {
	in := debianInstall(t)
	port := mosqtest.FreePort(t) // stands for 1883
	in.withAuth(t, port)
	pw := filepath.Join(t.TempDir(), "agent.pw")
	os.WriteFile(pw, []byte("agent-pw\n"), 0o600)
	cluster := writeNodeCluster(t, port, fmt.Sprintf("  username: mha-agent\n  password_file: %s\n", pw))
	snippet, steps := in.generate(t, cluster)

	for _, bad := range []string{"\nlistener ", "\npassword_file ", "\nacl_file ", "\nallow_anonymous "} {
		if strings.Contains(snippet, bad) {
			t.Errorf("snippet sets %q although the install has it:\n%s", strings.TrimSpace(bad), snippet)
		}
	}
	passwd, acl := filepath.Join(in.etc, "passwd"), filepath.Join(in.etc, "acl")
	if strings.Contains(steps, "mosquitto_passwd -c") || !strings.Contains(steps, "mosquitto_passwd "+passwd+" mha-agent") {
		t.Errorf("steps must add the account to %s without -c:\n%s", passwd, steps)
	}
	if !strings.Contains(steps, "append these lines to the existing ACL file "+acl) {
		t.Fatalf("steps do not say what to add to %s:\n%s", acl, steps)
	}
	// Follow the steps: the account, and the ACL lines printed (indented) after the ACL step.
	if out, err := exec.Command("mosquitto_passwd", "-b", passwd, "mha-agent", "agent-pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	var aclLines []string
	_, after, _ := strings.Cut(steps, "append these lines to the existing ACL file")
	for _, l := range strings.Split(after, "\n")[1:] {
		if !strings.HasPrefix(l, "    ") {
			break
		}
		aclLines = append(aclLines, strings.TrimSpace(l))
	}
	if len(aclLines) < 4 || aclLines[0] != "user mha-agent" {
		t.Fatalf("ACL lines in the steps: %q", aclLines)
	}
	old, _ := os.ReadFile(acl)
	os.WriteFile(acl, []byte(string(old)+"\n"+strings.Join(aclLines, "\n")+"\n"), 0o644)
	in.write(t, "conf.d/"+dropinName, snippet)
	assertMerged(t, in)

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	startInstall(t, in, addr)
	if out, errOut, code := runCmd(t, "check", "--config", cluster, "--node", "b1"); code != 0 {
		t.Errorf("check against the merged install: exit %d\n%s%s", code, out, errOut)
	}
	if err := pubSub(addr, "alice", "alice-pw", "sensors/t1"); err != nil {
		t.Errorf("the pre-existing user: %v", err)
	}
	if err := pubSub(addr, "", "", "sensors/t1"); err == nil {
		t.Errorf("an anonymous client got in: the snippet changed allow_anonymous")
	}
}

// flat joins the snippet's wrapped comment lines, so that a test can look for a sentence.
func flat(snippet string) string { return strings.ReplaceAll(snippet, "\n# ", " ") }

// writeNodeCluster writes a one-node cluster file for a broker at 127.0.0.1:port.
func writeNodeCluster(t *testing.T, port int, agentExtra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	text := fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: 127.0.0.1:%d}\nagent:\n  state_dir: %s\n%s", port, t.TempDir(), agentExtra)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// What the snippet adds and asks for, for installs the real-broker tests do not lay out.
func TestDropinMergesInstalls(t *testing.T) {
	cfg, err := ParseConfig([]byte("cluster: it\nnodes:\n  - {name: b1, address: 10.0.0.11:1883}\n"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := cfg.Node("b1")
	for _, tc := range []struct {
		name, conf    string
		want, notWant []string // lines of the snippet
		steps         []string
	}{
		{name: "stock-node-on-1883", conf: "persistence true\n",
			want: []string{"listener 1883", "allow_anonymous true"}, notWant: []string{"listener 1883 localhost"}},
		{name: "listener-bound-to-loopback", conf: "listener 1883 127.0.0.1\nallow_anonymous true\n",
			want: []string{"listener 1883 10.0.0.11"}, notWant: []string{"listener 1883", "allow_anonymous true"}},
		{name: "sys-interval-0", conf: "listener 1883\nsys_interval 0\n",
			notWant: []string{"sys_interval 0", "sys_interval 10"}, steps: []string{"change `sys_interval 0` to `sys_interval 10`"}},
		{name: "low-max-queued", conf: "listener 1883\nmax_queued_messages 500\n",
			notWant: []string{"max_queued_messages 100000"}, steps: []string{"raise `max_queued_messages 500`"}},
		{name: "own-log-types", conf: "listener 1883\nlog_dest syslog\nlog_type error\nlog_type subscribe\n",
			want:    []string{"log_dest topic", "log_type notice", "log_type unsubscribe"},
			notWant: []string{"log_dest stderr", "log_type error", "log_type subscribe", "log_type warning", "log_type information"}},
		{name: "no-log-dest", conf: "listener 1883\n",
			want: []string{"log_dest stderr", "log_dest topic"}},
		{name: "connection-messages-off", conf: "listener 1883\nconnection_messages false\n",
			steps: []string{"`connection_messages false` hides the connect lines"}},
		{name: "anonymous-agent-refused", conf: "listener 1883\n",
			steps: []string{"allow_anonymous is false"}},
		{name: "per-listener-settings", conf: "per_listener_settings true\nlistener 8883\npassword_file /etc/mosquitto/passwd\nacl_file /etc/mosquitto/acl\n",
			want: []string{"listener 1883", "password_file /etc/mosquitto/passwd", "acl_file /etc/mosquitto/acl"}, notWant: []string{"allow_anonymous true"},
			steps: []string{"allow_anonymous is false (Mosquitto 2.0's default once a listener exists)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snippet, steps := mosquittoDropin(cfg, n, mosqconf.Parse("/etc/mosquitto/mosquitto.conf", []byte(tc.conf+"include_dir /etc/mosquitto/conf.d\n")))
			lines := map[string]bool{}
			for _, l := range strings.Split(snippet, "\n") {
				lines[l] = true
			}
			for _, w := range tc.want {
				if !lines[w] {
					t.Errorf("snippet lacks the line %q:\n%s", w, snippet)
				}
			}
			for _, w := range tc.notWant {
				if lines[w] {
					t.Errorf("snippet has the line %q:\n%s", w, snippet)
				}
			}
			all := strings.Join(steps, "\n")
			for _, w := range tc.steps {
				if !strings.Contains(all, w) {
					t.Errorf("steps lack %q:\n%s", w, all)
				}
			}
		})
	}
}
