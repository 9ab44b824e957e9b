// What `check --node` tells the operator: each fault the probe found in the node's broker,
// named, with the change that fixes it.
package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"mosquitto-ha/bridge"
)

// fault is one problem found in a broker: what is wrong, and the fix.
type fault struct {
	name, what, fix string
	warning         bool // the agent works, but something should change
}

func (f fault) String() string {
	kind := "FAULT"
	if f.warning {
		kind = "WARNING"
	}
	return fmt.Sprintf("%s (%s): %s\n  FIX: %s", kind, f.name, f.what, strings.ReplaceAll(f.fix, "\n", "\n       "))
}

// probeFaults turns what a probe of node's broker at addr found into faults.
func probeFaults(cfg *Config, node, addr string, res bridge.ProbeResult, err error) []fault {
	user := cfg.Agent.Username
	account := "anonymous"
	if user != "" {
		account = fmt.Sprintf("user %q", user)
	}
	snippet := fmt.Sprintf("mosquitto-ha mosquitto --config FILE --node %s > /etc/mosquitto/conf.d/%s", node, dropinName)
	_, port, _ := splitPort(addr)
	switch {
	case errors.Is(err, bridge.ErrProbeNoListener):
		return []fault{{name: "listener missing",
			what: fmt.Sprintf("nothing listens at %s (connection refused): Mosquitto is not running there, or it has no listener on port %d", addr, port),
			fix:  fmt.Sprintf("give Mosquitto a `listener %d` (`%s` adds it) and (re)start it: systemctl restart mosquitto", port, snippet)}}
	case errors.Is(err, bridge.ErrProbeRefused) && user != "":
		return []fault{{name: "wrong password",
			what: fmt.Sprintf("the broker at %s refused %s (not authorised): the password differs from agent.password_file (or MOSQUITTO_HA_PASSWORD), or the broker has no such user", addr, account),
			fix:  fmt.Sprintf("on the broker host, set the account's password to the agent's: `mosquitto_passwd <the broker's password_file> %s` (no -c: it would replace every account), then `systemctl reload mosquitto`; or correct agent.password_file", user)}}
	case errors.Is(err, bridge.ErrProbeRefused):
		return []fault{{name: "anonymous refused",
			what: fmt.Sprintf("the broker at %s refused the agent, which connects without credentials (allow_anonymous is false)", addr),
			fix:  "give the agents an account: set agent.username and agent.password_file, add the account with `mosquitto_passwd <the broker's password_file> <username>`, and reload mosquitto"}}
	case err != nil:
		return []fault{{name: "unreachable",
			what: fmt.Sprintf("cannot reach the broker at %s: %v", addr, err),
			fix:  "check the node's address (or agent.local), the network and any firewall between the agent and its broker"}}
	}
	var out []fault
	grant := func(filter string) string {
		if user == "" {
			return fmt.Sprintf("in the broker's acl_file, give anonymous clients `topic readwrite %s` (lines before the first `user` line), or give the agents an account (agent.username)", filter)
		}
		return fmt.Sprintf("in the broker's acl_file, add `topic readwrite %s` under `user %s` (the full section: `mosquitto-ha mosquitto --config FILE --node %s --acl`), then reload mosquitto", filter, user, node)
	}
	if res.NoSys {
		fix := fmt.Sprintf("in the broker's acl_file, add `topic read $SYS/#` under `user %s`, then reload mosquitto", user)
		if user == "" {
			fix = "in the broker's acl_file, add `topic read $SYS/#` before the first `user` line (anonymous clients), or give the agents an account (agent.username) with that line"
		}
		out = append(out, fault{name: "ACL denies $SYS",
			what: fmt.Sprintf("nothing arrives on $SYS for %s at %s, neither its own log lines nor $SYS/broker/uptime: the broker's ACL does not let it read $SYS/# (a broker with neither `log_dest topic` nor a sys_interval above 0 looks the same)", account, addr),
			fix:  fix + fmt.Sprintf(".\nIf the broker has no acl_file: add `log_dest topic` and the log_type lines, and remove `sys_interval 0` (`%s` does both)", snippet)})
		return append(out, deniedFaults(cfg, res, account, grant)...)
	}
	out = append(out, deniedFaults(cfg, res, account, grant)...)
	if len(res.Missing) > 0 {
		lines := mosquittoLogConf
		if !slices.Contains(res.Missing, "topic") {
			lines = ""
			for _, m := range res.Missing {
				lines += "log_type " + m + "\n"
			}
		}
		what := fmt.Sprintf("the broker at %s does not publish %s log lines to $SYS/broker/log", addr, strings.Join(res.Missing, ", "))
		if slices.Contains(res.Missing, "topic") {
			what = fmt.Sprintf("the broker at %s publishes no log line to $SYS/broker/log (no `log_dest topic`)", addr)
		}
		if slices.Contains(res.Missing, "notice") {
			what += "; a missing notice line may also be `connection_messages false`"
		}
		out = append(out, fault{name: "missing log lines", what: what,
			fix: fmt.Sprintf("`%s` adds what the broker lacks; or add these lines to its configuration (one log_type per line), then restart it:\n%s", snippet, strings.TrimRight(lines, "\n"))})
	}
	if res.NoSysStats {
		out = append(out, fault{name: "sys_interval 0",
			what: fmt.Sprintf("the broker at %s publishes its log lines but never $SYS/broker/uptime nor $SYS/broker/clients/total: it runs with `sys_interval 0` (or the ACL grants $SYS/broker/log/# alone). The agent then never accounts for the clients already connected and asks its peers for every message forever: the savings are lost", addr),
			fix:  "remove `sys_interval 0` from the broker's configuration or set `sys_interval 10` (Mosquitto's default), then restart it; if the ACL restricts $SYS, grant `topic read $SYS/#`"})
	}
	if res.AnonymousForward {
		fix := fmt.Sprintf("give the agents an account (agent.username) and apply the ACL of `mosquitto-ha mosquitto --config FILE --node %s --acl`", node)
		if user != "" {
			fix = fmt.Sprintf("in the broker's acl_file, grant %s to `user %s` alone, as the ACL of `mosquitto-ha mosquitto --config FILE --node %s --acl` does", strings.Join(bridge.NewTopics(cfg.Cluster, cfg.Agent.ForwardPrefix).ForwardFilters(), ", "), user, node)
		}
		if len(cfg.Agent.ClusterSecretFile) == 0 {
			fix += "; agent.cluster_secret_file also makes the agents refuse unsigned relays"
		}
		out = append(out, fault{name: "forward prefix open", warning: true,
			what: fmt.Sprintf("a client without credentials can publish to %q and inject relays that the agents deliver as if they came from a peer", cfg.Agent.ForwardPrefix),
			fix:  fix})
	}
	return out
}

