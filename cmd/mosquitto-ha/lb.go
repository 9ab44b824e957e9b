// lb.go owns the load balancer commands: haproxy.cfg and keepalived.conf generated from the
// cluster file, written atomically with restrictive permissions.

package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"mosquitto-ha/haproxy"
	"mosquitto-ha/keepalived"
)

// errNoLB explains how to describe the load balancer when the file has none.
var errNoLB = fmt.Errorf("%w: load_balancer: missing (add hosts to generate haproxy.cfg; vip and interface too for keepalived)", ErrConfig)

// errNoVIP says that a load balancer without a floating IP needs no keepalived.
var errNoVIP = errors.New("load_balancer has no vip: HAProxy runs alone, without a floating IP, so there is no keepalived.conf to generate")

// haproxyFileMode keeps haproxy.cfg from other users: it may hold the health check's
// password (hex, in the check's CONNECT). HAProxy reads it as root.
const haproxyFileMode = 0o640

// writeHAProxy prints haproxy.cfg, or writes it to path with haproxyFileMode.
func writeHAProxy(cfg *Config, path string, stdout, stderr io.Writer) int {
	out, err := haproxyConfig(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitFail
	}
	if cfg.LoadBalancer.HealthCheck == nil && cfg.Agent.Username != "" {
		fmt.Fprintln(stderr, "mosquitto-ha: note: load_balancer.health_check is not set, so HAProxy's check connects without credentials: if the brokers refuse anonymous clients, every broker is marked down. Give the check an account of its own (health_check: {username, password_file}).")
	}
	if path == "" {
		stdout.Write(out)
		return exitOK
	}
	if err := writeFileAtomic(path, out, haproxyFileMode); err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: --output %s: %v\n", path, err)
		return exitFail
	}
	return exitOK
}

// writeFileAtomic replaces path with data and mode: a reader sees the old file or the new one,
// never a part, and never a moment with looser permissions. An existing file keeps its group
// (e.g. root:haproxy).
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if st, err := os.Stat(path); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			_ = tmp.Chown(-1, int(sys.Gid)) // best effort: only the owner or root may
		}
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// haproxyConfig maps the cluster file to haproxy.cfg.
func haproxyConfig(cfg *Config) ([]byte, error) {
	lb := cfg.LoadBalancer
	if lb == nil {
		return nil, errNoLB
	}
	p := haproxy.Params{
		Cluster:         cfg.Cluster,
		Bind:            bindAddress(lb.Listen),
		CheckInterval:   lb.CheckInterval,
		CheckClientID:   healthCheckID(cfg),
		ClientKeepalive: lb.ClientKeepalive,
		StatsSocket:     lb.StatsSocket,
	}
	// The check logs in with its own account, never the agent's: haproxy.cfg holds the password.
	if h := lb.HealthCheck; h != nil {
		pw, err := h.Password()
		if err != nil {
			return nil, err
		}
		p.Username, p.Password = h.Username, pw
	}
	for _, n := range cfg.Nodes {
		p.Brokers = append(p.Brokers, haproxy.Backend{Name: n.Name, Address: n.Address})
	}
	for _, pin := range lb.Pins {
		p.Pins = append(p.Pins, haproxy.Pin{ClientIDPrefix: pin.ClientIDPrefix, Broker: pin.Node})
	}
	return haproxy.Generate(p)
}

// bindAddress turns ":1883" into "*:1883", the form HAProxy prints in its own docs.
func bindAddress(listen string) string {
	if strings.HasPrefix(listen, ":") {
		return "*" + listen
	}
	return listen
}

// healthCheckID is the client id of HAProxy's MQTT check: the first ignored client.
func healthCheckID(cfg *Config) string {
	if len(cfg.Agent.IgnoreClients) > 0 {
		return cfg.Agent.IgnoreClients[0]
	}
	return haproxy.DefaultCheckClientID
}

// keepalivedConfig maps the cluster file to keepalived.conf for load balancer host self.
func keepalivedConfig(cfg *Config, self string) ([]byte, error) {
	lb := cfg.LoadBalancer
	if lb == nil {
		return nil, errNoLB
	}
	if lb.VIP == "" {
		return nil, errNoVIP
	}
	found := false
	p := keepalived.Params{
		Cluster:        cfg.Cluster,
		Self:           self,
		VIP:            lb.VIP,
		Interface:      lb.Interface,
		RouterID:       lb.RouterID,
		AdvertInterval: lb.AdvertInterval,
		Preempt:        lb.Preempt,
	}
	names := make([]string, 0, len(lb.Hosts))
	for _, h := range lb.Hosts {
		p.Hosts = append(p.Hosts, keepalived.Peer{Name: h.Name, Address: h.Address, Priority: h.Priority})
		names = append(names, h.Name)
		found = found || h.Name == self
	}
	if !found {
		return nil, fmt.Errorf("%w: --lb %q: not in load_balancer.hosts (have %s)", ErrConfig, self, strings.Join(names, ", "))
	}
	if _, _, err := net.ParseCIDR(lb.VIP); err != nil {
		return nil, fmt.Errorf("%w: load_balancer.vip %q: %v", ErrConfig, lb.VIP, err)
	}
	return keepalived.Generate(p)
}
