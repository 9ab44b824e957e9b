// config.go owns the cluster file: its types, defaults, parsing and the validation that reports
// every problem at once with its fix.

package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
	"gopkg.in/yaml.v3"

	"mosquitto-ha/bridge"
	"mosquitto-ha/haproxy"
)

// ErrConfig is returned for any problem with the cluster file.
var ErrConfig = errors.New("config")

// Config is the one cluster file, identical on every host. The `reload` tags say what a SIGHUP
// does with a changed field (reload.go); a field without one needs an agent restart.
type Config struct {
	// Cluster names the cluster; it is part of every control topic and agent client id.
	Cluster string `yaml:"cluster"`
	// Nodes are the brokers, each with its own agent.
	Nodes []Node `yaml:"nodes" reload:"nodes"`
	// Agent holds settings shared by every agent.
	Agent AgentConfig `yaml:"agent"`
	// LoadBalancer describes the HAProxy + keepalived pair in front of the brokers (optional).
	LoadBalancer *LoadBalancer `yaml:"load_balancer" reload:"unused"`
}

// Node is one Mosquitto broker and the agent beside it. Its reload tags apply to other nodes:
// every change to the agent's own node needs a restart.
type Node struct {
	Name string `yaml:"name"`
	// Address is how peers and HAProxy reach this broker, host:port.
	Address string `yaml:"address" reload:"live"`
	// Local is how this node's own agent reaches its broker; default: Address.
	Local string `yaml:"local" reload:"unused"`
	// TLS, when set, replaces agent.tls for connections to this node's broker.
	TLS *TLSConfig `yaml:"tls"`
}

// TLSConfig makes agent connections use TLS.
type TLSConfig struct {
	// CA is a PEM file of the authorities that sign the brokers' certificates; empty: the
	// system's.
	CA string `yaml:"ca"`
	// Cert and Key are the agent's client certificate and key (PEM), when brokers require one.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName is the name expected in the broker's certificate; empty: the address's host.
	ServerName string `yaml:"server_name"`
}

// AgentConfig are the agent settings. Every default is set in applyDefaults.
type AgentConfig struct {
	Local         string   `yaml:"local"`
	Username      string   `yaml:"username"`
	PasswordFile  string   `yaml:"password_file"`
	ForwardPrefix string   `yaml:"forward_prefix"`
	IgnoreClients []string `yaml:"ignore_clients"`
	StateDir      string   `yaml:"state_dir"`
	// BufferMessages bounds the QoS>=1 relays kept per peer while it is down or slow.
	BufferMessages int `yaml:"buffer_messages"`
	// BufferBytes bounds the payload bytes kept per peer.
	BufferBytes int `yaml:"buffer_bytes"`
	// MaxInflight bounds unacknowledged QoS>=1 publishes per connection.
	MaxInflight int `yaml:"max_inflight"`
	// Keepalive is the MQTT keepalive of agent connections.
	Keepalive time.Duration `yaml:"keepalive"`
	// ReadPause paces the reads of a busy agent connection; negative reads every packet at once.
	ReadPause time.Duration `yaml:"read_pause"`
	// SnapshotInterval is the least time between two retained interest snapshots.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// ClusterSecretFile holds the secret that signs every relay and interest message
	// (MOSQUITTO_HA_CLUSTER_SECRET wins); empty: messages are not signed.
	ClusterSecretFile string `yaml:"cluster_secret_file"`
	// TLS applies to every agent connection unless a node sets its own.
	TLS *TLSConfig `yaml:"tls"`
	// Limits bound what peers may send.
	Limits LimitsConfig `yaml:"limits"`
	// Sessions make persistent sessions follow their client (issue 13).
	Sessions SessionsConfig `yaml:"sessions"`
}

// SessionsConfig are the settings of sessions that follow their client (bridge.SessionOptions);
// unset fields take bridge.DefaultSessionOptions.
type SessionsConfig struct {
	// Enabled turns the session registry, the client id takeover and replicas on (default true).
	Enabled *bool `yaml:"enabled"`
	// Clients are the client id patterns (path.Match) whose persistent sessions are replicated
	// (default ["*"]).
	Clients []string `yaml:"clients,omitempty"`
	// Replicas is how many other nodes keep a replica of each session: 0 (default) every other
	// node, -1 none (the takeover only).
	Replicas int `yaml:"replicas"`
	// DrainInterval is how often a replica is emptied while its client is connected elsewhere
	// (default 1s): the duplicate bound of a failover.
	DrainInterval time.Duration `yaml:"drain_interval"`
	// ConnectRate bounds the agent's connections with clients' ids to its broker, per second
	// (default 50).
	ConnectRate int `yaml:"connect_rate"`
}

