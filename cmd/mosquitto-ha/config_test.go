package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Each testdata/config/invalid-<case>.yaml lists in "# want:" lines the exact error it must
// produce, one line each: the count, then every problem in file order, nothing else.
func TestConfigInvalidFiles(t *testing.T) {
	files, err := filepath.Glob("../../testdata/config/invalid-*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no invalid config cases found: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var wants []string
			for _, line := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(line, "# want: "); ok {
					wants = append(wants, w)
				}
			}
			if len(wants) == 0 {
				t.Fatalf("%s has no '# want:' line", f)
			}
			_, err = LoadConfig(f)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("LoadConfig = %v, want an ErrConfig", err)
			}
			var got []string
			for _, line := range strings.Split(err.Error(), "\n") {
				got = append(got, strings.TrimPrefix(line, "  "))
			}
			if strings.Join(got, "\n") != strings.Join(wants, "\n") {
				t.Errorf("error:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wants, "\n"))
			}
		})
	}
}

func TestConfigValidAndDefaults(t *testing.T) {
	cfg, err := LoadConfig("../../testdata/config/valid-lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Nodes) != 3 || cfg.Nodes[1].Name != "b2" {
		t.Fatalf("nodes = %+v", cfg.Nodes)
	}
	a := cfg.Agent
	if a.MaxInflight != 16 || a.BufferMessages != 100000 || a.Keepalive != 10*time.Second {
		t.Errorf("agent defaults not applied: %+v", a)
	}
	if lb := cfg.LoadBalancer; lb.CheckInterval != time.Second || lb.AdvertInterval != 200*time.Millisecond {
		t.Errorf("load balancer defaults not applied: %+v", lb)
	}
	if got := cfg.LocalAddress(cfg.Nodes[0]); got != "127.0.0.1:18831" {
		t.Errorf("LocalAddress defaults to the node address, got %q", got)
	}
	if _, err := cfg.Node("b9"); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "have b1, b2, b3") {
		t.Errorf("unknown node error = %v", err)
	}
}

func TestConfigPasswordFromEnvironmentWins(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Agent: AgentConfig{Username: "agent", PasswordFile: pw}}
	if got, _ := cfg.Password(); got != "from-file" {
		t.Errorf("password from file = %q", got)
	}
	t.Setenv("MOSQUITTO_HA_PASSWORD", "from-env")
	if got, _ := cfg.Password(); got != "from-env" {
		t.Errorf("password with MOSQUITTO_HA_PASSWORD set = %q", got)
	}
}

// FuzzParseConfig: any input is accepted or refused with an ErrConfig, never a panic. An
// accepted config, written back as YAML, parses to the same config (defaults applied twice
// change nothing, and nothing depends on whether a key was written or defaulted). Every
// problem Validate reports starts with the key path of a real key of the file.
func FuzzParseConfig(f *testing.F) {
	files, err := filepath.Glob("../../testdata/config/*.yaml")
	if err != nil || len(files) == 0 {
		f.Fatalf("no config files: %v", err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// An accepted file means the same after a round trip through YAML; a refused one gets a
	// bounded error that wraps ErrConfig.
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error does not wrap ErrConfig: %v", err)
			}
			if n := strings.Count(err.Error(), "\n"); n > maxListed+1 {
				t.Fatalf("error of %d lines, want at most %d", n+1, maxListed+2)
			}
			return
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("an accepted config, written back, is refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", cfg, again)
		}
	})
}

// A generated file with 200,000 bad nodes gets a short error: the count, the first problems
// and how many more, not megabytes.
func TestConfigHugeFileErrorIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("cluster: lab\nnodes:\n")
	for i := 0; i < 200000; i++ {
		fmt.Fprintf(&b, "  - {name: b%d, address: 127.0.0.1}\n", i)
	}
	_, err := ParseConfig([]byte(b.String()))
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("ParseConfig = %v, want an ErrConfig", err)
	}
	msg := err.Error()
	lines := strings.Split(msg, "\n")
	if len(msg) > 4096 || len(lines) != maxListed+2 {
		t.Fatalf("error of %d bytes, %d lines, want at most 4 KiB and %d lines", len(msg), len(lines), maxListed+2)
	}
	for _, want := range []string{"config: 200001 problem(s):", "nodes: 200000 nodes: want at most 256 (every agent links to every other broker)", "... and 199981 more"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}

// `check` and `agent` share one validation: a secret the agent refuses, check refuses too, with
// the same message, and so does a secret given in the environment.
func TestConfigShortSecretRefusedByCheckAndAgent(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("abc\n"), 0o600)
	cfg := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("cluster: it\nnodes:\n  - {name: b1, address: 127.0.0.1:1}\nagent:\n  cluster_secret_file: %s\n", secret)), 0o600)
	want := fmt.Sprintf("agent.cluster_secret_file %q: 3 bytes, want at least 16", secret)
	for _, cmd := range []string{"check", "agent"} {
		_, errOut, code := runCmd(t, cmd, "--config", cfg, "--node", "b1")
		if code != exitUsage || !strings.Contains(errOut, want) {
			t.Errorf("%s with a 3-byte secret: exit %d, want %d and %q:\n%s", cmd, code, exitUsage, want, errOut)
		}
	}
	t.Setenv("MOSQUITTO_HA_CLUSTER_SECRET", "xyz")
	os.WriteFile(secret, []byte("a secret long enough for the check\n"), 0o600)
	if _, err := LoadConfig(cfg); err == nil || !strings.Contains(err.Error(), "MOSQUITTO_HA_CLUSTER_SECRET: 3 bytes, want at least 16") {
		t.Errorf("a 3-byte secret in the environment: %v", err)
	}
}
