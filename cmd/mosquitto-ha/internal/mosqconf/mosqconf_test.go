package mosqconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// debianTree copies Debian's stock /etc/mosquitto (testdata) into a temporary directory, with
// include_dir pointing at the copy, and returns the path of its mosquitto.conf.
func debianTree(t *testing.T) string {
	t.Helper()
	src := "../../../../testdata/debian-mosquitto"
	dir := t.TempDir()
	conf, err := os.ReadFile(filepath.Join(src, "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
	readme, _ := os.ReadFile(filepath.Join(src, "conf.d/README"))
	os.WriteFile(filepath.Join(dir, "conf.d/README"), readme, 0o644)
	text := strings.ReplaceAll(string(conf), "include_dir /etc/mosquitto/conf.d", "include_dir "+filepath.Join(dir, "conf.d"))
	path := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(path, []byte(text), 0o644)
	return path
}

func TestLoadDebianStock(t *testing.T) {
	path := debianTree(t)
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Exists || !c.LocalOnly() || len(c.Files) != 1 {
		t.Errorf("stock: exists %v, local-only %v, files %v; want true, true, [mosquitto.conf] (conf.d/README is not a .conf)", c.Exists, c.LocalOnly(), c.Files)
	}
	if l, ok := c.Last("persistence"); !ok || l.Value() != "true" || l.Num != 8 {
		t.Errorf("persistence: %+v %v", l, ok)
	}
	if got := c.All("log_dest"); len(got) != 1 || got[0].Value() != "file /var/log/mosquitto/mosquitto.log" {
		t.Errorf("log_dest: %+v", got)
	}
	if c.LogTypes() != nil {
		t.Errorf("stock has no log_type line: %v", c.LogTypes())
	}

	// A conf.d file is read in place of include_dir, in name order; skip leaves one out.
	d := filepath.Join(filepath.Dir(path), "conf.d")
	os.WriteFile(filepath.Join(d, "b.conf"), []byte("listener 1883\nacl_file /x/acl\n"), 0o644)
	os.WriteFile(filepath.Join(d, "A.conf"), []byte("password_file /x/passwd\n"), 0o644)
	os.WriteFile(filepath.Join(d, "skip.conf"), []byte("# generated\nlistener 9999\n"), 0o644)
	c, err = Load(path, func(_ string, data []byte) bool { return strings.HasPrefix(string(data), "# generated") })
	if err != nil {
		t.Fatal(err)
	}
	if c.LocalOnly() || len(c.Listeners) != 1 || c.Listeners[0].Port != 1883 || c.Listeners[0].Bind != "" {
		t.Errorf("listeners: %+v", c.Listeners)
	}
	if c.Global.PasswordFile == nil || c.Global.PasswordFile.Value() != "/x/passwd" || c.Global.ACLFile == nil {
		t.Errorf("global security: %+v", c.Global)
	}
	if len(c.Skipped) != 1 || filepath.Base(c.Skipped[0]) != "skip.conf" {
		t.Errorf("skipped: %v", c.Skipped)
	}
	if filepath.Base(c.Files[1]) != "A.conf" {
		t.Errorf("files not in strcasecmp order: %v", c.Files)
	}
	if _, ok := c.Covering("10.0.0.1", 1883); !ok {
		t.Errorf("listener 1883 on every address does not cover 10.0.0.1:1883")
	}
}

func TestLoadMissingIsFresh(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "none.conf"), nil)
	if err != nil || c.Exists || !c.LocalOnly() {
		t.Fatalf("missing file: %+v %v", c, err)
	}
}

func TestLoadUnreadableIncludeDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.conf")
	os.WriteFile(path, []byte("include_dir /nonexistent/conf.d\n"), 0o644)
	if _, err := Load(path, nil); err == nil || !strings.Contains(err.Error(), "m.conf:1") {
		t.Fatalf("want an error naming the include_dir line, got %v", err)
	}
}

func TestParseListenersAndSecurity(t *testing.T) {
	c := Parse("m.conf", []byte(`per_listener_settings true
port 1883
bind_address 127.0.0.1
allow_anonymous true
listener 8883 10.0.0.1
password_file /p
acl_file /a
listener 0 /run/mosquitto.sock
# listener 1 commented
`))
	if len(c.Listeners) != 3 {
		t.Fatalf("listeners: %+v", c.Listeners)
	}
	def := c.Listeners[0]
	if def.Port != 1883 || def.Bind != "127.0.0.1" || c.SecurityOf(def).AllowAnonymous == nil {
		t.Errorf("legacy port listener: %+v", def)
	}
	tls := c.Listeners[1]
	if s := c.SecurityOf(tls); s.PasswordFile == nil || s.ACLFile == nil || s.AllowAnonymous != nil {
		t.Errorf("per-listener security of %+v: %+v", tls, s)
	}
	if c.Listeners[2].Socket != "/run/mosquitto.sock" {
		t.Errorf("unix socket: %+v", c.Listeners[2])
	}
	if _, ok := c.Covering("10.0.0.2", 8883); ok {
		t.Errorf("a listener bound to 10.0.0.1 covers 10.0.0.2")
	}
	if len(c.OnPort(1883)) != 1 {
		t.Errorf("OnPort(1883): %+v", c.OnPort(1883))
	}
}
