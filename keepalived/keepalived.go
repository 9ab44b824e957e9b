// Package keepalived generates the keepalived.conf of one load-balancer host of a
// mosquitto-ha cluster.
//
// Two or more HAProxy hosts share one floating address, the VIP clients connect to. keepalived
// 2.2 moves it with VRRP: the host holding the VIP (MASTER) sends an advertisement every
// advert_int; when the others stop hearing it, the one with the highest priority takes the
// VIP. The generated file makes four choices:
//
//   - VRRPv3 (RFC 5798) with unicast. Version 3 counts advert_int in centiseconds, so it can
//     be below a second: a silent master is replaced after Master_Down_Interval =
//     3 x advert_int + skew, skew = (256 - priority) x advert_int / 256, about 0.8s with the
//     default 200ms. Unicast (unicast_src_ip, unicast_peer) needs no multicast on the segment
//     and keeps the adverts between the LB hosts.
//   - state BACKUP with nopreempt on every host (keepalived honours nopreempt only when the
//     initial state is BACKUP). The highest priority wins the first election; after a
//     failover the VIP stays where it is when the old master comes back, instead of moving a
//     second time and cutting every client connection again for no gain (flapping if the old
//     master is unstable). Preempt true drops nopreempt: the highest priority then always
//     takes the VIP back.
//   - The VIP follows HAProxy's health. A vrrp_script checks that an haproxy process runs
//     in keepalived's own network namespace, with weight 0: a failed check puts the instance
//     in FAULT, which gives the VIP away whatever the priorities (a negative weight only works
//     if it exceeds every priority gap, which is easy to get wrong). init_fail keeps a host
//     from taking the VIP before its HAProxy passed the check. The check is per network
//     namespace because `pidof haproxy`, `killall -0 haproxy` and `vrrp_track_process` all
//     look at the PID namespace, which `ip netns exec` shares: in the lab (network namespaces
//     as hosts) lb2's HAProxy would keep lb1's check green after lb1's HAProxy died. The
//     default script compares /proc/<pid>/ns/net of every haproxy with its own, so it also
//     works unchanged on separate machines. Reading another process's ns link needs root,
//     hence `script_user root` with `enable_script_security`.
//   - No VRRP authentication. VRRPv3 has none (RFC 5798 removed it); keepalived 2.2 reports
//     an authentication block in a version 3 instance as a configuration error and ignores it
//     (`keepalived -t` exits non-zero). Params.AuthPass is therefore refused with that
//     explanation rather than silently dropped, and VRRPv2 (whose PASS authentication is a
//     clear-text password on the wire, and which cannot advertise below a second) is not
//     offered: protect the segment instead, e.g. a firewall that accepts VRRP (IP protocol
//     112) only from the peers.
//
// Generate is deterministic: the same Params give the same bytes. Only Self differs between
// the files of the hosts of one cluster.
package keepalived

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"
)

// Defaults, applied by Generate to zero fields of Params.
const (
	// DefaultAdvertInterval is the VRRP advertisement interval: a failed master is replaced
	// after about 3 x 200ms + skew (under a second), with 5 adverts a second per host.
	DefaultAdvertInterval = 200 * time.Millisecond
	// DefaultCheckScript succeeds when an haproxy process runs in the network namespace of
	// keepalived (see the package doc). It needs /bin/sh, pidof and readlink.
	DefaultCheckScript = `/bin/sh -c 'me=$(readlink /proc/self/ns/net); ` +
		`for p in $(pidof haproxy); do [ "$(readlink /proc/$p/ns/net)" = "$me" ] && exit 0; done; exit 1'`
)

// Fixed settings of the vrrp_script.
const (
	// ScriptInterval is how often the check runs, in seconds (keepalived's minimum).
	ScriptInterval = 1
	// ScriptFall failed checks in a row put the instance in FAULT: the VIP leaves a host
	// whose HAProxy died within about ScriptFall x ScriptInterval = 1s (measured in the lab:
	// 1.03-1.08 s, against 1.9-2.1 s with 2). keepalived 2.2.7 takes whole seconds only.
	ScriptFall = 1
	// ScriptRise passed checks in a row make the host eligible again.
	ScriptRise = 2
)