// options are the bridge settings of c.
func (c SessionsConfig) options() bridge.SessionOptions {
	o := bridge.DefaultSessionOptions()
	if c.Enabled != nil {
		o.Enabled = *c.Enabled
	}
	if len(c.Clients) > 0 {
		o.Clients = c.Clients
	}
	o.Replicas = c.Replicas
	if c.DrainInterval > 0 {
		o.DrainInterval = c.DrainInterval
	}
	if c.ConnectRate > 0 {
		o.ConnectRate = c.ConnectRate
	}
	return o
}

// LimitsConfig bounds what a peer may send; 0 takes the default.
type LimitsConfig struct {
	MaxFilters       int `yaml:"max_filters" reload:"live"`        // filters per peer (default 1,048,576)
	MaxFilterBytes   int `yaml:"max_filter_bytes" reload:"live"`   // default 65535
	MaxInterestBytes int `yaml:"max_interest_bytes" reload:"live"` // one interest message (default 64 MiB)
	MaxPayloadBytes  int `yaml:"max_payload_bytes" reload:"live"`  // one relayed payload (default 268435455)
}

// LoadBalancer is the HAProxy front: one HAProxy host, or several sharing a floating IP (VIP)
// through keepalived.
type LoadBalancer struct {
	// VIP is the floating address (with prefix length) keepalived moves between the hosts; it
	// needs at least 2 hosts. Empty: no keepalived, clients reach the HAProxy host(s) directly.
	VIP             string        `yaml:"vip"`
	Interface       string        `yaml:"interface"`
	Listen          string        `yaml:"listen"`
	CheckInterval   time.Duration `yaml:"check_interval"`
	ClientKeepalive time.Duration `yaml:"client_keepalive"`
	AdvertInterval  time.Duration `yaml:"advert_interval"`
	Preempt         bool          `yaml:"preempt"`
	RouterID        int           `yaml:"router_id"`
	StatsSocket     string        `yaml:"stats_socket"`
	// HealthCheck is the account HAProxy's MQTT health check logs in with (optional; without
	// it the check connects anonymously).
	HealthCheck *HealthCheck `yaml:"health_check"`
	Hosts       []LBHost     `yaml:"hosts"`
	// Pins send the clients whose id starts with a prefix to one node while it is up, e.g. the
	// members of a $share group, so that the group is shared by one Mosquitto.
	Pins []LBPin `yaml:"pins,omitempty"`
}

// LBPin is one pinned client id prefix (haproxy.Pin).
type LBPin struct {
	ClientIDPrefix string `yaml:"client_id_prefix"`
	Node           string `yaml:"node"`
}

// HealthCheck is the broker account of HAProxy's health check. Its password ends up in
// haproxy.cfg (hex, in the check's CONNECT), so it must be an account of its own, never the
// agent's (which may inject relays): the ACL of `mosquitto-ha mosquitto --acl` gives it no
// topic at all, since the check only connects and disconnects.
type HealthCheck struct {
	Username string `yaml:"username"`
	// PasswordFile holds its password on one line; empty: an account without password.
	PasswordFile string `yaml:"password_file"`
}

