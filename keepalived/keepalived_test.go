package keepalived_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"mosquitto-ha/keepalived"
	"mosquitto-ha/sysparse/mosqtest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.conf from the current output")

// installHint is how to get the real tools the tests run.
const installHint = "apt-get install -y haproxy keepalived"

// inNetns returns a command that runs argv in a fresh network namespace (unshare -n) where the
// loopback is up and a veth pair iface/iface+"p" exists, since keepalived refuses a
// configuration whose interface is missing or the loopback. Nothing in that namespace reaches
// another one. As root the namespace is a plain one; otherwise it is owned by a new user
// namespace (unshare -r), which is enough for `keepalived -t`.
func inNetns(t testing.TB, iface string, argv ...string) *exec.Cmd {
	t.Helper()
	unshare := mosqtest.LookPath(t, "unshare", "apt-get install -y util-linux")
	mosqtest.LookPath(t, "ip", "apt-get install -y iproute2")
	flags := "-n"
	if os.Geteuid() != 0 {
		flags = "-rn"
	}
	setup := fmt.Sprintf("ip link set lo up && ip link add %[1]s type veth peer name %[1]sp && "+
		"ip link set %[1]s up && ip link set %[1]sp up && exec \"$@\"", iface)
	return exec.Command(unshare, append([]string{flags, "sh", "-c", setup, "sh"}, argv...)...)
}

// keepalivedCheck runs `keepalived -t -f` on conf in a network namespace that has iface.
func keepalivedCheck(t testing.TB, conf []byte, iface string) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keepalived.conf")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := inNetns(t, iface, mosqtest.LookPath(t, "keepalived", installHint), "-t", "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

var pair = []keepalived.Peer{
	{Name: "lb1", Address: "198.18.0.1"},
	{Name: "lb2", Address: "198.18.0.2"},
}

var trio = []keepalived.Peer{
	{Name: "lb-a", Address: "198.18.0.1", Priority: 120},
	{Name: "lb-b", Address: "198.18.0.2", Priority: 110},
	{Name: "lb-c", Address: "198.18.0.3", Priority: 100},
}

// goldenCases are the configurations kept in testdata/<name>.golden.conf.
var goldenCases = []struct {
	name string
	p    keepalived.Params
}{
	{"2hosts-lb1", keepalived.Params{Cluster: "demo", Self: "lb1", Hosts: pair, VIP: "198.18.0.100/15", Interface: "eth0"}},
	{"2hosts-lb2", keepalived.Params{Cluster: "demo", Self: "lb2", Hosts: pair, VIP: "198.18.0.100/15", Interface: "eth0"}},
	// Three hosts, explicit priorities and router id, preempt, a slower advert and a custom
	// check whose double quotes must survive keepalived's parser.
	{"3hosts-lb-a", trioParams("lb-a")},
	{"3hosts-lb-b", trioParams("lb-b")},
	{"3hosts-lb-c", trioParams("lb-c")},
	{"2hosts-ipv6-lb1", keepalived.Params{Cluster: "v6", Self: "lb1",
		Hosts:     []keepalived.Peer{{Name: "lb1", Address: "fd00:198:18::1"}, {Name: "lb2", Address: "fd00:198:18::2"}},
		VIP:       "fd00:198:18::100/64",
		Interface: "ens3", AdvertInterval: 50 * time.Millisecond}},
}

func trioParams(self string) keepalived.Params {
	return keepalived.Params{
		Cluster: "plant-a", Self: self, Hosts: trio, VIP: "198.18.0.100/15", Interface: "eth1",
		RouterID: 42, AdvertInterval: 1250 * time.Millisecond, Preempt: true,
		CheckScript: `/bin/sh -c "test -S /run/haproxy/admin.sock"`,
	}
}

func TestGenerateGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := keepalived.Generate(tc.p)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if again, _ := keepalived.Generate(tc.p); !bytes.Equal(got, again) {
				t.Fatal("Generate is not deterministic")
			}
			path := filepath.Join("testdata", tc.name+".golden.conf")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./keepalived/ -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (go test ./keepalived/ -update rewrites it):\n%s", path, got)
			}
		})
	}
}

// TestGenerateKeepalivedAccepts runs the real `keepalived -t` on every golden file.
func TestGenerateKeepalivedAccepts(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := os.ReadFile(filepath.Join("testdata", tc.name+".golden.conf"))
			if err != nil {
				t.Fatal(err)
			}
			if err := keepalivedCheck(t, conf, tc.p.Interface); err != nil {
				t.Errorf("keepalived -t refused %s: %v", tc.name, err)
			}
		})
	}
}

