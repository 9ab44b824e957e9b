package haproxy_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mosquitto-ha/haproxy"
	"mosquitto-ha/sysparse/mosqtest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.cfg from the current output")

// installHint is how to get the real tools the tests run.
const installHint = "apt-get install -y haproxy keepalived"

// haproxyBinary returns the haproxy binary, or fails the test (never skips) with the install
// command.
func haproxyBinary(t testing.TB) string {
	t.Helper()
	return mosqtest.LookPath(t, "haproxy", installHint)
}

// haproxyCheck runs `haproxy -c -f` on cfg and returns its error with the tool's output.
func haproxyCheck(t testing.TB, cfg []byte) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(haproxyBinary(t), "-c", "-f", path).CombinedOutput()
	if err != nil {
		return errors.New(err.Error() + ": " + string(out))
	}
	return nil
}

// goldenCases are the configurations kept in testdata/<name>.golden.cfg.
var goldenCases = []struct {
	name string
	p    haproxy.Params
}{
	{"2brokers", haproxy.Params{
		Cluster: "demo",
		Bind:    "198.18.0.100:1883",
		Brokers: []haproxy.Backend{
			{Name: "b1", Address: "198.18.0.11:1883"},
			{Name: "b2", Address: "198.18.0.12:1883"},
		},
	}},
	{"3brokers-credentials", haproxy.Params{
		Cluster: "plant-a",
		Bind:    "198.18.0.100:8883",
		Brokers: []haproxy.Backend{
			{Name: "b1", Address: "198.18.0.11:1883"},
			{Name: "b2", Address: "198.18.0.12:1883"},
			{Name: "b3", Address: "198.18.0.13:1883"},
		},
		CheckInterval: 500 * time.Millisecond,
		CheckClientID: "haproxy-hc-lb1",
		Username:      "ha-check",
		// 100 bytes: the CONNECT's remaining length (138) needs two bytes.
		Password:        strings.Repeat("0123456789", 10),
		ClientKeepalive: 30 * time.Second,
		StatsSocket:     "/run/haproxy/plant-a.sock",
		// The workers of two $share groups, each kept on one broker.
		Pins: []haproxy.Pin{{ClientIDPrefix: "billing-worker-", Broker: "b2"}, {ClientIDPrefix: "etl/", Broker: "b3"}},
	}},
	// One broker behind one plain HAProxy (no VIP); the check logs in with an account of its
	// own that has no password.
	{"1broker-check-account", haproxy.Params{
		Cluster:       "small",
		Bind:          "127.0.0.1:1883",
		Brokers:       []haproxy.Backend{{Name: "b1", Address: "127.0.0.1:18831"}},
		CheckClientID: "haproxy-hc",
		Username:      "haproxy-check",
	}},
	{"5brokers", haproxy.Params{
		Cluster: "edge.eu-1",
		Bind:    "*:1883",
		Brokers: []haproxy.Backend{
			{Name: "b1", Address: "198.18.0.11:1883"},
			{Name: "b2", Address: "198.18.0.12:1884"},
			{Name: "broker-3.lab", Address: "localhost:1885"},
			{Name: "b4", Address: "[::1]:1886"},
			{Name: "b5:east", Address: "198.18.0.15:1883"},
		},
		CheckInterval:   2 * time.Second,
		ClientKeepalive: 61 * time.Second, // 1.5 x 61s + 5s = 96.5s, written in ms
		MaxConn:         50000,
	}},
}

func TestGenerateGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := haproxy.Generate(tc.p)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			again, _ := haproxy.Generate(tc.p)
			if !bytes.Equal(got, again) {
				t.Fatal("Generate is not deterministic")
			}
			path := filepath.Join("testdata", tc.name+".golden.cfg")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./haproxy/ -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (go test ./haproxy/ -update rewrites it):\n%s", path, got)
			}
		})
	}
}

// TestGenerateHAProxyAccepts runs the real `haproxy -c` on every golden configuration, with
// the stats socket moved under t.TempDir().
func TestGenerateHAProxyAccepts(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.StatsSocket = filepath.Join(t.TempDir(), "admin.sock")
			cfg, err := haproxy.Generate(p)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if err := haproxyCheck(t, cfg); err != nil {
				t.Errorf("haproxy -c refused the generated file: %v\n%s", err, cfg)
			}
		})
	}
}