// Password reads the health-check password from its password_file.
func (h *HealthCheck) Password() (string, error) {
	if h.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(h.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("%w: load_balancer.health_check.password_file: %v", ErrConfig, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// LBHost is one HAProxy + keepalived host.
type LBHost struct {
	Name     string `yaml:"name"`
	Address  string `yaml:"address"`
	Priority int    `yaml:"priority"`
}

// applyDefaults fills every unset field. The agent's defaults are bridge's (options.go), so the
// cluster file and the library agree; the rest are set here, each with its reason.
func (c *Config) applyDefaults() {
	a := &c.Agent
	if a.ForwardPrefix == "" {
		a.ForwardPrefix = bridge.DefaultForwardPrefix
	}
	if a.IgnoreClients == nil {
		a.IgnoreClients = []string{haproxy.DefaultCheckClientID} // HAProxy's MQTT health check
	}
	if a.StateDir == "" {
		a.StateDir = "/var/lib/mosquitto-ha" // interest survives agent restarts here
	}
	if a.BufferMessages == 0 {
		a.BufferMessages = bridge.DefaultBufferMessages
	}
	if a.BufferBytes == 0 {
		a.BufferBytes = bridge.DefaultBufferBytes
	}
	if a.MaxInflight == 0 {
		a.MaxInflight = bridge.DefaultMaxInflight
	}
	if a.Keepalive == 0 {
		a.Keepalive = bridge.DefaultKeepalive
	}
	if a.ReadPause == 0 {
		a.ReadPause = bridge.DefaultReadPause
	}
	if a.SnapshotInterval == 0 {
		a.SnapshotInterval = bridge.DefaultSnapshotInterval
	}
	if lb := c.LoadBalancer; lb != nil {
		if lb.Listen == "" {
			lb.Listen = ":1883"
		}
		if lb.CheckInterval == 0 {
			lb.CheckInterval = time.Second // a dead broker is marked down after 2 checks
		}
		if lb.ClientKeepalive == 0 {
			lb.ClientKeepalive = 60 * time.Second // MQTT clients' usual keepalive
		}
		if lb.AdvertInterval == 0 {
			lb.AdvertInterval = 200 * time.Millisecond // VRRPv3: failover in about 3 x this
		}
		if lb.Interface == "" {
			lb.Interface = "eth0"
		}
	}
}

// LoadConfig reads and validates a cluster file. Unknown keys are errors.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return ParseConfig(data)
}

// ParseConfig decodes and validates a cluster file. Every problem is reported at once: the
// file's structure (configcheck.go), then the values (Validate), each naming its key path.
func ParseConfig(data []byte) (*Config, error) {
	problems, readable, cleaned := checkYAML(data)
	if !readable {
		return nil, problemList(problems, nil)
	}
	if cleaned != nil {
		data = cleaned
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// A type mismatch leaves that field zero and decoding goes on (yaml.TypeError); checkYAML
	// has named it already. Without a problem from checkYAML the error is reported as is.
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) && len(problems) == 0 {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c.applyDefaults()
	var invalid []error
	if err := c.validate(); err != nil {
		invalid = err.Errors
	}
	if len(problems) == 0 && len(invalid) == 0 {
		return &c, nil
	}
	return nil, problemList(problems, invalid)
}

// problemList joins structural problems and Validate's findings into one error. A value whose
// key already has a structural problem (a type mismatch leaves it zero) is not reported twice.
func problemList(problems []problem, invalid []error) error {
	errs := &multierror.Error{ErrorFormat: listErrors}
	for _, p := range problems {
		errs.Errors = append(errs.Errors, p.err)
	}
next:
	for _, e := range invalid {
		for _, p := range problems {
			if p.path != "" && hasKeyPrefix(e.Error(), p.path) {
				continue next
			}
		}
		errs.Errors = append(errs.Errors, e)
	}
	return fmt.Errorf("%w: %w", ErrConfig, errs)
}

// hasKeyPrefix reports whether message msg is about key path or a key under it.
func hasKeyPrefix(msg, path string) bool {
	rest, ok := strings.CutPrefix(msg, path)
	return ok && (rest == "" || strings.ContainsAny(rest[:1], " :.["))
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// maxNodes bounds the cluster: every agent links to every other broker, so N nodes make
// N x (N-1) connections, and a larger file is a mistake rather than a cluster.
const maxNodes = 256

// Validate reports every problem at once, each with key path, value and fix. The agent and
// `check` run the same validation, including reading the secret, password and TLS files.
func (c *Config) Validate() error {
	errs := c.validate()
	if errs == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConfig, errs)
}

func (c *Config) validate() *multierror.Error {
	var errs *multierror.Error
	add := func(format string, args ...any) {
		errs = multierror.Append(errs, fmt.Errorf(format, args...))
	}
	if !nameRE.MatchString(c.Cluster) {
		add("cluster %q: want 1-64 letters, digits, '.', '_' or '-'", c.Cluster)
	}
	if len(c.Nodes) == 0 {
		add("nodes: empty (want at least one {name, address})")
	}
	if len(c.Nodes) > maxNodes {
		add("nodes: %d nodes: want at most %d (every agent links to every other broker)", len(c.Nodes), maxNodes)
	}
	names := map[string]int{}
	addrs := map[string]int{}
	for i, n := range c.Nodes {
		if !nameRE.MatchString(n.Name) {
			add("nodes[%d].name %q: want 1-64 letters, digits, '.', '_' or '-'", i, n.Name)
		} else if j, dup := names[n.Name]; dup {
			add("nodes[%d].name %q: already used by nodes[%d] (names must be unique)", i, n.Name, j)
		} else {
			names[n.Name] = i
		}
		if err := checkHostPort(n.Address); err != nil {
			add("nodes[%d].address %q: %v", i, n.Address, err)
		} else if j, dup := addrs[n.Address]; dup {
			add("nodes[%d].address %q: already used by nodes[%d] (each broker needs its own address)", i, n.Address, j)
		} else {
			addrs[n.Address] = i
		}
		if n.Local != "" {
			if err := checkHostPort(n.Local); err != nil {
				add("nodes[%d].local %q: %v", i, n.Local, err)
			}
		}
	}
	a := c.Agent
	if a.Local != "" {
		if err := checkHostPort(a.Local); err != nil {
			add("agent.local %q: %v", a.Local, err)
		}
	}
	if strings.ContainsAny(a.ForwardPrefix, "+#\x00") || !strings.HasSuffix(a.ForwardPrefix, "/") {
		add("agent.forward_prefix %q: want a topic prefix ending in '/' without '+' or '#' (e.g. \"$forward/\")", a.ForwardPrefix)
	}
	if strings.HasPrefix(a.ForwardPrefix, "$SYS") {
		add("agent.forward_prefix %q: Mosquitto refuses publishes to $SYS (use \"$forward/\")", a.ForwardPrefix)
	}
	if a.PasswordFile != "" && a.Username == "" {
		add("agent.password_file %q: set agent.username too", a.PasswordFile)
	}
	if a.PasswordFile != "" {
		if _, err := c.password(); err != nil {
			add("%v", err)
		}
	}
	positive := func(key string, v int) {
		if v < 0 {
			add("agent.%s %d: must not be negative", key, v)
		}
	}
	if _, err := c.clusterSecret(); err != nil {
		add("%v", err)
	}
	for _, s := range c.tlsSettings() {
		_, tlsErrs := loadTLS(s.key, s.tls)
		for _, err := range tlsErrs {
			add("%v", err)
		}
	}
	positive("limits.max_filters", a.Limits.MaxFilters)
	positive("limits.max_filter_bytes", a.Limits.MaxFilterBytes)
	positive("limits.max_interest_bytes", a.Limits.MaxInterestBytes)
	positive("limits.max_payload_bytes", a.Limits.MaxPayloadBytes)
	if err := bridge.CheckSessionPatterns(a.Sessions.Clients); err != nil {
		add("agent.sessions.clients: %v", err)
	}
	if a.Sessions.Replicas < -1 {
		add("agent.sessions.replicas %d: want -1 (none), 0 (every other node) or a count", a.Sessions.Replicas)
	}
	if a.Sessions.DrainInterval < 0 || a.Sessions.DrainInterval > 0 && a.Sessions.DrainInterval < 100*time.Millisecond {
		add("agent.sessions.drain_interval %s: want at least 100ms", a.Sessions.DrainInterval)
	}
	positive("sessions.connect_rate", a.Sessions.ConnectRate)
	positive("buffer_messages", a.BufferMessages)
	positive("buffer_bytes", a.BufferBytes)
	if a.MaxInflight < 0 || a.MaxInflight > 20 {
		add("agent.max_inflight %d: want 1..20 (Mosquitto drops publishes beyond ~20 unfinished)", a.MaxInflight)
	}
	if a.Keepalive < time.Second {
		add("agent.keepalive %s: want at least 1s", a.Keepalive)
	}
	if a.ReadPause > 10*time.Millisecond {
		add("agent.read_pause %s: want at most 10ms (a negative value such as -1ms turns it off)", a.ReadPause)
	}
	if a.SnapshotInterval < 10*time.Millisecond {
		add("agent.snapshot_interval %s: want at least 10ms", a.SnapshotInterval)
	}
	if lb := c.LoadBalancer; lb != nil {
		c.validateLB(lb, add)
	}
	if errs != nil {
		errs.ErrorFormat = listErrors
	}
	return errs
}

func (c *Config) validateLB(lb *LoadBalancer, add func(string, ...any)) {
	vip := lb.VIP != ""
	if _, _, err := net.ParseCIDR(lb.VIP); vip && err != nil {
		add("load_balancer.vip %q: want an address with prefix length, e.g. \"198.18.0.100/15\"", lb.VIP)
	}
	if h := lb.HealthCheck; h != nil {
		switch {
		case h.Username == "":
			add("load_balancer.health_check.username: empty (want the account HAProxy's check logs in with, e.g. haproxy-hc)")
		case h.Username == c.Agent.Username:
			add("load_balancer.health_check.username %q: the agent's account (its password would be in haproxy.cfg; want an account of its own)", h.Username)
		}
		if h.PasswordFile != "" {
			if _, err := os.Stat(h.PasswordFile); err != nil {
				add("load_balancer.health_check.password_file %q: %v (create it with the check account's password on one line)", h.PasswordFile, err)
			}
		}
	}
	if err := checkHostPortAnyHost(lb.Listen); err != nil {
		add("load_balancer.listen %q: %v", lb.Listen, err)
	}
	if lb.CheckInterval < 50*time.Millisecond {
		add("load_balancer.check_interval %s: want at least 50ms", lb.CheckInterval)
	}
	if lb.AdvertInterval < 10*time.Millisecond || lb.AdvertInterval > 255*time.Second {
		add("load_balancer.advert_interval %s: want 10ms..255s (VRRPv3 counts centiseconds)", lb.AdvertInterval)
	}
	if lb.RouterID < 0 || lb.RouterID > 255 {
		add("load_balancer.router_id %d: want 1..255 (0 derives one from the cluster name)", lb.RouterID)
	}
	switch {
	case vip && len(lb.Hosts) < 2:
		add("load_balancer.hosts: %d hosts (want at least 2 for a floating IP, or no vip for a single HAProxy host)", len(lb.Hosts))
	case len(lb.Hosts) == 0:
		add("load_balancer.hosts: empty (want the HAProxy host, {name, address})")
	}
	seen := map[string]int{}
	for i, h := range lb.Hosts {
		if !nameRE.MatchString(h.Name) {
			add("load_balancer.hosts[%d].name %q: want 1-64 letters, digits, '.', '_' or '-'", i, h.Name)
		} else if j, dup := seen[h.Name]; dup {
			add("load_balancer.hosts[%d].name %q: already used by hosts[%d]", i, h.Name, j)
		} else {
			seen[h.Name] = i
		}
		if net.ParseIP(h.Address) == nil {
			add("load_balancer.hosts[%d].address %q: want an IP address without port", i, h.Address)
		}
		if vip && (h.Priority < 1 || h.Priority > 254) { // keepalived's VRRP priority
			add("load_balancer.hosts[%d].priority %d: want 1..254", i, h.Priority)
		}
	}
	prefixes := map[string]int{}
	for i, p := range lb.Pins {
		if bad := haproxy.BadPinPrefix(p.ClientIDPrefix); bad != "" {
			add("load_balancer.pins[%d].client_id_prefix %q: %s", i, p.ClientIDPrefix, bad)
		} else if j, dup := prefixes[p.ClientIDPrefix]; dup {
			add("load_balancer.pins[%d].client_id_prefix %q: already used by pins[%d]", i, p.ClientIDPrefix, j)
		} else {
			prefixes[p.ClientIDPrefix] = i
		}
		if !slices.ContainsFunc(c.Nodes, func(n Node) bool { return n.Name == p.Node }) {
			add("load_balancer.pins[%d].node %q: not one of nodes (want a node's name)", i, p.Node)
		}
	}
}

// maxListed bounds the problems printed: a generated file with 200,000 bad nodes gets a
// readable error, not megabytes of it.
const maxListed = 20

func listErrors(es []error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d problem(s):", len(es))
	for i, e := range es {
		if i == maxListed {
			fmt.Fprintf(&b, "\n  ... and %d more", len(es)-maxListed)
			break
		}
		b.WriteString("\n  " + e.Error())
	}
	return b.String()
}

func checkHostPort(s string) error {
	host, _, err := splitPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("missing host (want host:port)")
	}
	return nil
}

func checkHostPortAnyHost(s string) error {
	_, _, err := splitPort(s)
	return err
}

func splitPort(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, errors.New("missing port (want host:port)")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", 0, fmt.Errorf("port %q: want 1..65535", port)
	}
	return host, p, nil
}

// Node returns the node with this name.
func (c *Config) Node(name string) (Node, error) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	var names []string
	for i, n := range c.Nodes {
		if i == 10 {
			names = append(names, fmt.Sprintf("... and %d more", len(c.Nodes)-10))
			break
		}
		names = append(names, n.Name)
	}
	if name == "" {
		return Node{}, fmt.Errorf("%w: --node: missing (want one of %s)", ErrConfig, strings.Join(names, ", "))
	}
	return Node{}, fmt.Errorf("%w: --node %q: not in nodes (have %s)", ErrConfig, name, strings.Join(names, ", "))
}

