// Package mosqconf reads an existing Mosquitto 2.0 configuration the way the broker does, so
// that mosquitto-ha can add to an install only what it lacks: the main file, then each `*.conf`
// file of every include_dir in case-insensitive name order, at the place of the include_dir line.
//
// It knows which options Mosquitto refuses twice ("Error: Duplicate password_file value in
// configuration." for every string option), which ones are lists (listener, log_dest, log_type,
// include_dir, plugin), and that with `per_listener_settings true` the security options
// (allow_anonymous, password_file, acl_file, plugin, auth_plugin) belong to the listener they
// follow. It does not validate: the broker does.
package mosqconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrRead means the configuration or one of its included files could not be read.
var ErrRead = errors.New("mosqconf: cannot read the broker configuration")

// Line is one option line.
type Line struct {
	File string   // the file it came from
	Num  int      // 1-based line number
	Name string   // the option, e.g. "listener"
	Args []string // the words after the option
}

// Value is the option's argument text, words joined by one space.
func (l Line) Value() string { return strings.Join(l.Args, " ") }

// Where is "file:line", as Mosquitto names the place of a configuration error.
func (l Line) Where() string { return fmt.Sprintf("%s:%d", l.File, l.Num) }

// String is the line as it could be written in a configuration file.
func (l Line) String() string { return strings.TrimSpace(l.Name + " " + l.Value()) }

// Security are the options that decide who may connect and what they may do. Pointers and
// slices are nil when the option is absent.
type Security struct {
	AllowAnonymous *Line
	PasswordFile   *Line
	ACLFile        *Line
	Plugins        []Line // plugin and auth_plugin lines (dynamic security and others)
}

// Listener is one `listener` line, or the default listener of the legacy `port` option.
type Listener struct {
	Port int
	Bind string // "" when it listens on every address
	// Socket is set for `listener 0 <path>`, a unix socket.
	Socket string
	Line   Line
	// Security holds the options that followed this listener; they apply to it alone when
	// per_listener_settings is true.
	Security Security
}

// Conf is a broker configuration as the broker reads it.
type Conf struct {
	Path string
	// Exists is false when Path does not exist: a fresh install with Mosquitto's defaults.
	Exists bool
	// Files are the files read, in order.
	Files []string
	// Skipped are included files left out because skip said so.
	Skipped []string
	// Lines are every option line, include_dir files expanded in place.
	Lines []Line
	// Listeners in order; empty means Mosquitto 2.0's local-only mode (port 1883 on the
	// loopback addresses, anonymous clients allowed).
	Listeners []Listener
	// PerListener is per_listener_settings true.
	PerListener bool
	// Global holds the security options that apply to every listener (per_listener_settings
	// false), or those before the first listener (per_listener_settings true).
	Global Security
}

// Load reads the configuration at path. A missing file is not an error: the result has
// Exists false and no lines. skip, when not nil, leaves out an included file (for example
// the one the caller is about to regenerate).
func Load(path string, skip func(path string, data []byte) bool) (*Conf, error) {
	c := &Conf{Path: path}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRead, err)
	}
	c.Exists = true
	if err := c.read(path, data, skip, 0); err != nil {
		return nil, err
	}
	c.index()
	return c, nil
}

// Parse reads one configuration text without following include_dir; for tests and for text
// that is not on disk yet.
func Parse(name string, data []byte) *Conf {
	c := &Conf{Path: name, Exists: true, Files: []string{name}}
	c.Lines = parseLines(name, data)
	c.index()
	return c
}

func parseLines(name string, data []byte) []Line {
	var lines []Line
	for i, raw := range strings.Split(string(data), "\n") {
		s := strings.TrimSpace(strings.TrimSuffix(raw, "\r"))
		// Mosquitto: a line starting with '#' is a comment; '#' elsewhere is data (topics).
		if s == "" || s[0] == '#' {
			continue
		}
		f := strings.Fields(s)
		lines = append(lines, Line{File: name, Num: i + 1, Name: f[0], Args: f[1:]})
	}
	return lines
}

