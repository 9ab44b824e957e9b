// validate.go owns the checks on the generator's parameters: every problem at once, each naming
// the field, its value and the fix.

package haproxy

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-multierror"
)

// validate reports every problem of p (defaults already applied) at once. Each problem names
// the field, its value and the fix.
func (p Params) validate() error {
	var errs problems

	if bad := badName(p.Cluster, "-_."); bad != "" {
		errs.add("Cluster %q: %s (want letters, digits, '-', '_', '.')", p.Cluster, bad)
	}
	if bad := badBind(p.Bind); bad != "" {
		errs.add("Bind %q: %s", p.Bind, bad)
	}

	if len(p.Brokers) == 0 {
		errs.add("Brokers: empty (want at least one broker)")
	}
	names := map[string]int{}
	addrs := map[string]int{}
	for i, s := range p.Brokers {
		// HAProxy identifiers: letters, digits, '-', '_', '.', ':'.
		if bad := badName(s.Name, "-_.:"); bad != "" {
			errs.add("Brokers[%d].Name %q: %s (want letters, digits, '-', '_', '.', ':')", i, s.Name, bad)
		} else if j, dup := names[s.Name]; dup {
			errs.add("Brokers[%d].Name %q: same as Brokers[%d] (want unique names)", i, s.Name, j)
		} else {
			names[s.Name] = i
		}
		if bad := badHostPort(s.Address); bad != "" {
			errs.add("Brokers[%d].Address %q: %s", i, s.Address, bad)
		} else if j, dup := addrs[s.Address]; dup {
			errs.add("Brokers[%d].Address %q: same as Brokers[%d] (want one entry per broker)", i, s.Address, j)
		} else {
			addrs[s.Address] = i
		}
	}

	switch d := p.CheckInterval; {
	case d < 0:
		errs.add("CheckInterval %s: negative (want at least %s, or 0 for the default %s)",
			d, MinCheckInterval, DefaultCheckInterval)
	case d < MinCheckInterval:
		errs.add("CheckInterval %s: below %s (want at least %s)", d, MinCheckInterval, MinCheckInterval)
	case d%time.Millisecond != 0:
		errs.add("CheckInterval %s: not a whole number of milliseconds (want e.g. %s)", d, d.Truncate(time.Millisecond))
	}

	stringsOK := true
	if bad := badMQTTString(p.CheckClientID); bad != "" {
		errs.add("CheckClientID %q: %s", clip(p.CheckClientID), bad)
		stringsOK = false
	}
	if bad := badMQTTString(p.Username); bad != "" {
		errs.add("Username %q: %s", clip(p.Username), bad)
		stringsOK = false
	}
	// The password is binary data in MQTT 3.1.1 (3.1.3.5): only its length is limited. It is
	// never printed.
	if len(p.Password) > 0xffff {
		errs.add("Password: %d bytes, above the MQTT maximum of 65535 (want a shorter password)", len(p.Password))
		stringsOK = false
	}
	if p.Password != "" && p.Username == "" {
		errs.add("Password: set without Username [MQTT-3.1.2-22] (want a Username too, or no Password)")
		stringsOK = false
	}
	if stringsOK {
		if n := len(CheckConnectPacket(p.CheckClientID, p.Username, p.Password)); n > MaxCheckPacket {
			errs.add("CheckClientID, Username, Password: the health check CONNECT is %d bytes, above %d (want shorter values)",
				n, MaxCheckPacket)
		}
	}

	switch k := p.ClientKeepalive; {
	case k < 0:
		errs.add("ClientKeepalive %s: negative (want 1s to 65535s, or 0 for the default %s)", k, DefaultClientKeepalive)
	case k%time.Second != 0:
		errs.add("ClientKeepalive %s: not a whole number of seconds (want whole seconds, as in MQTT's keepalive)", k)
	case k > 0xffff*time.Second:
		errs.add("ClientKeepalive %s: above 65535s, the MQTT maximum (want 1s to 65535s)", k)
	}

	switch s := p.StatsSocket; {
	case !strings.HasPrefix(s, "/"):
		errs.add("StatsSocket %q: not an absolute path (want e.g. %s)", s, DefaultStatsSocket)
	case strings.ContainsAny(s, " \t\r\n#'\"\\"):
		errs.add("StatsSocket %q: contains a space, quote, '\\' or '#' (want a plain path)", s)
	case len(s) > 107:
		errs.add("StatsSocket %q: %d bytes, above the 107 of a unix socket path (want a shorter path)", s, len(s))
	}

	prefixes := map[string]int{}
	for i, pin := range p.Pins {
		if bad := BadPinPrefix(pin.ClientIDPrefix); bad != "" {
			errs.add("Pins[%d].ClientIDPrefix %q: %s", i, clip(pin.ClientIDPrefix), bad)
		} else if j, dup := prefixes[pin.ClientIDPrefix]; dup {
			errs.add("Pins[%d].ClientIDPrefix %q: same as Pins[%d] (want one pin per prefix)", i, pin.ClientIDPrefix, j)
		} else {
			prefixes[pin.ClientIDPrefix] = i
		}
		if _, ok := names[pin.Broker]; !ok {
			errs.add("Pins[%d].Broker %q: not one of Brokers (want a broker's Name)", i, pin.Broker)
		}
	}

	if p.MaxConn < 0 {
		errs.add("MaxConn %d: negative (want a positive number, or 0 to let HAProxy derive it from its file-descriptor limit)", p.MaxConn)
	}
	return errs.err()
}