// TestKeepalivedCheckRejectsBrokenConfig shows that the check above can fail.
func TestKeepalivedCheckRejectsBrokenConfig(t *testing.T) {
	conf, err := keepalived.Generate(goldenCases[0].p)
	if err != nil {
		t.Fatal(err)
	}
	for _, breakIt := range []struct{ from, to string }{
		{"priority 200", "priority 300"},
		{"advert_int 0.2", "advert_int 0.005"},
		{"    nopreempt\n", "    nopreempt\n    no_such_keyword\n"},
		{"script \"/bin/sh ", "script \"/nonexistent/sh "},
		{"dev eth0", "dev eth9"},
	} {
		broken := bytes.Replace(conf, []byte(breakIt.from), []byte(breakIt.to), 1)
		if bytes.Equal(broken, conf) {
			t.Fatalf("%q not found in the generated file", breakIt.from)
		}
		if err := keepalivedCheck(t, broken, "eth0"); err == nil {
			t.Errorf("keepalived -t accepted a file with %q replaced by %q", breakIt.from, breakIt.to)
		}
	}
	if err := keepalivedCheck(t, conf, "eth1"); err == nil {
		t.Error("keepalived -t accepted a file whose interface eth0 does not exist")
	}
}

func TestGenerateContents(t *testing.T) {
	conf, err := keepalived.Generate(goldenCases[1].p) // lb2 of the pair
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"global_defs {",
		"    router_id demo-lb2",
		"    enable_script_security",
		"    script_user root",
		"    vrrp_version 3",
		"vrrp_script chk_haproxy {",
		"    weight 0",
		"    init_fail",
		"vrrp_instance demo_mqtt {",
		"    state BACKUP",
		"    nopreempt",
		"    interface eth0",
		"    virtual_router_id 25", // DefaultRouterID("demo")
		"    priority 190",         // DefaultPriority(1)
		"    advert_int 0.2",
		"    unicast_src_ip 198.18.0.2",
		"    unicast_peer {\n        198.18.0.1\n    }",
		"    virtual_ipaddress {\n        198.18.0.100/15 dev eth0\n    }",
		"    track_script {\n        chk_haproxy\n    }",
		// 3 x 0.2 + (256 - 190) x 0.2 / 256 = 0.6515625
		"    # = 3 x 0.2s + (256 - 190) x 0.2s / 256 = 0.652s.",
	} {
		if !bytes.Contains(conf, []byte(line+"\n")) {
			t.Errorf("generated file lacks %q", line)
		}
	}
	if !bytes.HasPrefix(conf, []byte("# keepalived.conf of lb2, load balancer of mosquitto-ha cluster \"demo\".\n"+
		"# Generated by `mosquitto-ha keepalived`: do not edit by hand,")) {
		t.Errorf("generated file lacks the header comment:\n%s", conf)
	}

	// The other host of a three-host set lists both others as peers, not itself.
	conf, err = keepalived.Generate(trioParams("lb-b"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "    unicast_src_ip 198.18.0.2\n    unicast_peer {\n        198.18.0.1\n        198.18.0.3\n    }\n"; !bytes.Contains(conf, []byte(want)) {
		t.Errorf("lb-b: want %q in\n%s", want, conf)
	}
	if bytes.Contains(conf, []byte("nopreempt")) {
		t.Error("Preempt true still writes nopreempt")
	}
}

func TestAdvertInterval(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0.2"}, // default
		{10 * time.Millisecond, "0.01"},
		{100 * time.Millisecond, "0.1"},
		{time.Second, "1"},
		{1250 * time.Millisecond, "1.25"},
		{40950 * time.Millisecond, "40.95"},
	} {
		p := goldenCases[0].p
		p.AdvertInterval = tc.d
		conf, err := keepalived.Generate(p)
		if err != nil {
			t.Fatalf("%s: %v", tc.d, err)
		}
		if line := "    advert_int " + tc.want + "\n"; !bytes.Contains(conf, []byte(line)) {
			t.Errorf("AdvertInterval %s: want %q", tc.d, line)
		}
	}
}

func TestDefaultRouterID(t *testing.T) {
	// Fixed values (computed with a separate FNV-1a implementation): a change here changes
	// every deployed cluster's virtual_router_id.
	for cluster, want := range map[string]int{"demo": 25, "plant-a": 199, "": 2} {
		if got := keepalived.DefaultRouterID(cluster); got != want {
			t.Errorf("DefaultRouterID(%q) = %d, want %d", cluster, got, want)
		}
	}
	seen := map[int]bool{}
	for i := range 2000 {
		id := keepalived.DefaultRouterID(fmt.Sprintf("cluster-%d", i))
		if id < 1 || id > 255 {
			t.Fatalf("DefaultRouterID out of range: %d", id)
		}
		seen[id] = true
	}
	if len(seen) < 250 {
		t.Errorf("2000 names use only %d of the 255 router ids", len(seen))
	}
}

