package main

import (
	"fmt"
	"net"
	"strings"

	"mosquitto-ha/haproxy"
	"mosquitto-ha/keepalived"
)

// errNoLB explains how to describe the load balancer when the file has none.
var errNoLB = fmt.Errorf("%w: load_balancer: missing (add vip, interface and hosts to generate HAProxy and keepalived files)", ErrConfig)

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
	if cfg.Agent.Username != "" {
		pw, err := cfg.Password()
		if err != nil {
			return nil, err
		}
		p.Username, p.Password = cfg.Agent.Username, pw
	}
	for _, n := range cfg.Nodes {
		p.Brokers = append(p.Brokers, haproxy.Backend{Name: n.Name, Address: n.Address})
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
