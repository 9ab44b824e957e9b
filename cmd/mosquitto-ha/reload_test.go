package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"mosquitto-ha/bridge"
)

// reloadBase is a cluster file with every field set, seen by the agent of b1 (nodes[0]).
func reloadBase(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	ca, _, _, cc, ck := pki(t, dir)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tlsc := func() *TLSConfig { return &TLSConfig{CA: ca, Cert: cc, Key: ck, ServerName: "broker"} }
	return &Config{
		Cluster: "it",
		Nodes: []Node{
			{Name: "b1", Address: "127.0.0.1:1", Local: "127.0.0.1:11", TLS: tlsc()},
			{Name: "b2", Address: "127.0.0.1:2", Local: "127.0.0.1:12", TLS: tlsc()},
			{Name: "b3", Address: "127.0.0.1:3"},
		},
		Agent: AgentConfig{
			Local: "127.0.0.1:21", Username: "agent", PasswordFile: write("pw", "secret\n"),
			ForwardPrefix: "$fwd/", IgnoreClients: []string{"hc"}, StateDir: dir,
			BufferMessages: 10, BufferBytes: 100, MaxInflight: 5, Keepalive: time.Second, ReadPause: 2 * time.Millisecond,
			SnapshotInterval: time.Second, ClusterSecretFile: write("secret", "0123456789abcdef0123\n"),
			TLS:    tlsc(),
			Limits: LimitsConfig{MaxFilters: 1, MaxFilterBytes: 2, MaxInterestBytes: 3, MaxPayloadBytes: 4},
		},
		LoadBalancer: &LoadBalancer{VIP: "198.18.0.100/15", Interface: "eth0", Listen: ":1883",
			CheckInterval: time.Second, ClientKeepalive: time.Second, AdvertInterval: time.Second,
			Preempt: true, RouterID: 7, StatsSocket: "/run/s", Hosts: []LBHost{{Name: "lb1", Address: "198.18.0.11", Priority: 100}}},
	}
}

// leafPaths lists the key path of every field under v (elements of lists of structs one by
// one), the way the cluster file spells it.
func leafPaths(path string, v reflect.Value) []string {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil // a section left out: TestReloadPlanSectionsNodesAndFiles sets and removes them
		}
		return leafPaths(path, v.Elem())
	case reflect.Struct:
		var out []string
		for i := 0; i < v.NumField(); i++ {
			if k := yamlKey(v.Type().Field(i)); k != "" {
				out = append(out, leafPaths(join(path, k), v.Field(i))...)
			}
		}
		return out
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Struct {
			var out []string
			for i := 0; i < v.Len(); i++ {
				out = append(out, leafPaths(fmt.Sprintf("%s[%d]", path, i), v.Index(i))...)
			}
			return out
		}
	}
	return []string{path}
}

// mutate changes the field at key path under v to another value of its type.
func mutate(t *testing.T, path, want string, v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer:
		return mutate(t, path, want, v.Elem())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if k := yamlKey(v.Type().Field(i)); k != "" && mutate(t, join(path, k), want, v.Field(i)) {
				return true
			}
		}
		return false
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Struct {
			for i := 0; i < v.Len(); i++ {
				if mutate(t, fmt.Sprintf("%s[%d]", path, i), want, v.Index(i)) {
					return true
				}
			}
			return false
		}
	}
	if path != want {
		return false
	}
	switch {
	case v.Type() == durationType:
		v.SetInt(v.Int() + int64(time.Second))
	case v.Kind() == reflect.String:
		v.SetString(v.String() + "x")
	case v.Kind() == reflect.Int:
		v.SetInt(v.Int() + 1)
	case v.Kind() == reflect.Bool:
		v.SetBool(!v.Bool())
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		v.Set(reflect.Append(v, reflect.ValueOf("x")))
	default:
		t.Fatalf("%s: no way to change a %s: teach mutate", path, v.Type())
	}
	return true
}