func (c *Conf) read(name string, data []byte, skip func(string, []byte) bool, depth int) error {
	if depth > 4 {
		return fmt.Errorf("%w: %s: include_dir nested more than 4 deep", ErrRead, name)
	}
	c.Files = append(c.Files, name)
	for _, l := range parseLines(name, data) {
		c.Lines = append(c.Lines, l)
		if l.Name != "include_dir" || len(l.Args) == 0 {
			continue
		}
		dir := l.Value()
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("%w: %s: include_dir %s: %v", ErrRead, l.Where(), dir, err)
		}
		var names []string
		for _, e := range entries {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
				names = append(names, e.Name())
			}
		}
		// Mosquitto sorts the files with strcasecmp.
		sort.Slice(names, func(i, j int) bool { return strings.ToLower(names[i]) < strings.ToLower(names[j]) })
		for _, n := range names {
			p := filepath.Join(dir, n)
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrRead, l.Where(), err)
			}
			if skip != nil && skip(p, b) {
				c.Skipped = append(c.Skipped, p)
				continue
			}
			if err := c.read(p, b, skip, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// index finds listeners and security options.
func (c *Conf) index() {
	if l, ok := c.Last("per_listener_settings"); ok {
		c.PerListener = l.Value() == "true"
	}
	var cur *Listener
	var legacyPort *Line
	var bindAddress string
	for i := range c.Lines {
		l := c.Lines[i]
		switch l.Name {
		case "listener":
			ln := Listener{Line: l}
			if len(l.Args) > 0 {
				ln.Port, _ = strconv.Atoi(l.Args[0])
			}
			if len(l.Args) > 1 {
				if ln.Port == 0 {
					ln.Socket = l.Args[1]
				} else {
					ln.Bind = l.Args[1]
				}
			}
			c.Listeners = append(c.Listeners, ln)
			cur = &c.Listeners[len(c.Listeners)-1]
			continue
		case "port":
			legacyPort = &c.Lines[i]
		case "bind_address":
			bindAddress = l.Value()
		}
		sec := &c.Global
		if c.PerListener && cur != nil {
			sec = &cur.Security
		}
		switch l.Name {
		case "allow_anonymous":
			sec.AllowAnonymous = &c.Lines[i]
		case "password_file":
			sec.PasswordFile = &c.Lines[i]
		case "acl_file":
			sec.ACLFile = &c.Lines[i]
		case "plugin", "auth_plugin":
			sec.Plugins = append(sec.Plugins, l)
		}
	}
	if legacyPort != nil {
		// The legacy `port` option is the default listener; its security options are the ones
		// before the first listener line.
		p, _ := strconv.Atoi(legacyPort.Value())
		c.Listeners = append([]Listener{{Port: p, Bind: bindAddress, Line: *legacyPort, Security: c.Global}}, c.Listeners...)
	}
}

// All returns every line of this option, in order.
func (c *Conf) All(name string) []Line {
	var out []Line
	for _, l := range c.Lines {
		if l.Name == name {
			out = append(out, l)
		}
	}
	return out
}

// Last returns the line that wins for a single-valued option.
func (c *Conf) Last(name string) (Line, bool) {
	all := c.All(name)
	if len(all) == 0 {
		return Line{}, false
	}
	return all[len(all)-1], true
}

// LocalOnly reports Mosquitto 2.0's local-only mode: no listener at all, so the broker listens
// on port 1883 of 127.0.0.1 and ::1 only, and allows anonymous clients there.
func (c *Conf) LocalOnly() bool { return len(c.Listeners) == 0 }

// IncludeDirs are the include_dir values of the main file, in order.
func (c *Conf) IncludeDirs() []string {
	var out []string
	for _, l := range c.All("include_dir") {
		if l.File == c.Path {
			out = append(out, l.Value())
		}
	}
	return out
}

// wildcard reports a bind address that means every address.
func wildcard(bind string) bool { return bind == "" || bind == "0.0.0.0" || bind == "::" }

// Covering returns the listener that accepts connections to host:port: one on that port bound
// to every address or to host itself.
func (c *Conf) Covering(host string, port int) (Listener, bool) {
	for _, l := range c.Listeners {
		if l.Socket == "" && l.Port == port && (wildcard(l.Bind) || l.Bind == host) {
			return l, true
		}
	}
	return Listener{}, false
}

// OnPort returns the listeners on this TCP port, whatever their bind address.
func (c *Conf) OnPort(port int) []Listener {
	var out []Listener
	for _, l := range c.Listeners {
		if l.Socket == "" && l.Port == port {
			out = append(out, l)
		}
	}
	return out
}

// SecurityOf returns the security options that apply to listener l.
func (c *Conf) SecurityOf(l Listener) Security {
	if c.PerListener {
		return l.Security
	}
	return c.Global
}

// LogTypes returns the log_type values set, lower case; nil when no log_type line exists
// (Mosquitto then logs error, warning, notice and information).
func (c *Conf) LogTypes() map[string]bool {
	lines := c.All("log_type")
	if len(lines) == 0 {
		return nil
	}
	out := map[string]bool{}
	for _, l := range lines {
		out[strings.ToLower(l.Value())] = true
	}
	return out
}
