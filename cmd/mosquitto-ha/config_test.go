package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"
	"gopkg.in/yaml.v3"
)

// Each testdata/config/invalid-<case>.yaml names the messages it must produce in "# want:" lines.
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
			for _, w := range wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
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
	keys := configKeys(reflect.TypeFor[Config](), "")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error does not wrap ErrConfig: %v", err)
			}
			var problems *multierror.Error
			if errors.As(err, &problems) {
				for _, p := range problems.Errors {
					if key := problemKey(p.Error()); !isConfigKey(keys, key) {
						t.Errorf("problem %q does not start with a key of the file (got %q)", p, key)
					}
				}
			}
			return
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshal an accepted config: %v", err)
		}
		again, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("an accepted config, written back, is refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("an accepted config, written back, parses differently:\n first %+v\nsecond %+v\n%s", cfg, again, out)
		}
	})
}

// problemKey is the key path a problem starts with: `nodes[1].address "x": ...` -> nodes[1].address.
func problemKey(problem string) string {
	if i := strings.IndexAny(problem, " :"); i >= 0 {
		return problem[:i]
	}
	return problem
}

// keyIndex is a list index in a key path: nodes[2].name.
var keyIndex = regexp.MustCompile(`\[\d+\]`)

// isConfigKey says whether path (e.g. agent.limits.max_filters, load_balancer.hosts[1].name)
// names a key of the cluster file, one of keys as configKeys spells them (nodes[].name).
func isConfigKey(keys []string, path string) bool {
	return slices.Contains(keys, keyIndex.ReplaceAllString(path, "[]"))
}