// problems collects validation errors into one multierror.
type problems struct{ m *multierror.Error }

func (ps *problems) add(format string, args ...any) {
	ps.m = multierror.Append(ps.m, fmt.Errorf(format, args...))
}

// err returns nil or an error wrapping both ErrInvalidParams and the *multierror.Error, so
// callers can errors.Is the sentinel and errors.As the list.
func (ps *problems) err() error {
	if ps.m == nil {
		return nil
	}
	ps.m.ErrorFormat = listFormat
	return fmt.Errorf("%w: %w", ErrInvalidParams, ps.m)
}

// listFormat prints one problem as is and several as "N problems: a; b; c", on one line so
// that the error fits in a log attribute.
func listFormat(es []error) string {
	if len(es) == 1 {
		return es[0].Error()
	}
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return fmt.Sprintf("%d problems: %s", len(es), strings.Join(msgs, "; "))
}

// badName says what is wrong with a name made of ASCII letters, digits and the extra
// characters, or "" if nothing is.
func badName(s, extra string) string {
	if s == "" {
		return "empty"
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(extra, r)) {
			return fmt.Sprintf("invalid character %q", r)
		}
	}
	return ""
}

// badBind checks "ip:port", "*:port" or ":port".
func badBind(s string) string {
	const want = " (want ip:port or *:port)"
	if s == "" {
		return "empty" + want
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return splitProblem(s) + want
	}
	if host != "" && host != "*" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Sprintf("host %q is not an IP address or *", host) + want
		}
	}
	return badPort(port)
}

// badHostPort checks a broker address: "host:port" with an IP address or a DNS name.
func badHostPort(s string) string {
	const want = " (want host:port)"
	if s == "" {
		return "empty" + want
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return splitProblem(s) + want
	}
	if _, err := netip.ParseAddr(host); err != nil && !isDNSName(host) {
		return fmt.Sprintf("host %q is not an IP address or DNS name", host) + want
	}
	return badPort(port)
}

// splitProblem explains why net.SplitHostPort refused s.
func splitProblem(s string) string {
	if _, err := netip.ParseAddr(s); err == nil || !strings.Contains(s, ":") {
		return "missing port"
	}
	return "not host:port (IPv6 goes in brackets: [addr]:port)"
}

func badPort(port string) string {
	n, err := strconv.Atoi(port)
	switch {
	case port == "":
		return "missing port (want a port 1-65535)"
	case err != nil:
		return fmt.Sprintf("port %q is not a number (want 1-65535)", port)
	case n < 1 || n > 65535:
		return fmt.Sprintf("port %d out of range (want 1-65535)", n)
	}
	return ""
}

// isDNSName reports whether s is a host name: dot-separated labels of letters, digits and
// inner '-', at most 253 bytes (RFC 1123).
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// badMQTTString checks an MQTT UTF-8 encoded string (1.5.3).
func badMQTTString(s string) string {
	switch {
	case len(s) > 0xffff:
		return fmt.Sprintf("%d bytes, above the MQTT maximum of 65535 [MQTT-1.5.3] (want a shorter value)", len(s))
	case !utf8.ValidString(s):
		// utf8.ValidString also refuses the surrogates U+D800..U+DFFF.
		return "not well-formed UTF-8 [MQTT-1.5.3-1] (want UTF-8 text)"
	case strings.ContainsRune(s, 0):
		return "contains U+0000 [MQTT-1.5.3-2] (want text without NUL)"
	}
	return ""
}

// clip shortens a value quoted in an error message to its first 40 bytes.
func clip(s string) string {
	if len(s) <= 40 {
		return s
	}
	return s[:40] + "..."
}

// BadPinPrefix says what is wrong with a pin's client id prefix, "" when nothing: it is written
// into haproxy.cfg as an ACL pattern, so it is kept to 1 to 256 printable ASCII characters
// without space, quote, '\', '#', '{' or '}'.
func BadPinPrefix(s string) string {
	switch {
	case s == "":
		return "empty (want the start of the client ids to pin, e.g. \"worker-\")"
	case len(s) > 256:
		return fmt.Sprintf("%d bytes, above 256 (want a shorter prefix)", len(s))
	}
	for _, r := range s {
		if r <= ' ' || r > '~' || strings.ContainsRune("\"'\\#{}", r) {
			return fmt.Sprintf("contains %q (want printable ASCII without space, quote, '\\', '#', '{' or '}')", r)
		}
	}
	return ""
}