// LocalAddress is how the agent of node n reaches its broker.
func (c *Config) LocalAddress(n Node) string {
	switch {
	case n.Local != "":
		return n.Local
	case c.Agent.Local != "":
		return c.Agent.Local
	}
	return n.Address
}

// minSecretBytes is the shortest cluster secret accepted: 16 bytes of HMAC-SHA256 key.
const minSecretBytes = 16

// ClusterSecret reads the secret that signs relays: MOSQUITTO_HA_CLUSTER_SECRET wins, then
// cluster_secret_file. Empty means unsigned.
func (c *Config) ClusterSecret() ([]byte, error) {
	b, err := c.clusterSecret()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return b, nil
}

func (c *Config) clusterSecret() ([]byte, error) {
	key, path := "MOSQUITTO_HA_CLUSTER_SECRET", ""
	s, ok := os.LookupEnv(key)
	b := []byte(s)
	if !ok {
		if c.Agent.ClusterSecretFile == "" {
			return nil, nil
		}
		key, path = "agent.cluster_secret_file", c.Agent.ClusterSecretFile
		var err error
		if b, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("%s %q: %v (create it with a long random secret, e.g. `head -c 32 /dev/urandom | base64 > FILE`, readable by the agent)", key, path, err)
		}
		b = bytes.TrimRight(b, "\r\n")
	}
	if len(b) < minSecretBytes {
		if path != "" {
			key = fmt.Sprintf("%s %q", key, path)
		}
		return nil, fmt.Errorf("%s: %d bytes, want at least %d (e.g. `head -c 32 /dev/urandom | base64`)", key, len(b), minSecretBytes)
	}
	return b, nil
}

