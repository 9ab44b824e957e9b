package haproxy_test

// End-to-end tests of the generated haproxy.cfg against real processes on loopback: real
// mosquitto brokers (package mosqtest) behind real haproxy processes started with `-db`
// (foreground) and stopped by pid.
//
// Which broker did a client land on? Every broker holds a retained message on whoamiTopic
// whose payload is its own name, published directly to that broker. The brokers are not
// bridged, so a client that connects through HAProxy and subscribes to whoamiTopic receives
// exactly one retained message: the name of the broker it is connected to. The client itself
// reports where it is, over MQTT, with no log scraping.

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/haproxy"
	"mosquitto-ha/sysparse/mosqtest"
)

const whoamiTopic = "ha-test/whoami"

// hap is one running haproxy process.
type hap struct {
	t    *testing.T
	Bind string // "127.0.0.1:port" where clients connect
	sock string // stats socket
	*mosqtest.Proc
}

// startHAProxy generates a configuration for brokers (with Bind on a free loopback port, the
// stats socket under t.TempDir() and CheckInterval 200ms unless set), checks it with
// `haproxy -c`, runs it in the foreground and stops it by pid when the test ends.
func startHAProxy(t *testing.T, p haproxy.Params) *hap {
	t.Helper()
	bin := haproxyBinary(t)
	dir := t.TempDir()
	p.Bind = "127.0.0.1:" + strconv.Itoa(mosqtest.FreePort(t))
	p.StatsSocket = filepath.Join(dir, "admin.sock")
	if p.CheckInterval == 0 {
		p.CheckInterval = 200 * time.Millisecond
	}
	cfg, err := haproxy.Generate(p)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if err := haproxyCheck(t, cfg); err != nil {
		t.Fatalf("haproxy -c: %v", err)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	h := &hap{t: t, Bind: p.Bind, sock: p.StatsSocket, Proc: mosqtest.StartProc(t, exec.Command(bin, "-db", "-f", path))}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := h.command("show info"); err == nil {
			return h
		}
		if h.Exited() {
			t.Fatalf("haproxy exited at start: %s", h.Out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy stats socket %s did not answer: %s", h.sock, h.Out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// command sends one command to the stats socket and returns the answer.
func (h *hap) command(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// servers returns the `show stat` rows of the backend's servers, by server name.
func (h *hap) servers() (map[string]map[string]string, error) {
	out, err := h.command("show stat")
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) < 2 {
		return nil, fmt.Errorf("show stat: %v: %q", err, out)
	}
	head := rows[0]
	srv := map[string]map[string]string{}
	for _, row := range rows[1:] {
		m := map[string]string{}
		for i, k := range head {
			if i < len(row) {
				m[k] = row[i]
			}
		}
		if strings.HasSuffix(m["pxname"], "-brokers") && m["svname"] != "BACKEND" {
			srv[m["svname"]] = m
		}
	}
	return srv, nil
}

// waitServer waits until the server's row satisfies ok, and fails the test with the last row
// otherwise.
func (h *hap) waitServer(name string, within time.Duration, what string, ok func(row map[string]string) bool) map[string]string {
	h.t.Helper()
	deadline := time.Now().Add(within)
	var last map[string]string
	for {
		srv, err := h.servers()
		if err == nil {
			last = srv[name]
			if last != nil && ok(last) {
				return last
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("server %s not %s within %s: status %q check %q (%s); haproxy said: %s",
				name, what, within, last["status"], last["check_status"], last["last_chk"], h.Out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *hap) waitStatus(name, status string, within time.Duration) map[string]string {
	h.t.Helper()
	return h.waitServer(name, within, status, func(row map[string]string) bool { return row["status"] == status })
}

// clientOptions are paho options for a client through addr, with fast reconnects.
func clientOptions(addr, id string) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(true).SetKeepAlive(60 * time.Second).SetConnectTimeout(2 * time.Second).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetOrderMatters(false)
}

func connect(t *testing.T, opts *mqtt.ClientOptions) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %v as %q: %v", opts.Servers, opts.ClientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func wait(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: timeout or %v", what, tok.Error())
	}
}

// announce publishes the broker's name as the retained whoami message, directly on it.
func announce(t *testing.T, b *mosqtest.Broker, name string) {
	t.Helper()
	c := connect(t, clientOptions(b.Addr, "announce-"+name).SetAutoReconnect(false))
	wait(t, c.Publish(whoamiTopic, 1, true, name), "publish whoami")
	c.Disconnect(100)
}

// brokerOf connects through addr as id and returns the name of the broker it landed on.
func brokerOf(t *testing.T, addr, id string) string {
	t.Helper()
	got := make(chan string, 1)
	c := mqtt.NewClient(clientOptions(addr, id).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect through %s as %q: %v", addr, id, tok.Error())
	}
	defer c.Disconnect(0)
	wait(t, c.Subscribe(whoamiTopic, 0, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- string(m.Payload()):
		default:
		}
	}), "subscribe whoami")
	select {
	case name := <-got:
		return name
	case <-time.After(5 * time.Second):
		t.Fatalf("client %q through %s got no whoami message", id, addr)
		return ""
	}
}

// twoBrokers starts b1 and b2, each announcing its name.
func twoBrokers(t *testing.T) map[string]*mosqtest.Broker {
	t.Helper()
	brokers := map[string]*mosqtest.Broker{
		"b1": mosqtest.Start(t, mosqtest.Options{}),
		"b2": mosqtest.Start(t, mosqtest.Options{}),
	}
	for name, b := range brokers {
		announce(t, b, name)
	}
	return brokers
}

func backends(brokers map[string]*mosqtest.Broker) []haproxy.Backend {
	return []haproxy.Backend{{Name: "b1", Address: brokers["b1"].Addr}, {Name: "b2", Address: brokers["b2"].Addr}}
}

func other(name string) string {
	if name == "b1" {
		return "b2"
	}
	return "b1"
}

func TestE2E(t *testing.T) {
	brokers := twoBrokers(t)
	params := haproxy.Params{Cluster: "e2e", Brokers: backends(brokers)}
	// Two HAProxy "hosts" with the same broker list and no shared state.
	pa, pb := params, params
	pa.CheckClientID, pb.CheckClientID = "haproxy-hc-lb1", "haproxy-hc-lb2"
	lb1, lb2 := startHAProxy(t, pa), startHAProxy(t, pb)
	for _, h := range []*hap{lb1, lb2} {
		for name := range brokers {
			h.waitServer(name, 5*time.Second, "UP after a passed MQTT check", func(row map[string]string) bool {
				return row["status"] == "UP" && row["check_status"] == "L7OK"
			})
		}
	}

	if !t.Run("raw MQTT CONNECT gets CONNACK", func(t *testing.T) {
		// The positive control for the rejection below, with the CONNECT split in two
		// writes: inspect-delay waits for the whole packet instead of judging a fragment.
		c, err := net.Dial("tcp", lb1.Bind)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		pkt := haproxy.CheckConnectPacket("raw-probe", "", "")
		if _, err := c.Write(pkt[:5]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if _, err := c.Write(pkt[5:]); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		connack := make([]byte, 4)
		if _, err := io.ReadFull(c, connack); err != nil {
			t.Fatalf("no CONNACK through HAProxy: %v", err)
		}
		if fmt.Sprintf("%x", connack) != "20020000" {
			t.Fatalf("CONNACK %x, want 20020000", connack)
		}
	}) {
		return
	}
	if !t.Run("non-MQTT payload is closed without a reply", func(t *testing.T) {
		c, err := net.Dial("tcp", lb1.Bind)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		reply, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %s", time.Since(start))
		}
		if len(reply) != 0 {
			t.Fatalf("HAProxy forwarded the request and got a reply: %q", reply)
		}
		// Rejected by the content rule, not by the end of the inspect delay.
		if took := time.Since(start); took >= haproxy.InspectDelay {
			t.Fatalf("closed after %s, not before the inspect delay %s", took, haproxy.InspectDelay)
		}
	}) {
		return
	}

	// id -> broker, as seen through lb1.
	home := map[string]string{}
	if !t.Run("same client id, same broker, on both HAProxy hosts", func(t *testing.T) {
		seen := map[string]int{}
		for i := range 16 {
			id := fmt.Sprintf("client-%02d", i)
			first := brokerOf(t, lb1.Bind, id)
			if again := brokerOf(t, lb1.Bind, id); again != first {
				t.Errorf("%s: lb1 sent it to %s, then to %s", id, first, again)
			}
			if onLB2 := brokerOf(t, lb2.Bind, id); onLB2 != first {
				t.Errorf("%s: lb1 sends it to %s, lb2 to %s", id, first, onLB2)
			}
			home[id] = first
			seen[first]++
		}
		// Affinity must come from the hash, not from everything going to one broker.
		if seen["b1"] == 0 || seen["b2"] == 0 {
			t.Errorf("16 client ids all went to one broker: %v", seen)
		}
		t.Logf("client ids per broker: %v", seen)
	}) {
		return
	}

	if !t.Run("empty client id is balanced round robin", func(t *testing.T) {
		// Nothing to hash: HAProxy falls back to round robin (as the package doc says),
		// rather than sending every such client to one broker.
		seen := map[string]int{}
		for range 6 {
			seen[brokerOf(t, lb1.Bind, "")]++
		}
		if seen["b1"] == 0 || seen["b2"] == 0 {
			t.Errorf("6 clients with an empty id all went to one broker: %v", seen)
		}
	}) {
		return
	}

	if !t.Run("publish and subscribe through HAProxy", func(t *testing.T) {
		// Two clients whose ids hash to the same broker (the brokers are not bridged).
		var sub, pub string
		for id, b := range home {
			if b == home["client-00"] && id != "client-00" {
				sub, pub = "client-00", id
				break
			}
		}
		if pub == "" {
			t.Fatalf("no second client id on %s: %v", home["client-00"], home)
		}
		got := make(chan string, 1)
		s := connect(t, clientOptions(lb1.Bind, sub))
		wait(t, s.Subscribe("ha-test/chat", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }), "subscribe")
		p := connect(t, clientOptions(lb2.Bind, pub))
		wait(t, p.Publish("ha-test/chat", 1, false, "hello through haproxy"), "publish")
		select {
		case m := <-got:
			if m != "hello through haproxy" {
				t.Fatalf("got %q", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the subscriber got nothing")
		}
		s.Disconnect(0)
		p.Disconnect(0)
	}) {
		return
	}

	if !t.Run("broker killed: marked down, client moves to the survivor and back", func(t *testing.T) {
		const id = "client-00"
		dead := home[id]
		survivor := other(dead)
		where := make(chan string, 16)
		c := connect(t, clientOptions(lb1.Bind, id).SetOnConnectHandler(func(c mqtt.Client) {
			// Subscribing in OnConnect: every (re)connection reports its broker.
			c.Subscribe(whoamiTopic, 0, func(_ mqtt.Client, m mqtt.Message) { where <- string(m.Payload()) })
		}))
		expectWhere := func(want string, within time.Duration) {
			t.Helper()
			deadline := time.After(within)
			for {
				select {
				case got := <-where:
					if got == want {
						return
					}
					t.Logf("client %s on %s, waiting for %s", id, got, want)
				case <-deadline:
					t.Fatalf("client %s did not reach %s within %s", id, want, within)
				}
			}
		}
		expectWhere(dead, 5*time.Second)

		killed := time.Now()
		brokers[dead].Kill()
		lb1.waitStatus(dead, "DOWN", 5*time.Second)
		t.Logf("%s marked DOWN %s after the kill", dead, time.Since(killed).Round(time.Millisecond))
		expectWhere(survivor, 10*time.Second)
		t.Logf("client back on %s %s after the kill", survivor, time.Since(killed).Round(time.Millisecond))

		// The client's publishes now reach the survivor.
		got := make(chan string, 1)
		direct := connect(t, clientOptions(brokers[survivor].Addr, "direct-sub"))
		wait(t, direct.Subscribe("ha-test/after", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }), "subscribe")
		wait(t, c.Publish("ha-test/after", 1, false, "still here"), "publish after failover")
		select {
		case m := <-got:
			if m != "still here" {
				t.Fatalf("got %q", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("publish after failover did not reach the survivor")
		}
		c.Disconnect(0)

		// The broker returns: it is marked UP again and the client id goes home
		// (consistent hashing gives the same server back).
		brokers[dead].StartAgain()
		announce(t, brokers[dead], dead)
		lb1.waitStatus(dead, "UP", 5*time.Second)
		if got := brokerOf(t, lb1.Bind, id); got != dead {
			t.Fatalf("after %s came back, %s went to %s", dead, id, got)
		}
	}) {
		return
	}
}

// TestE2EHungBrokerSessionsShutDown freezes a broker (SIGSTOP): its TCP connections stay open
// and the client cannot notice before its 60s keepalive. The MQTT health check fails, HAProxy
// marks the broker down and, with on-marked-down shutdown-sessions, closes the client's
// connection, so the client reconnects to the other broker within seconds.
func TestE2EHungBrokerSessionsShutDown(t *testing.T) {
	brokers := twoBrokers(t)
	lb := startHAProxy(t, haproxy.Params{Cluster: "e2e", Brokers: backends(brokers)})
	for name := range brokers {
		lb.waitStatus(name, "UP", 5*time.Second)
	}
	const id = "frozen-client"
	where := make(chan string, 16)
	c := connect(t, clientOptions(lb.Bind, id).SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe(whoamiTopic, 0, func(_ mqtt.Client, m mqtt.Message) { where <- string(m.Payload()) })
	}))
	defer c.Disconnect(0)
	var hung string
	select {
	case hung = <-where:
	case <-time.After(5 * time.Second):
		t.Fatal("no whoami")
	}
	pid := brokers[hung].Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Registered after mosqtest's Stop, so it runs before it.
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	stopped := time.Now()

	lb.waitStatus(hung, "DOWN", 5*time.Second)
	select {
	case got := <-where:
		if got != other(hung) {
			t.Fatalf("client reconnected to %s, want %s", got, other(hung))
		}
		t.Logf("client moved from hung %s to %s in %s (keepalive 60s)", hung, got, time.Since(stopped).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatalf("client still on the hung broker %s %s after SIGSTOP", hung, time.Since(stopped))
	}
}

// TestE2EHealthCheckCredentials runs HAProxy in front of a broker that requires a password
// (allow_anonymous false, password_file made by mosquitto_passwd): the check sees it UP only
// with the right credentials. The password is long enough for a two-byte remaining length.
func TestE2EHealthCheckCredentials(t *testing.T) {
	passwd := mosqtest.LookPath(t, "mosquitto_passwd", mosqtest.InstallHint)
	const user = "ha-check"
	pass := strings.Repeat("s3cr3t-", 20) // 140 bytes
	pwfile := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command(passwd, "-b", "-c", pwfile, user, pass).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	b := mosqtest.Start(t, mosqtest.Options{Extra: "allow_anonymous false\npassword_file " + pwfile + "\n"})
	if n := len(haproxy.CheckConnectPacket(haproxy.DefaultCheckClientID, user, pass)); n < 130 {
		t.Fatalf("CONNECT of %d bytes does not exercise a two-byte remaining length", n)
	}

	backend := []haproxy.Backend{{Name: "secured", Address: b.Addr}}
	right := startHAProxy(t, haproxy.Params{Cluster: "right", Brokers: backend, Username: user, Password: pass})
	wrong := startHAProxy(t, haproxy.Params{Cluster: "wrong", Brokers: backend, Username: user, Password: pass + "x"})
	none := startHAProxy(t, haproxy.Params{Cluster: "none", Brokers: backend})
	unknown := startHAProxy(t, haproxy.Params{Cluster: "unknown", Brokers: backend, Username: "intruder", Password: pass})

	// HAProxy starts servers UP: wait until the bad ones are down, then require that the
	// good one, checked as often meanwhile, never failed a check.
	for _, h := range []*hap{wrong, none, unknown} {
		row := h.waitStatus("secured", "DOWN", 5*time.Second)
		if row["check_status"] != "L7RSP" {
			t.Errorf("%s: check_status %q (%s), want L7RSP (CONNACK was not 20020000)", h.Bind, row["check_status"], row["last_chk"])
		}
	}
	row := right.waitServer("secured", time.Second, "UP with passed checks", func(row map[string]string) bool {
		return row["status"] == "UP" && row["check_status"] == "L7OK"
	})
	if row["chkfail"] != "0" {
		t.Errorf("right credentials: %s failed checks (%s)", row["chkfail"], row["last_chk"])
	}

	// And the broker does let a client with those credentials in through HAProxy.
	c := connect(t, clientOptions(right.Bind, "with-password").SetUsername(user).SetPassword(pass))
	c.Disconnect(0)
}