func validParams() keepalived.Params {
	hosts := append([]keepalived.Peer(nil), pair...)
	return keepalived.Params{Cluster: "demo", Self: "lb1", Hosts: hosts, VIP: "198.18.0.100/15", Interface: "eth0"}
}

func TestGenerateInvalidParams(t *testing.T) {
	g := mosqtest.Generator[keepalived.Params]{Valid: validParams, Generate: keepalived.Generate,
		Err: keepalived.ErrInvalidParams, Prefix: "keepalived: invalid params: "}
	mosqtest.InvalidParams(t, g, []mosqtest.InvalidCase[keepalived.Params]{
		{Name: "empty cluster", Change: func(p *keepalived.Params) { p.Cluster = "" },
			Want: `Cluster "": empty (want letters, digits, '-', '_', '.')`},
		{Name: "cluster with slash", Change: func(p *keepalived.Params) { p.Cluster = "a/b" },
			Want: `Cluster "a/b": invalid character '/' (want letters, digits, '-', '_', '.')`},
		{Name: "one host", Change: func(p *keepalived.Params) { p.Hosts = p.Hosts[:1] },
			Want: `Hosts: 1 hosts (want at least 2: VRRP moves the VIP between hosts)`},
		{Name: "host name with space", Change: func(p *keepalived.Params) { p.Hosts[1].Name = "lb 2" },
			Want: `Hosts[1].Name "lb 2": invalid character ' ' (want letters, digits, '-', '_', '.')`},
		{Name: "duplicate host name", Change: func(p *keepalived.Params) { p.Hosts[1].Name = "lb1" },
			Want: `Hosts[1].Name "lb1": same as Hosts[0] (want unique names)`},
		{Name: "empty address", Change: func(p *keepalived.Params) { p.Hosts[1].Address = "" },
			Want: `Hosts[1].Address "": empty (want the host's IP address on the VRRP interface)`},
		{Name: "address with port", Change: func(p *keepalived.Params) { p.Hosts[1].Address = "10.0.0.7:1883" },
			Want: `Hosts[1].Address "10.0.0.7:1883": not an IP address (want an IP address, no port)`},
		{Name: "address with zone", Change: func(p *keepalived.Params) { p.Hosts[1].Address = "fe80::1%eth0" },
			Want: `Hosts[1].Address "fe80::1%eth0": has a zone (want an IP address without %zone)`},
		{Name: "duplicate address", Change: func(p *keepalived.Params) { p.Hosts[1].Address = "198.18.0.1" },
			Want: `Hosts[1].Address "198.18.0.1": same as Hosts[0] (want one address per host)`},
		{Name: "mixed families", Change: func(p *keepalived.Params) { p.Hosts[1].Address = "fd00::2" },
			Want: `Hosts[1].Address "fd00::2": IPv6, but Hosts[0] is IPv4 (want one address family)`},
		{Name: "priority 255", Change: func(p *keepalived.Params) { p.Hosts[0].Priority = 255 },
			Want: `Hosts[0].Priority 255: out of range (want 1-254; 255 is reserved for the VIP's owner)`},
		{Name: "negative priority", Change: func(p *keepalived.Params) { p.Hosts[1].Priority = -1 },
			Want: `Hosts[1].Priority -1: out of range (want 1-254; 255 is reserved for the VIP's owner)`},
		{Name: "equal priorities", Change: func(p *keepalived.Params) { p.Hosts[0].Priority = 190 }, // lb2 defaults to 190
			Want: `Hosts[1].Priority 190: same as Hosts[0] (want distinct priorities, so that the first master is known)`},
		{Name: "self not a host", Change: func(p *keepalived.Params) { p.Self = "lb3" },
			Want: `Self "lb3": not among Hosts (want one of: lb1, lb2)`},
		{Name: "empty VIP", Change: func(p *keepalived.Params) { p.VIP = "" },
			Want: `VIP "": empty (want address/prefix, e.g. 198.18.0.100/15)`},
		{Name: "VIP without prefix", Change: func(p *keepalived.Params) { p.VIP = "198.18.0.100" },
			Want: `VIP "198.18.0.100": missing prefix length (want e.g. 198.18.0.100/32)`},
		{Name: "VIP not an address", Change: func(p *keepalived.Params) { p.VIP = "vip.example/24" },
			Want: `VIP "vip.example/24": not address/prefix (want e.g. 198.18.0.100/15)`},
		{Name: "VIP of the other family", Change: func(p *keepalived.Params) { p.VIP = "fd00::100/64" },
			Want: `VIP "fd00::100/64": IPv6, but Hosts are IPv4 (want one address family)`},
		{Name: "VIP owned by a host", Change: func(p *keepalived.Params) { p.VIP = "198.18.0.2/15" },
			Want: `VIP "198.18.0.2/15": the address of Hosts[1] (want an address no host owns)`},
		{Name: "empty interface", Change: func(p *keepalived.Params) { p.Interface = "" },
			Want: `Interface "": empty (want the interface of the LB hosts' segment, e.g. eth0)`},
		{Name: "interface too long", Change: func(p *keepalived.Params) { p.Interface = "enp0s31f6-bridge0" },
			Want: `Interface "enp0s31f6-bridge0": 17 bytes, above Linux's 15 (want an interface name)`},
		{Name: "interface with slash", Change: func(p *keepalived.Params) { p.Interface = "eth0/1" },
			Want: `Interface "eth0/1": not an interface name (want e.g. eth0)`},
		{Name: "router id too big", Change: func(p *keepalived.Params) { p.RouterID = 256 },
			Want: `RouterID 256: out of range (want 1-255, or 0 for the default derived from Cluster)`},
		{Name: "negative router id", Change: func(p *keepalived.Params) { p.RouterID = -3 },
			Want: `RouterID -3: out of range (want 1-255, or 0 for the default derived from Cluster)`},
		{Name: "negative advert", Change: func(p *keepalived.Params) { p.AdvertInterval = -time.Second },
			Want: `AdvertInterval -1s: negative (want 10ms to 40.95s, or 0 for the default 200ms)`},
		{Name: "advert below centisecond", Change: func(p *keepalived.Params) { p.AdvertInterval = 5 * time.Millisecond },
			Want: `AdvertInterval 5ms: not a multiple of 10ms (want e.g. 10ms: VRRPv3 counts centiseconds)`},
		{Name: "advert not centiseconds", Change: func(p *keepalived.Params) { p.AdvertInterval = 204 * time.Millisecond },
			Want: `AdvertInterval 204ms: not a multiple of 10ms (want e.g. 200ms: VRRPv3 counts centiseconds)`},
		{Name: "advert too long", Change: func(p *keepalived.Params) { p.AdvertInterval = 41 * time.Second },
			Want: `AdvertInterval 41s: above 40.95s, the VRRPv3 maximum (want 10ms to 40.95s)`},
		{Name: "auth pass", Change: func(p *keepalived.Params) { p.AuthPass = "secret" },
			Want: `AuthPass: set, but VRRPv3 has no authentication (RFC 5798; keepalived ignores it) ` +
				`(want it empty, and a firewall that accepts VRRP, IP protocol 112, only from the peers)`},
		{Name: "script not absolute", Change: func(p *keepalived.Params) { p.CheckScript = "pidof haproxy" },
			Want: `CheckScript "pidof haproxy": "pidof" is not an absolute path (want e.g. /usr/bin/pidof: keepalived's script security needs one)`},
		{Name: "script calls pidof directly", Change: func(p *keepalived.Params) { p.CheckScript = "/usr/bin/pidof haproxy" },
			Want: `CheckScript "/usr/bin/pidof haproxy": "/usr/bin/pidof" is a symlink to killall5, which keepalived runs as killall5 ` +
				`(want /bin/sh -c 'pidof ...', or the default, which also checks the network namespace)`},
		{Name: "blank script", Change: func(p *keepalived.Params) { p.CheckScript = "   " },
			Want: `CheckScript "   ": blank (want a command, or empty for the default)`},
		{Name: "script with newline", Change: func(p *keepalived.Params) { p.CheckScript = "/bin/true\n}" },
			Want: `CheckScript "/bin/true\n}": contains a control character (want one line)`},
		{Name: "script with backslash", Change: func(p *keepalived.Params) { p.CheckScript = `/bin/sh -c "echo a\\b"` },
			Want: `CheckScript "/bin/sh -c \"echo a\\\\b\"": contains '\', which keepalived drops (want a command without backslashes, or a script file)`},
		{Name: "several problems at once", Change: func(p *keepalived.Params) {
			p.Self = "lb9"
			p.Hosts[1].Address = "10.0.0.7:1883"
			p.AuthPass = "x"
		}, Want: `3 problems: Hosts[1].Address "10.0.0.7:1883": not an IP address (want an IP address, no port); ` +
			`Self "lb9": not among Hosts (want one of: lb1, lb2); ` +
			`AuthPass: set, but VRRPv3 has no authentication (RFC 5798; keepalived ignores it) ` +
			`(want it empty, and a firewall that accepts VRRP, IP protocol 112, only from the peers)`},
	})
}

func TestGenerateDoesNotModifyHosts(t *testing.T) {
	p := validParams()
	if _, err := keepalived.Generate(p); err != nil {
		t.Fatal(err)
	}
	if p.Hosts[0].Priority != 0 || p.Hosts[1].Priority != 0 {
		t.Errorf("Generate wrote default priorities into the caller's Hosts: %+v", p.Hosts)
	}
}