// tlsSetting is one TLS section of the file and its key path.
type tlsSetting struct {
	key string
	tls *TLSConfig
}

// tlsSettings lists every TLS section of the file in file order.
func (c *Config) tlsSettings() []tlsSetting {
	var s []tlsSetting
	if c.Agent.TLS != nil {
		s = append(s, tlsSetting{"agent.tls", c.Agent.TLS})
	}
	for i, n := range c.Nodes {
		if n.TLS != nil {
			s = append(s, tlsSetting{fmt.Sprintf("nodes[%d].tls", i), n.TLS})
		}
	}
	return s
}

// loadTLS reads the files of TLS section key into a tls.Config, reporting every problem.
func loadTLS(key string, t *TLSConfig) (*tls.Config, []error) {
	var errs []error
	cfg := &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.ca %q: %v", key, t.CA, err))
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("%s.ca %q: no PEM certificate in it (want the CA that signs the brokers' certificates)", key, t.CA))
			}
			cfg.RootCAs = pool
		}
	}
	if (t.Cert == "") != (t.Key == "") {
		errs = append(errs, fmt.Errorf("%s: cert %q and key %q: set both or neither", key, t.Cert, t.Key))
	} else if t.Cert != "" {
		readable := true
		for _, f := range []struct{ name, path string }{{"cert", t.Cert}, {"key", t.Key}} {
			if _, err := os.ReadFile(f.path); err != nil {
				errs = append(errs, fmt.Errorf("%s.%s %q: %v", key, f.name, f.path, err))
				readable = false
			}
		}
		if readable {
			pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: cert %q, key %q: %v (want a PEM certificate and its private key)", key, t.Cert, t.Key, err))
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
	}
	return cfg, errs
}

// TLSFor builds the TLS settings for connections to node n's broker; nil means plain TCP.
func (c *Config) TLSFor(n Node) (*tls.Config, error) {
	t, key := c.Agent.TLS, "agent.tls"
	if n.TLS != nil {
		t, key = n.TLS, "nodes."+n.Name+".tls"
		for i, m := range c.Nodes {
			if m.Name == n.Name {
				key = fmt.Sprintf("nodes[%d].tls", i)
			}
		}
	}
	if t == nil {
		return nil, nil
	}
	cfg, errs := loadTLS(key, t)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(n.Address)
	}
	return cfg, nil
}

// Password reads the agent password: MOSQUITTO_HA_PASSWORD wins, then password_file.
func (c *Config) Password() (string, error) {
	p, err := c.password()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return p, nil
}

func (c *Config) password() (string, error) {
	if p, ok := os.LookupEnv("MOSQUITTO_HA_PASSWORD"); ok {
		return p, nil
	}
	if c.Agent.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.Agent.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("agent.password_file %q: %v (create it with the agent account's password on one line, readable by the agent)", c.Agent.PasswordFile, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