// VRRPv3 bounds on advert_int: 12 bits of centiseconds (RFC 5798 5.2.7).
const (
	minAdvert = 10 * time.Millisecond
	maxAdvert = 4095 * 10 * time.Millisecond
)

// ErrInvalidParams is wrapped by every error Generate returns for bad Params.
var ErrInvalidParams = errors.New("keepalived: invalid params")

// Peer is one load-balancer host.
type Peer struct {
	// Name identifies the host (letters, digits, '-', '_', '.'); Params.Self is one of them.
	Name string
	// Address is the host's IP address on Interface (no port): the unicast source of its
	// adverts and a unicast peer of the others.
	Address string
	// Priority is the VRRP priority, 1-254 (255 is reserved for the owner of the VIP); the
	// highest wins the first election. 0 takes DefaultPriority by position in Hosts.
	Priority int
}

// Params describes keepalived on one LB host. Zero fields take their defaults.
type Params struct {
	// Cluster names the cluster (letters, digits, '-', '_', '.'): it names the instance and
	// gives the default RouterID.
	Cluster string
	// Self is the Name of the host this file is for.
	Self string
	// Hosts are all the LB hosts sharing the VIP, 2..n, Self included, all of one address
	// family. Give every host the same list.
	Hosts []Peer
	// VIP is the floating address with its prefix length, e.g. "198.18.0.100/15".
	VIP string
	// Interface carries the VIP and the adverts, e.g. "eth0". keepalived refuses a
	// configuration whose interface does not exist, and the loopback.
	Interface string
	// RouterID is the virtual_router_id, 1-255, the same on every host of the cluster and
	// different from any other VRRP router on the segment. 0 takes DefaultRouterID(Cluster).
	RouterID int
	// AdvertInterval is advert_int, a multiple of 10ms from 10ms to 40.95s (default 200ms).
	AdvertInterval time.Duration
	// Preempt lets the highest priority take the VIP back when it returns. Default false
	// (nopreempt): see the package doc.
	Preempt bool
	// AuthPass must be empty: VRRPv3 has no authentication (see the package doc).
	AuthPass string
	// CheckScript is the command keepalived runs to decide HAProxy is healthy (exit 0), its
	// first word an absolute path, without backslashes (keepalived drops them) or control
	// characters. keepalived splits it into arguments itself (single and double quotes
	// group), resolves the program's symlinks and runs the target: call multi-call programs
	// such as pidof (a symlink to killall5) through /bin/sh -c. Default DefaultCheckScript.
	CheckScript string
}

// DefaultRouterID is the virtual_router_id used when Params.RouterID is 0: 1 + FNV-1a-32 of
// the cluster name modulo 255, so the hosts of one cluster agree without configuration and
// two clusters rarely collide (set RouterID when they share a segment and do).
func DefaultRouterID(cluster string) int {
	h := fnv.New32a()
	h.Write([]byte(cluster))
	return 1 + int(h.Sum32()%255)
}

// DefaultPriority is the priority of Hosts[i] when its Priority is 0: 200, 190, 180, ...
// so the first host listed is the preferred master.
func DefaultPriority(i int) int { return 200 - 10*i }

// withDefaults returns p with the zero fields set to their defaults. Hosts is copied.
func (p Params) withDefaults() Params {
	if p.RouterID == 0 {
		p.RouterID = DefaultRouterID(p.Cluster)
	}
	if p.AdvertInterval == 0 {
		p.AdvertInterval = DefaultAdvertInterval
	}
	if p.CheckScript == "" {
		p.CheckScript = DefaultCheckScript
	}
	hosts := make([]Peer, len(p.Hosts))
	copy(hosts, p.Hosts)
	for i := range hosts {
		if hosts[i].Priority == 0 {
			hosts[i].Priority = DefaultPriority(i)
		}
	}
	p.Hosts = hosts
	return p
}