// deniedFaults names the cluster topics the account could not use.
func deniedFaults(cfg *Config, res bridge.ProbeResult, account string, grant func(string) string) []fault {
	var out []fault
	for _, d := range res.Denied {
		switch {
		case d == "#":
			out = append(out, fault{name: "ACL denies #",
				what: fmt.Sprintf("%s published on the ordinary topic %s<id> and did not get it back: the ACL does not let it read and write every topic ('#'), so the agent can neither see local publishes nor deliver relays", account, bridge.ProbeTopicPrefix),
				fix:  grant("#")})
		case strings.HasPrefix(d, "$HA/"):
			out = append(out, fault{name: "ACL denies the cluster's control topics",
				what: fmt.Sprintf("%s published on %s and did not get it back: the agents cannot exchange interest", account, strings.TrimSuffix(d, "#")+"probe/<id>"),
				fix:  grant(d)})
		default:
			out = append(out, fault{name: "ACL denies the forward prefix",
				what: fmt.Sprintf("%s published on %s and did not get it back: the agents cannot relay", account, strings.TrimSuffix(d, "/#")),
				fix:  grant(d)})
		}
	}
	return out
}

// sessionFaults checks that the agent's account may act for other client ids, as sessions that
// follow their client need (agent.sessions): a warning, since relaying works without it.
func sessionFaults(ctx context.Context, cfg *Config, opts bridge.Options) []fault {
	err := bridge.CheckSessionRights(ctx, bridge.ProbeOptions{Address: opts.Local, TLS: opts.LocalTLS,
		Username: opts.Username, Password: opts.Password, Timeout: 3 * time.Second})
	if err == nil {
		return nil
	}
	account := "the agent's connections"
	if cfg.Agent.Username != "" {
		account = fmt.Sprintf("the agent account %q", cfg.Agent.Username)
	}
	return []fault{{name: "sessions", warning: true,
		what: fmt.Sprintf("%v. Sessions will not follow their clients to this broker, and a client id connected here and on another broker keeps both connections", err),
		fix: fmt.Sprintf("let %s connect with any client id and subscribe to any ordinary filter: no use_username_as_clientid on the listener the agent uses (agent.local), "+
			"no dynamic security client-id binding for the agent's username, and the ACL of `mosquitto-ha mosquitto --acl` (`topic readwrite #`); "+
			"or turn them off: agent.sessions.enabled: false", account)}}
}
