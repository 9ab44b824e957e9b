package keepalived

import (
	"fmt"
	"net/netip"
	"path"
	"strings"
	"unicode"

	"github.com/hashicorp/go-multierror"
)

// validate reports every problem of p (defaults already applied) at once. Each problem names
// the field, its value and the fix.
func (p Params) validate() error {
	var errs problems

	if bad := badName(p.Cluster); bad != "" {
		errs.add("Cluster %q: %s (want letters, digits, '-', '_', '.')", p.Cluster, bad)
	}

	if len(p.Hosts) < 2 {
		errs.add("Hosts: %d hosts (want at least 2: VRRP moves the VIP between hosts)", len(p.Hosts))
	}
	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	prios := map[int]int{}
	family, familyIdx := "", 0 // of the first valid host address
	for i, h := range p.Hosts {
		if bad := badName(h.Name); bad != "" {
			errs.add("Hosts[%d].Name %q: %s (want letters, digits, '-', '_', '.')", i, h.Name, bad)
		} else if j, dup := names[h.Name]; dup {
			errs.add("Hosts[%d].Name %q: same as Hosts[%d] (want unique names)", i, h.Name, j)
		} else {
			names[h.Name] = i
		}

		addr, err := netip.ParseAddr(h.Address)
		switch {
		case h.Address == "":
			errs.add("Hosts[%d].Address \"\": empty (want the host's IP address on the VRRP interface)", i)
		case err != nil:
			errs.add("Hosts[%d].Address %q: not an IP address (want an IP address, no port)", i, h.Address)
		case addr.Zone() != "":
			errs.add("Hosts[%d].Address %q: has a zone (want an IP address without %%zone)", i, h.Address)
		default:
			if j, dup := addrs[addr]; dup {
				errs.add("Hosts[%d].Address %q: same as Hosts[%d] (want one address per host)", i, h.Address, j)
			} else {
				addrs[addr] = i
			}
			if family == "" {
				family, familyIdx = familyOf(addr), i
			} else if f := familyOf(addr); f != family {
				errs.add("Hosts[%d].Address %q: %s, but Hosts[%d] is %s (want one address family)",
					i, h.Address, f, familyIdx, family)
			}
		}

		switch {
		case h.Priority < 1 || h.Priority > 254:
			errs.add("Hosts[%d].Priority %d: out of range (want 1-254; 255 is reserved for the VIP's owner)", i, h.Priority)
		default:
			if j, dup := prios[h.Priority]; dup {
				errs.add("Hosts[%d].Priority %d: same as Hosts[%d] (want distinct priorities, so that the first master is known)",
					i, h.Priority, j)
			} else {
				prios[h.Priority] = i
			}
		}
	}

	if _, ok := names[p.Self]; !ok {
		var known []string
		for _, h := range p.Hosts {
			known = append(known, h.Name)
		}
		errs.add("Self %q: not among Hosts (want one of: %s)", p.Self, strings.Join(known, ", "))
	}

	if vip, err := netip.ParsePrefix(p.VIP); err != nil {
		switch a, aerr := netip.ParseAddr(p.VIP); {
		case p.VIP == "":
			errs.add("VIP \"\": empty (want address/prefix, e.g. 198.18.0.100/15)")
		case aerr == nil:
			errs.add("VIP %q: missing prefix length (want e.g. %s/%d)", p.VIP, p.VIP, a.BitLen())
		default:
			errs.add("VIP %q: not address/prefix (want e.g. 198.18.0.100/15)", p.VIP)
		}
	} else {
		if f := familyOf(vip.Addr()); family != "" && f != family {
			errs.add("VIP %q: %s, but Hosts are %s (want one address family)", p.VIP, f, family)
		}
		if i, owned := addrs[vip.Addr()]; owned {
			errs.add("VIP %q: the address of Hosts[%d] (want an address no host owns)", p.VIP, i)
		}
	}

	switch {
	case p.Interface == "":
		errs.add("Interface \"\": empty (want the interface of the LB hosts' segment, e.g. eth0)")
	case len(p.Interface) > 15:
		errs.add("Interface %q: %d bytes, above Linux's 15 (want an interface name)", p.Interface, len(p.Interface))
	case p.Interface == "." || p.Interface == ".." || strings.ContainsFunc(p.Interface, func(r rune) bool {
		return r == '/' || r == ':' || unicode.IsSpace(r) || r > unicode.MaxASCII || !unicode.IsPrint(r)
	}):
		errs.add("Interface %q: not an interface name (want e.g. eth0)", p.Interface)
	}

	if p.RouterID < 1 || p.RouterID > 255 {
		errs.add("RouterID %d: out of range (want 1-255, or 0 for the default derived from Cluster)", p.RouterID)
	}

	switch d := p.AdvertInterval; {
	case d < 0:
		errs.add("AdvertInterval %s: negative (want 10ms to 40.95s, or 0 for the default %s)", d, DefaultAdvertInterval)
	case d%minAdvert != 0:
		errs.add("AdvertInterval %s: not a multiple of 10ms (want e.g. %s: VRRPv3 counts centiseconds)", d, d.Round(minAdvert))
	case d > maxAdvert:
		errs.add("AdvertInterval %s: above 40.95s, the VRRPv3 maximum (want 10ms to 40.95s)", d)
	}

	if p.AuthPass != "" {
		// The value is a secret: never printed.
		errs.add("AuthPass: set, but VRRPv3 has no authentication (RFC 5798; keepalived ignores it) " +
			"(want it empty, and a firewall that accepts VRRP, IP protocol 112, only from the peers)")
	}

	if bad := badScript(p.CheckScript); bad != "" {
		errs.add("CheckScript %q: %s", p.CheckScript, bad)
	}
	return errs.err()
}

func familyOf(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// badScript checks a command for keepalived's script keyword.
func badScript(s string) string {
	switch {
	case strings.TrimSpace(s) == "":
		return "blank (want a command, or empty for the default)"
	case strings.ContainsFunc(s, unicode.IsControl):
		return "contains a control character (want one line)"
	case strings.Contains(s, `\`):
		return `contains '\', which keepalived drops (want a command without backslashes, or a script file)`
	}
	first := strings.Fields(s)[0]
	switch {
	case !strings.HasPrefix(first, "/"):
		return fmt.Sprintf("%q is not an absolute path (want e.g. /usr/bin/%s: keepalived's script security needs one)",
			first, first)
	case path.Base(first) == "pidof":
		// keepalived resolves the program's symlinks and runs the target: pidof is a
		// symlink to killall5, which then acts as killall5 (seen in its -d dump).
		return fmt.Sprintf("%q is a symlink to killall5, which keepalived runs as killall5 "+
			"(want /bin/sh -c 'pidof ...', or the default, which also checks the network namespace)", first)
	}
	return ""
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

// badName says what is wrong with a name of ASCII letters, digits, '-', '_' and '.', or "".
func badName(s string) string {
	if s == "" {
		return "empty"
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Sprintf("invalid character %q", r)
		}
	}
	return ""
}