// Generate returns the keepalived.conf of host p.Self. It validates p first and reports every
// problem at once in an error that wraps ErrInvalidParams (and a *multierror.Error listing
// them).
func Generate(p Params) ([]byte, error) {
	p = p.withDefaults()
	if err := p.validate(); err != nil {
		return nil, err
	}
	var self Peer
	var others []Peer
	for _, h := range p.Hosts {
		if h.Name == p.Self {
			self = h
		} else {
			others = append(others, h)
		}
	}

	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	advert := formatSeconds(p.AdvertInterval)
	masterDown := 3*p.AdvertInterval + time.Duration(256-self.Priority)*p.AdvertInterval/256

	w("# keepalived.conf of %s, load balancer of mosquitto-ha cluster %q.", p.Self, p.Cluster)
	w("# Generated by `mosquitto-ha keepalived`: do not edit by hand, change the cluster file and")
	w("# generate it again. Check it with `keepalived -t -f <file>`.")
	w("")
	w("global_defs {")
	w("    router_id %s-%s", p.Cluster, p.Self)
	w("    # The HAProxy check runs as root: reading another process's /proc/<pid>/ns/net needs it.")
	w("    enable_script_security")
	w("    script_user root")
	w("    # VRRPv3 (RFC 5798): sub-second advert_int. It has no authentication.")
	w("    vrrp_version 3")
	w("}")
	w("")
	w("# HAProxy is healthy when an haproxy process runs in this host's network namespace, not")
	w("# just anywhere in the PID namespace (which `ip netns exec` shares). weight 0: after %d", ScriptFall)
	w("# failed checks (about %ds) the instance goes to FAULT and gives the VIP away.", ScriptFall*ScriptInterval)
	w("# init_fail: no VIP before HAProxy passed %d checks.", ScriptRise)
	w("vrrp_script chk_haproxy {")
	w("    script \"%s\"", strings.ReplaceAll(p.CheckScript, `"`, `\"`))
	w("    interval %d", ScriptInterval)
	w("    timeout %d", ScriptInterval)
	w("    fall %d", ScriptFall)
	w("    rise %d", ScriptRise)
	w("    weight 0")
	w("    init_fail")
	w("}")
	w("")
	w("vrrp_instance %s_mqtt {", p.Cluster)
	if p.Preempt {
		w("    # BACKUP on every host; the highest priority takes the VIP, and takes it back")
		w("    # when it returns (preempt).")
		w("    state BACKUP")
	} else {
		w("    # BACKUP on every host (nopreempt requires it): the highest priority takes the VIP")
		w("    # first; after a failover the VIP stays put when the old master returns, rather")
		w("    # than cutting every client connection a second time.")
		w("    state BACKUP")
		w("    nopreempt")
	}
	w("    interface %s", p.Interface)
	w("    virtual_router_id %d", p.RouterID)
	w("    priority %d", self.Priority)
	w("    # A silent master is replaced after 3 x advert_int + skew")
	ms := masterDown.Round(time.Millisecond).Milliseconds()
	w("    # = 3 x %ss + (256 - %d) x %ss / 256 = %d.%03ds.", advert, self.Priority, advert, ms/1000, ms%1000)
	w("    advert_int %s", advert)
	w("    unicast_src_ip %s", self.Address)
	w("    unicast_peer {")
	for _, o := range others {
		w("        %s", o.Address)
	}
	w("    }")
	w("    virtual_ipaddress {")
	w("        %s dev %s", p.VIP, p.Interface)
	w("    }")
	w("    track_script {")
	w("        chk_haproxy")
	w("    }")
	w("}")
	return []byte(b.String()), nil
}

// formatSeconds writes d (a whole number of centiseconds) in seconds with no trailing zeros:
// 0.2, 1, 1.25.
func formatSeconds(d time.Duration) string {
	cs := int64(d / (10 * time.Millisecond))
	out := fmt.Sprintf("%d.%02d", cs/100, cs%100)
	out = strings.TrimRight(out, "0")
	return strings.TrimSuffix(out, ".")
}