// TestHAProxyCheckRejectsBrokenConfig shows that the check above can fail: haproxy -c exits
// non-zero on a generated file with one keyword broken.
func TestHAProxyCheckRejectsBrokenConfig(t *testing.T) {
	p := goldenCases[0].p
	p.StatsSocket = filepath.Join(t.TempDir(), "admin.sock")
	cfg, err := haproxy.Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, breakIt := range []struct{ from, to string }{
		{"    balance hash var", "    balance hashx var"},
		{"set-var(sess.mqtt_client_id)", "set-var(mqtt_client_id)"},
		{"mqtt_is_valid", "mqtt_is_vallid"},
		{"tcp-check expect binary 20020000", "tcp-check expect binary 2002000"},
	} {
		broken := bytes.Replace(cfg, []byte(breakIt.from), []byte(breakIt.to), 1)
		if bytes.Equal(broken, cfg) {
			t.Fatalf("%q not found in the generated file", breakIt.from)
		}
		if err := haproxyCheck(t, broken); err == nil {
			t.Errorf("haproxy -c accepted a file with %q replaced by %q", breakIt.from, breakIt.to)
		}
	}
}

func TestGenerateContents(t *testing.T) {
	cfg, err := haproxy.Generate(haproxy.Params{
		Cluster: "demo",
		Bind:    "198.18.0.100:1883",
		Brokers: []haproxy.Backend{{Name: "b1", Address: "198.18.0.11:1883"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(cfg, []byte("# haproxy.cfg for the MQTT front of mosquitto-ha cluster \"demo\".\n"+
		"# Generated by `mosquitto-ha haproxy`: do not edit by hand,")) {
		t.Errorf("generated file lacks the header comment:\n%s", cfg)
	}
	for _, line := range []string{
		"    mode tcp",
		"    tcp-request inspect-delay 5s",
		"    tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }",
		"    tcp-request content set-var(sess.mqtt_client_id) req.payload(0,0),mqtt_field_value(connect,client_identifier)",
		"    balance hash var(sess.mqtt_client_id)",
		"    hash-type consistent",
		"    option tcp-check",
		"    tcp-check connect",
		// design.md: CONNECT 3.1.1, clean, keepalive 60, id haproxy-hc.
		"    tcp-check send-binary 101600044d5154540402003c000a686170726f78792d6863",
		"    tcp-check expect binary 20020000",
		"    tcp-check send-binary e000",
		"    default-server check inter 1s fall 3 rise 2 on-marked-down shutdown-sessions",
		"    server b1 198.18.0.11:1883",
		"    stats socket /run/haproxy/admin.sock mode 600 level admin",
		"    # No maxconn: HAProxy derives it from its file-descriptor limit.",
		// Default keepalive 60s: 1.5 x 60s + 5s.
		"    # wait longer than the broker: 1.5 x K + 5s = 95s.",
		"    timeout client 95s",
		"    timeout server 95s",
	} {
		if !bytes.Contains(cfg, []byte(line+"\n")) {
			t.Errorf("generated file lacks the line %q", line)
		}
	}
}

func TestIdleTimeoutFormula(t *testing.T) {
	for _, tc := range []struct {
		keepalive time.Duration
		want      string
	}{
		{0, "95s"}, // default 60s
		{60 * time.Second, "95s"},
		{10 * time.Second, "20s"},
		{61 * time.Second, "96500ms"},
		{65535 * time.Second, "98307500ms"},
	} {
		cfg, err := haproxy.Generate(haproxy.Params{Cluster: "c", Bind: ":1883",
			Brokers:         []haproxy.Backend{{Name: "b", Address: "127.0.0.1:1883"}},
			ClientKeepalive: tc.keepalive})
		if err != nil {
			t.Fatal(err)
		}
		for _, kw := range []string{"client", "server", "tunnel"} {
			if line := "    timeout " + kw + " " + tc.want + "\n"; !bytes.Contains(cfg, []byte(line)) {
				t.Errorf("keepalive %s: want %q in\n%s", tc.keepalive, line, cfg)
			}
		}
	}
}

func TestCheckConnectPacket(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		clientID, user, passwd string
		want                   string
	}{
		// The hex of design.md.
		{"default", "haproxy-hc", "", "", "101600044d5154540402003c000a686170726f78792d6863"},
		// Flags 0xc2: username, password, clean session; fields after the client id.
		{"credentials", "c", "u", "p", "1013" + "00044d515454" + "04" + "c2" + "003c" + "000163" + "000175" + "000170"},
		{"username only", "c", "u", "", "1010" + "00044d515454" + "04" + "82" + "003c" + "000163" + "000175"},
		// [MQTT-3.1.2-22] no password without a username.
		{"password without username", "c", "", "p", "100d" + "00044d515454" + "04" + "02" + "003c" + "000163"},
		{"empty client id", "", "", "", "100c" + "00044d515454" + "04" + "02" + "003c" + "0000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := hex.EncodeToString(haproxy.CheckConnectPacket(tc.clientID, tc.user, tc.passwd))
			if got != tc.want {
				t.Errorf("CheckConnectPacket(%q, %q, %q)\n got %s\nwant %s", tc.clientID, tc.user, tc.passwd, got, tc.want)
			}
		})
	}
}

// TestCheckConnectPacketRemainingLength checks the MQTT varint (2.2.3) at its byte boundaries:
// the remaining length of a CONNECT with no credentials is 12 + len(clientID).
func TestCheckConnectPacketRemainingLength(t *testing.T) {
	for _, tc := range []struct {
		remaining int
		varint    string
	}{
		{127, "7f"},
		{128, "8001"},
		{321, "c102"},
		{16383, "ff7f"},
		{16384, "808001"},
		{65547, "8b8004"}, // the longest client id, 65535 bytes
	} {
		id := strings.Repeat("x", tc.remaining-12)
		pkt := haproxy.CheckConnectPacket(id, "", "")
		wantHead := "10" + tc.varint
		if got := hex.EncodeToString(pkt[:len(wantHead)/2]); got != wantHead {
			t.Errorf("remaining length %d: header %s, want %s", tc.remaining, got, wantHead)
		}
		if got := len(pkt) - len(wantHead)/2; got != tc.remaining {
			t.Errorf("remaining length %d: %d bytes follow the header", tc.remaining, got)
		}
		clientID, user, pass, ok := parseConnect(pkt)
		if !ok || clientID != id || user != "" || pass != "" {
			t.Errorf("remaining length %d: packet does not parse back (ok %v)", tc.remaining, ok)
		}
	}
	// Credentials long enough to need a two-byte remaining length.
	pass := strings.Repeat("p", 300)
	clientID, user, got, ok := parseConnect(haproxy.CheckConnectPacket("hc", "user", pass))
	if !ok || clientID != "hc" || user != "user" || got != pass {
		t.Errorf("CONNECT with a 300-byte password does not parse back: %q %q %d bytes ok=%v", clientID, user, len(got), ok)
	}
}

// parseConnect is an independent reader of the CONNECT CheckConnectPacket builds.
func parseConnect(pkt []byte) (clientID, user, pass string, ok bool) {
	if len(pkt) < 2 || pkt[0] != 0x10 {
		return "", "", "", false
	}
	n, mult, i := 0, 1, 1
	for ; i < len(pkt) && i <= 4; i++ {
		n += int(pkt[i]&0x7f) * mult
		mult *= 128
		if pkt[i]&0x80 == 0 {
			break
		}
	}
	body := pkt[i+1:]
	if len(body) != n || len(body) < 10 || string(body[:6]) != "\x00\x04MQTT" || body[6] != 4 ||
		body[8] != 0 || body[9] != 60 {
		return "", "", "", false
	}
	flags, rest := body[7], body[10:]
	str := func() (string, bool) {
		if len(rest) < 2 {
			return "", false
		}
		l := int(rest[0])<<8 | int(rest[1])
		if len(rest) < 2+l {
			return "", false
		}
		s := string(rest[2 : 2+l])
		rest = rest[2+l:]
		return s, true
	}
	if clientID, ok = str(); !ok {
		return
	}
	if flags&0x80 != 0 {
		if user, ok = str(); !ok {
			return
		}
	}
	if flags&0x40 != 0 {
		if pass, ok = str(); !ok {
			return
		}
	}
	return clientID, user, pass, len(rest) == 0 && flags&^0xc0 == 0x02
}

func validParams() haproxy.Params {
	return haproxy.Params{
		Cluster: "demo",
		Bind:    "198.18.0.100:1883",
		Brokers: []haproxy.Backend{
			{Name: "b1", Address: "198.18.0.11:1883"},
			{Name: "b2", Address: "198.18.0.12:1883"},
		},
	}
}

func TestGenerateInvalidParams(t *testing.T) {
	g := mosqtest.Generator[haproxy.Params]{Valid: validParams, Generate: haproxy.Generate,
		Err: haproxy.ErrInvalidParams, Prefix: "haproxy: invalid params: "}
	mosqtest.InvalidParams(t, g, []mosqtest.InvalidCase[haproxy.Params]{
		{Name: "empty cluster", Change: func(p *haproxy.Params) { p.Cluster = "" },
			Want: `Cluster "": empty (want letters, digits, '-', '_', '.')`},
		{Name: "cluster with space", Change: func(p *haproxy.Params) { p.Cluster = "my cluster" },
			Want: `Cluster "my cluster": invalid character ' ' (want letters, digits, '-', '_', '.')`},
		{Name: "empty bind", Change: func(p *haproxy.Params) { p.Bind = "" },
			Want: `Bind "": empty (want ip:port or *:port)`},
		{Name: "bind without port", Change: func(p *haproxy.Params) { p.Bind = "198.18.0.100" },
			Want: `Bind "198.18.0.100": missing port (want ip:port or *:port)`},
		{Name: "bind to a host name", Change: func(p *haproxy.Params) { p.Bind = "mqtt.example:1883" },
			Want: `Bind "mqtt.example:1883": host "mqtt.example" is not an IP address or * (want ip:port or *:port)`},
		{Name: "bind port zero", Change: func(p *haproxy.Params) { p.Bind = "*:0" },
			Want: `Bind "*:0": port 0 out of range (want 1-65535)`},
		{Name: "no brokers", Change: func(p *haproxy.Params) { p.Brokers = nil },
			Want: `Brokers: empty (want at least one broker)`},
		{Name: "broker without port", Change: func(p *haproxy.Params) { p.Brokers[1].Address = "10.0.0.7" },
			Want: `Brokers[1].Address "10.0.0.7": missing port (want host:port)`},
		{Name: "broker IPv6 without brackets", Change: func(p *haproxy.Params) { p.Brokers[1].Address = "fd00::7:1883" },
			Want: `Brokers[1].Address "fd00::7:1883": missing port (want host:port)`},
		{Name: "broker bad host", Change: func(p *haproxy.Params) { p.Brokers[0].Address = "bad_host:1883" },
			Want: `Brokers[0].Address "bad_host:1883": host "bad_host" is not an IP address or DNS name (want host:port)`},
		{Name: "broker port not a number", Change: func(p *haproxy.Params) { p.Brokers[0].Address = "10.0.0.7:mqtt" },
			Want: `Brokers[0].Address "10.0.0.7:mqtt": port "mqtt" is not a number (want 1-65535)`},
		{Name: "broker empty port", Change: func(p *haproxy.Params) { p.Brokers[0].Address = "10.0.0.7:" },
			Want: `Brokers[0].Address "10.0.0.7:": missing port (want a port 1-65535)`},
		{Name: "broker port too big", Change: func(p *haproxy.Params) { p.Brokers[0].Address = "10.0.0.7:65536" },
			Want: `Brokers[0].Address "10.0.0.7:65536": port 65536 out of range (want 1-65535)`},
		{Name: "duplicate broker address", Change: func(p *haproxy.Params) { p.Brokers[1].Address = "198.18.0.11:1883" },
			Want: `Brokers[1].Address "198.18.0.11:1883": same as Brokers[0] (want one entry per broker)`},
		{Name: "empty broker name", Change: func(p *haproxy.Params) { p.Brokers[0].Name = "" },
			Want: `Brokers[0].Name "": empty (want letters, digits, '-', '_', '.', ':')`},
		{Name: "broker name with space", Change: func(p *haproxy.Params) { p.Brokers[0].Name = "b 1" },
			Want: `Brokers[0].Name "b 1": invalid character ' ' (want letters, digits, '-', '_', '.', ':')`},
		{Name: "duplicate broker name", Change: func(p *haproxy.Params) { p.Brokers[1].Name = "b1" },
			Want: `Brokers[1].Name "b1": same as Brokers[0] (want unique names)`},
		{Name: "negative check interval", Change: func(p *haproxy.Params) { p.CheckInterval = -time.Second },
			Want: `CheckInterval -1s: negative (want at least 100ms, or 0 for the default 1s)`},
		{Name: "check interval too short", Change: func(p *haproxy.Params) { p.CheckInterval = 50 * time.Millisecond },
			Want: `CheckInterval 50ms: below 100ms (want at least 100ms)`},
		{Name: "check interval below a millisecond", Change: func(p *haproxy.Params) { p.CheckInterval = 150*time.Millisecond + 500*time.Microsecond },
			Want: `CheckInterval 150.5ms: not a whole number of milliseconds (want e.g. 150ms)`},
		{Name: "client id with NUL", Change: func(p *haproxy.Params) { p.CheckClientID = "hc\x00" },
			Want: `CheckClientID "hc\x00": contains U+0000 [MQTT-1.5.3-2] (want text without NUL)`},
		{Name: "client id not UTF-8", Change: func(p *haproxy.Params) { p.CheckClientID = "hc\xff" },
			Want: `CheckClientID "hc\xff": not well-formed UTF-8 [MQTT-1.5.3-1] (want UTF-8 text)`},
		{Name: "client id too long", Change: func(p *haproxy.Params) { p.CheckClientID = strings.Repeat("x", 65536) },
			Want: `CheckClientID "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...": 65536 bytes, above the MQTT maximum of 65535 [MQTT-1.5.3] (want a shorter value)`},
		{Name: "username not UTF-8", Change: func(p *haproxy.Params) { p.Username = "\xc3\x28" },
			Want: `Username "\xc3(": not well-formed UTF-8 [MQTT-1.5.3-1] (want UTF-8 text)`},
		{Name: "password without username", Change: func(p *haproxy.Params) { p.Password = "secret" },
			Want: `Password: set without Username [MQTT-3.1.2-22] (want a Username too, or no Password)`},
		{Name: "password too long", Change: func(p *haproxy.Params) { p.Username = "u"; p.Password = strings.Repeat("p", 65536) },
			Want: `Password: 65536 bytes, above the MQTT maximum of 65535 (want a shorter password)`},
		{Name: "check packet too big", Change: func(p *haproxy.Params) { p.Username = "u"; p.Password = strings.Repeat("p", haproxy.MaxCheckPacket-29) },
			Want: `CheckClientID, Username, Password: the health check CONNECT is 8193 bytes, above 8192 (want shorter values)`},
		{Name: "negative keepalive", Change: func(p *haproxy.Params) { p.ClientKeepalive = -5 * time.Second },
			Want: `ClientKeepalive -5s: negative (want 1s to 65535s, or 0 for the default 1m0s)`},
		{Name: "keepalive not whole seconds", Change: func(p *haproxy.Params) { p.ClientKeepalive = 1500 * time.Millisecond },
			Want: `ClientKeepalive 1.5s: not a whole number of seconds (want whole seconds, as in MQTT's keepalive)`},
		{Name: "keepalive above MQTT maximum", Change: func(p *haproxy.Params) { p.ClientKeepalive = 65536 * time.Second },
			Want: `ClientKeepalive 18h12m16s: above 65535s, the MQTT maximum (want 1s to 65535s)`},
		{Name: "relative stats socket", Change: func(p *haproxy.Params) { p.StatsSocket = "admin.sock" },
			Want: `StatsSocket "admin.sock": not an absolute path (want e.g. /run/haproxy/admin.sock)`},
		{Name: "stats socket with space", Change: func(p *haproxy.Params) { p.StatsSocket = "/run/my haproxy/admin.sock" },
			Want: `StatsSocket "/run/my haproxy/admin.sock": contains a space, quote, '\' or '#' (want a plain path)`},
		{Name: "stats socket too long", Change: func(p *haproxy.Params) { p.StatsSocket = "/" + strings.Repeat("s", 107) },
			Want: `StatsSocket "/` + strings.Repeat("s", 107) + `": 108 bytes, above the 107 of a unix socket path (want a shorter path)`},
		{Name: "pin to an unknown broker", Change: func(p *haproxy.Params) { p.Pins = []haproxy.Pin{{ClientIDPrefix: "w-", Broker: "b9"}} },
			Want: `Pins[0].Broker "b9": not one of Brokers (want a broker's Name)`},
		{Name: "pin prefix empty", Change: func(p *haproxy.Params) { p.Pins = []haproxy.Pin{{Broker: "b1"}} },
			Want: `Pins[0].ClientIDPrefix "": empty (want the start of the client ids to pin, e.g. "worker-")`},
		{Name: "pin prefix with space", Change: func(p *haproxy.Params) { p.Pins = []haproxy.Pin{{ClientIDPrefix: "w }", Broker: "b1"}} },
			Want: `Pins[0].ClientIDPrefix "w }": contains ' ' (want printable ASCII without space, quote, '\', '#', '{' or '}')`},
		{Name: "pin prefix twice", Change: func(p *haproxy.Params) {
			p.Pins = []haproxy.Pin{{ClientIDPrefix: "w-", Broker: "b1"}, {ClientIDPrefix: "w-", Broker: "b2"}}
		}, Want: `Pins[1].ClientIDPrefix "w-": same as Pins[0] (want one pin per prefix)`},
		{Name: "negative maxconn", Change: func(p *haproxy.Params) { p.MaxConn = -1 },
			Want: `MaxConn -1: negative (want a positive number, or 0 to let HAProxy derive it from its file-descriptor limit)`},
		{Name: "several problems at once", Change: func(p *haproxy.Params) {
			p.Bind = "198.18.0.100"
			p.Brokers[1] = haproxy.Backend{Name: "b1", Address: "10.0.0.7"}
			p.CheckInterval = 10 * time.Millisecond
		}, Want: `4 problems: Bind "198.18.0.100": missing port (want ip:port or *:port); ` +
			`Brokers[1].Name "b1": same as Brokers[0] (want unique names); ` +
			`Brokers[1].Address "10.0.0.7": missing port (want host:port); ` +
			`CheckInterval 10ms: below 100ms (want at least 100ms)`},
	})
}

// TestGenerateValidEdgeCases are inputs at the edge of what validate accepts.
func TestGenerateValidEdgeCases(t *testing.T) {
	for name, change := range map[string]func(p *haproxy.Params){
		"bind all addresses without host": func(p *haproxy.Params) { p.Bind = ":1883" },
		"bind IPv6":                       func(p *haproxy.Params) { p.Bind = "[::]:1883" },
		// HAProxy resolves names once, at start, and refuses to start if one does not resolve.
		"broker DNS name":                  func(p *haproxy.Params) { p.Brokers[0].Address = "localhost:1883" },
		"shortest check interval":          func(p *haproxy.Params) { p.CheckInterval = 100 * time.Millisecond },
		"longest keepalive":                func(p *haproxy.Params) { p.ClientKeepalive = 65535 * time.Second },
		"username without password":        func(p *haproxy.Params) { p.Username = "monitor" },
		"client id with space and unicode": func(p *haproxy.Params) { p.CheckClientID = "haproxy hc é" },
		"largest check packet": func(p *haproxy.Params) {
			p.Username = "u"
			p.Password = strings.Repeat("p", haproxy.MaxCheckPacket-30) // 30 bytes of header and fields
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := validParams()
			change(&p)
			p.StatsSocket = filepath.Join(t.TempDir(), "admin.sock")
			cfg, err := haproxy.Generate(p)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if err := haproxyCheck(t, cfg); err != nil {
				t.Errorf("haproxy -c: %v", err)
			}
		})
	}
}