func cloneConfig(t *testing.T, c *Config) *Config {
	t.Helper()
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var out Config
	if err := yaml.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// comparable drops what Reload cannot compare (logger, loaded TLS state) from the agent options.
func comparableOptions(t *testing.T, c *Config) bridge.Options {
	t.Helper()
	o, err := agentOptions(c, "b1", nil)
	if err != nil {
		t.Fatalf("agentOptions: %v", err)
	}
	o.LocalTLS = nil
	for i := range o.Peers {
		o.Peers[i].TLS = nil
	}
	return o
}

// The reload decision for every field of the cluster file, changed one at a time: what the
// running agent applies, what it does not read, and what needs a restart. A field added to
// Config without a line here fails the test; without a reload tag it is restart-only.
func TestReloadPlanEveryField(t *testing.T) {
	const restart, live, unused, refused = reloadRestart, reloadLive, reloadUnused, "error"
	want := map[string]string{
		"cluster": restart,
		// b1, the agent's own node: its connection is made once.
		"nodes[0].name": refused, "nodes[0].address": restart, "nodes[0].local": restart,
		"nodes[0].tls.ca": restart, "nodes[0].tls.cert": restart, "nodes[0].tls.key": restart, "nodes[0].tls.server_name": restart,
		// b2, a peer: a moved broker is reconnected; its TLS is kept by the running link.
		"nodes[1].name": live, "nodes[1].address": live, "nodes[1].local": unused,
		"nodes[1].tls.ca": restart, "nodes[1].tls.cert": restart, "nodes[1].tls.key": restart, "nodes[1].tls.server_name": restart,
		"nodes[2].name": live, "nodes[2].address": live, "nodes[2].local": unused,
		"agent.local": restart, "agent.username": restart, "agent.password_file": restart, "agent.forward_prefix": restart,
		"agent.ignore_clients": restart, "agent.state_dir": restart, "agent.buffer_messages": restart,
		"agent.buffer_bytes": restart, "agent.max_inflight": restart, "agent.keepalive": restart, "agent.read_pause": restart,
		"agent.snapshot_interval": restart, "agent.cluster_secret_file": restart,
		"agent.tls.ca": restart, "agent.tls.cert": restart, "agent.tls.key": restart, "agent.tls.server_name": restart,
		"agent.limits.max_filters": live, "agent.limits.max_filter_bytes": live,
		"agent.limits.max_interest_bytes": live, "agent.limits.max_payload_bytes": live,
		"agent.sessions.clients": restart, "agent.sessions.replicas": restart,
		"agent.sessions.drain_interval": restart, "agent.sessions.connect_rate": restart,
		"load_balancer.vip": unused, "load_balancer.interface": unused, "load_balancer.listen": unused,
		"load_balancer.check_interval": unused, "load_balancer.client_keepalive": unused,
		"load_balancer.advert_interval": unused, "load_balancer.preempt": unused, "load_balancer.router_id": unused,
		"load_balancer.stats_socket": unused, "load_balancer.hosts[0].name": unused,
		"load_balancer.hosts[0].address": unused, "load_balancer.hosts[0].priority": unused,
	}
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	for path, class := range want {
		if class == live && strings.HasPrefix(path, "agent.") && !strings.Contains(string(doc), "`"+path+"`") {
			t.Errorf("docs/cli.md does not list %s among the keys a reload applies", path)
		}
	}
	base := reloadBase(t)
	paths := leafPaths("", reflect.ValueOf(base))
	for _, path := range paths {
		if _, ok := want[path]; !ok {
			t.Errorf("%s: a field the reload test does not know: add it to want with what a SIGHUP does with it", path)
		}
	}
	for path, class := range want {
		if !slices.Contains(paths, path) {
			t.Errorf("%s: in want but not a field of Config", path)
			continue
		}
		t.Run(path, func(t *testing.T) {
			next := cloneConfig(t, base)
			if !mutate(t, "", path, reflect.ValueOf(next)) {
				t.Fatalf("%s not found to change", path)
			}
			plan, err := planReload(withDigests(base), withDigests(next), "b1")
			checkPlan(t, plan, err, class, path)
			// The decision matches what the agent is given: a live change reaches Reload's
			// peers or limits and nothing else; an unused one changes nothing the agent gets.
			if err != nil || class == restart {
				return
			}
			o, n := comparableOptions(t, base), comparableOptions(t, next)
			switch class {
			case live:
				if reflect.DeepEqual(o.Peers, n.Peers) && o.Limits == n.Limits {
					t.Errorf("said live, but Reload's peers and limits are the same")
				}
				o.Peers, n.Peers, o.Limits, n.Limits = nil, nil, bridge.Limits{}, bridge.Limits{}
				if !reflect.DeepEqual(o, n) {
					t.Errorf("said live, but options Reload cannot apply changed:\n%+v\n%+v", o, n)
				}
			case unused:
				if !reflect.DeepEqual(o, n) {
					t.Errorf("said unused, but the agent's options changed:\n%+v\n%+v", o, n)
				}
			}
		})
	}
}

func checkPlan(t *testing.T, plan reloadPlan, err error, class, path string) {
	t.Helper()
	if class == "error" {
		if err == nil {
			t.Errorf("want an error, got plan %+v", plan)
		}
		return
	}
	if err != nil {
		t.Fatalf("planReload: %v", err)
	}
	got := map[string][]string{reloadLive: plan.live, reloadUnused: plan.unused, reloadRestart: plan.restart}
	for c, keys := range got {
		switch {
		case c != class && len(keys) > 0:
			t.Errorf("want only %s, got %s %v (plan %+v)", class, c, keys, plan)
		case c == class && len(keys) == 0:
			t.Errorf("want %s, got nothing (plan %+v)", class, plan)
		case c == class && path != "" && !strings.HasSuffix(path, ".name") && (len(keys) != 1 || !strings.HasPrefix(keys[0], path)):
			t.Errorf("want the key %s named, got %v", path, keys)
		}
	}
}

// Changes a field-by-field comparison does not show: sections set or removed, nodes added,
// removed or reordered, and files whose contents changed under the same name.
func TestReloadPlanSectionsNodesAndFiles(t *testing.T) {
	base := reloadBase(t)
	cases := []struct {
		name   string
		change func(c *Config)
		class  string
		key    string
	}{
		{"agent tls removed", func(c *Config) { c.Agent.TLS = nil }, reloadRestart, "agent.tls"},
		{"peer tls removed", func(c *Config) { c.Nodes[1].TLS = nil }, reloadRestart, "nodes[1].tls"},
		{"peer tls added", func(c *Config) { c.Nodes[2].TLS = &TLSConfig{CA: base.Agent.TLS.CA} }, reloadRestart, "nodes[2].tls"},
		{"load balancer removed", func(c *Config) { c.LoadBalancer = nil }, reloadUnused, "load_balancer"},
		{"node added", func(c *Config) { c.Nodes = append(c.Nodes, Node{Name: "b4", Address: "127.0.0.1:4"}) }, reloadLive, "nodes[3] (b4 added)"},
		{"node removed", func(c *Config) { c.Nodes = c.Nodes[:2] }, reloadLive, "nodes (b3 removed)"},
		{"nodes reordered", func(c *Config) { c.Nodes[1], c.Nodes[2] = c.Nodes[2], c.Nodes[1] }, "", ""},
		{"own node removed", func(c *Config) { c.Nodes = c.Nodes[1:] }, "error", ""},
		{"password file contents", func(c *Config) { os.WriteFile(c.Agent.PasswordFile, []byte("other\n"), 0o600) }, reloadRestart, "agent.password_file (contents of "},
		{"secret file contents", func(c *Config) {
			os.WriteFile(c.Agent.ClusterSecretFile, []byte("another secret of 16+ bytes\n"), 0o600)
		}, reloadRestart, "agent.cluster_secret_file (contents of "},
		{"certificate rotated", func(c *Config) {
			_, _, _, cc, ck := pki(t, t.TempDir())
			b, _ := os.ReadFile(cc)
			os.WriteFile(c.Agent.TLS.Cert, b, 0o600)
			b, _ = os.ReadFile(ck)
			os.WriteFile(c.Agent.TLS.Key, b, 0o600)
		}, reloadRestart, "agent.tls.cert (contents of "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := reloadBase(t)
			old := withDigests(base)
			next := cloneConfig(t, base)
			tc.change(next)
			plan, err := planReload(old, withDigests(next), "b1")
			if tc.class == "" {
				if err != nil || len(plan.live)+len(plan.unused)+len(plan.restart) > 0 {
					t.Errorf("want no change, got %+v, %v", plan, err)
				}
				return
			}
			checkPlan(t, plan, err, tc.class, "")
			if tc.key == "" {
				return
			}
			all := append(append(append([]string{}, plan.live...), plan.unused...), plan.restart...)
			if !slices.ContainsFunc(all, func(k string) bool { return strings.HasPrefix(k, tc.key) }) {
				t.Errorf("want the key %q named, got %+v", tc.key, plan)
			}
		})
	}
}

// A field added later without a reload tag is restart-only: a reload that changes it is
// refused and names it, never logged as reloaded and ignored.
func TestReloadUntaggedFieldIsRestartOnly(t *testing.T) {
	type section struct {
		Added  int `yaml:"added"`
		Limit  int `yaml:"limit" reload:"live"`
		Unused struct {
			Added int `yaml:"added"`
		} `yaml:"unused" reload:"unused"`
	}
	var a, b section
	b.Added, b.Limit, b.Unused.Added = 1, 1, 1
	var plan reloadPlan
	diffFields("agent", reflect.ValueOf(a), reflect.ValueOf(b), reloadRestart, true, &plan)
	if !slices.Equal(plan.restart, []string{"agent.added"}) || !slices.Equal(plan.live, []string{"agent.limit"}) ||
		!slices.Equal(plan.unused, []string{"agent.unused.added"}) {
		t.Errorf("plan %+v: want agent.added restart-only, agent.limit live, agent.unused.added unused", plan)
	}
}
