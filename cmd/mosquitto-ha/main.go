// Command mosquitto-ha runs the mosquitto-ha agent beside a Mosquitto broker and prints the
// configuration of every host of the cluster (Mosquitto, HAProxy, keepalived) from one file.
//
//	mosquitto-ha agent      --config cluster.yaml --node b1   run the sidecar of node b1
//	mosquitto-ha check      --config cluster.yaml [--node b1] validate the file; probe b1's broker
//	mosquitto-ha mosquitto  --config cluster.yaml --node b1   print b1's mosquitto.conf lines
//	mosquitto-ha haproxy    --config cluster.yaml             print haproxy.cfg
//	mosquitto-ha keepalived --config cluster.yaml --lb lb1    print lb1's keepalived.conf
//	mosquitto-ha status     --config cluster.yaml             the whole cluster at a glance
//	mosquitto-ha decommission --config cluster.yaml --node b4 remove a removed node's sessions
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"mosquitto-ha/bridge"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// exit codes
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"agent", "run the sidecar of one node until SIGINT or SIGTERM", runAgent},
		{"check", "validate the cluster file; with --node, probe that node's broker", runCheck},
		{"mosquitto", "print the mosquitto.conf lines one node needs", runMosquitto},
		{"haproxy", "print haproxy.cfg for the load balancer hosts", runHAProxy},
		{"keepalived", "print keepalived.conf for one load balancer host", runKeepalived},
		{"status", "show every node's broker, agent, peers and relay counters", runStatus},
		{"decommission", "remove a removed node's leftover agent sessions from the brokers", runDecommission},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mosquitto-ha <command> --config cluster.yaml [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		return exitUsage
	}
	for _, c := range commands() {
		if c.name == args[0] {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "mosquitto-ha: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

// flags is the flag set every command starts from.
type flags struct {
	fs       *pflag.FlagSet
	config   string
	node     string
	logLevel string
}

func newFlags(name string, stderr io.Writer) *flags {
	f := &flags{fs: pflag.NewFlagSet(name, pflag.ContinueOnError)}
	f.fs.SetOutput(stderr)
	f.fs.StringVarP(&f.config, "config", "c", "/etc/mosquitto-ha/cluster.yaml", "cluster file")
	return f
}

func (f *flags) parse(args []string, stderr io.Writer) (*Config, int) {
	if err := f.fs.Parse(args); err != nil {
		return nil, exitUsage
	}
	cfg, err := LoadConfig(f.config)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %s: %v\n", f.config, err)
		return nil, exitFail
	}
	return cfg, exitOK
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// agentOptions maps the cluster file to one node's agent.
func agentOptions(cfg *Config, node string, log *slog.Logger) (bridge.Options, error) {
	n, err := cfg.Node(node)
	if err != nil {
		return bridge.Options{}, err
	}
	pw, err := cfg.Password()
	if err != nil {
		return bridge.Options{}, err
	}
	secret, err := cfg.ClusterSecret()
	if err != nil {
		return bridge.Options{}, err
	}
	localTLS, err := cfg.TLSFor(n)
	if err != nil {
		return bridge.Options{}, err
	}
	lim := cfg.Agent.Limits
	o := bridge.Options{
		Cluster: cfg.Cluster, Node: n.Name, Local: cfg.LocalAddress(n),
		Username: cfg.Agent.Username, Password: pw,
		ForwardPrefix:    cfg.Agent.ForwardPrefix,
		IgnoreClients:    cfg.Agent.IgnoreClients,
		StatePath:        filepath.Join(cfg.Agent.StateDir, cfg.Cluster+"-"+n.Name+".json"),
		BufferMessages:   cfg.Agent.BufferMessages,
		BufferBytes:      cfg.Agent.BufferBytes,
		MaxInflight:      cfg.Agent.MaxInflight,
		Keepalive:        cfg.Agent.Keepalive,
		SnapshotInterval: cfg.Agent.SnapshotInterval,
		LocalTLS:         localTLS,
		ClusterSecret:    secret,
		Limits: bridge.Limits{MaxFilters: lim.MaxFilters, MaxFilterBytes: lim.MaxFilterBytes,
			MaxInterestBytes: lim.MaxInterestBytes, MaxPayloadBytes: lim.MaxPayloadBytes},
		Logger: log,
	}
	for _, p := range cfg.Nodes {
		if p.Name == n.Name {
			continue
		}
		t, err := cfg.TLSFor(p)
		if err != nil {
			return bridge.Options{}, err
		}
		o.Peers = append(o.Peers, bridge.PeerAddr{Name: p.Name, Address: p.Address, TLS: t})
	}
	return o, nil
}

func runAgent(ctx context.Context, args []string, _, stderr io.Writer) int {
	f := newFlags("agent", stderr)
	f.fs.StringVar(&f.node, "node", "", "name of this node in the cluster file (required)")
	f.fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	metrics := f.fs.String("metrics", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9883")
	cpuProfile := f.fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) to this file until the agent stops")
	cfg, code := f.parse(args, stderr)
	if cfg == nil {
		return code
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitUsage
	}
	opts, err := agentOptions(cfg, f.node, log)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitUsage
	}
	a, err := bridge.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitFail
	}
	if *metrics != "" {
		if err := serveMetrics(ctx, *metrics, a, log); err != nil {
			fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
			return exitUsage
		}
	}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(pf)
		}
		if err != nil {
			fmt.Fprintf(stderr, "mosquitto-ha: --cpuprofile: %v\n", err)
			return exitUsage
		}
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}
	go reloadOnHUP(ctx, f.config, cfg, f.node, a, log)
	if err := a.Run(ctx); err != nil {
		log.Error("agent cannot run", "err", err)
		if errors.Is(err, bridge.ErrNoLog) {
			fmt.Fprintf(stderr, "\nAdd these lines to %s's mosquitto.conf and restart it:\n\n%s", f.node, mosquittoLogConf)
		}
		return exitFail
	}
	return exitOK
}

// reloadOnHUP re-reads the cluster file on SIGHUP and applies what can change while running:
// nodes added or removed, and limits. An invalid file, or one that changes what needs a restart,
// keeps the running configuration and says why.
func reloadOnHUP(ctx context.Context, path string, running *Config, node string, a *bridge.Agent, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		next, err := LoadConfig(path)
		if err == nil {
			err = needsRestart(running, next, node)
		}
		var opts bridge.Options
		if err == nil {
			opts, err = agentOptions(next, node, log)
		}
		if err != nil {
			log.Error("reload refused: keeping the running configuration", "config", path, "err", err)
			continue
		}
		a.Reload(opts.Peers, opts.Limits)
		running = next
		log.Info("configuration reloaded", "config", path, "peers", len(opts.Peers))
	}
}

// needsRestart reports the changes a reload cannot apply.
func needsRestart(old, next *Config, node string) error {
	var diffs []string
	if old.Cluster != next.Cluster {
		diffs = append(diffs, "cluster")
	}
	oldNode, _ := old.Node(node)
	nextNode, err := next.Node(node)
	if err != nil {
		return err
	}
	if old.LocalAddress(oldNode) != next.LocalAddress(nextNode) {
		diffs = append(diffs, "this node's address")
	}
	oa, na := old.Agent, next.Agent
	if oa.ForwardPrefix != na.ForwardPrefix || oa.Username != na.Username || oa.PasswordFile != na.PasswordFile ||
		oa.ClusterSecretFile != na.ClusterSecretFile || oa.StateDir != na.StateDir || oa.BufferMessages != na.BufferMessages ||
		oa.BufferBytes != na.BufferBytes || oa.MaxInflight != na.MaxInflight || oa.Keepalive != na.Keepalive ||
		!slices.Equal(oa.IgnoreClients, na.IgnoreClients) || !reflect.DeepEqual(oa.TLS, na.TLS) {
		diffs = append(diffs, "agent settings other than limits")
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w: %s changed: restart the agent to apply", ErrConfig, strings.Join(diffs, ", "))
	}
	return nil
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("check", stderr)
	f.fs.StringVar(&f.node, "node", "", "also probe this node's broker")
	cfg, code := f.parse(args, stderr)
	if cfg == nil {
		return code
	}
	fmt.Fprintf(stdout, "%s: valid (cluster %q, %d nodes)\n", f.config, cfg.Cluster, len(cfg.Nodes))
	if f.node == "" {
		return exitOK
	}
	opts, err := agentOptions(cfg, f.node, nil)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitUsage
	}
	topics := bridge.NewTopics(cfg.Cluster, cfg.Agent.ForwardPrefix)
	res, err := bridge.Probe(ctx, bridge.ProbeOptions{Address: opts.Local, TLS: opts.LocalTLS,
		ClientID: topics.ClientPrefix() + f.node + "-check", Username: opts.Username,
		Password: opts.Password, Timeout: 3 * time.Second, Topics: topics})
	if err != nil {
		fmt.Fprintf(stderr, "node %s: broker %s unreachable: %v\n", f.node, opts.Local, err)
		return exitFail
	}
	if res.AnonymousForward {
		fmt.Fprintf(stderr, "node %s: WARNING: a client without credentials can publish to %q and inject relays; apply the ACL from `mosquitto-ha mosquitto --node %s`\n", f.node, cfg.Agent.ForwardPrefix, f.node)
	}
	if len(res.Missing) > 0 {
		fmt.Fprintf(stderr, "node %s: broker %s does not publish %s log lines to $SYS/broker/log.\nAdd these lines to its mosquitto.conf and restart it:\n\n%s",
			f.node, opts.Local, strings.Join(res.Missing, ", "), mosquittoLogConf)
		return exitFail
	}
	fmt.Fprintf(stdout, "node %s: broker %s publishes every log line the agent needs\n", f.node, opts.Local)
	return exitOK
}

// mosquittoLogConf are the lines that make Mosquitto publish what the agent reads.
// Mosquitto accepts one log_type per line.
const mosquittoLogConf = `log_dest topic
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
log_type unsubscribe
`

func runMosquitto(_ context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("mosquitto", stderr)
	f.fs.StringVar(&f.node, "node", "", "node to print the snippet for (required)")
	acl := f.fs.Bool("acl", false, "print the ACL file that protects the cluster's control and relay topics instead")
	cfg, code := f.parse(args, stderr)
	if cfg == nil {
		return code
	}
	n, err := cfg.Node(f.node)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitUsage
	}
	if *acl {
		if cfg.Agent.Username == "" {
			fmt.Fprintln(stderr, "mosquitto-ha: agent.username is empty: the ACL protects the cluster's topics by giving only the agent account access; set agent.username and agent.password_file first")
			return exitFail
		}
		fmt.Fprint(stdout, aclFile(cfg))
		return exitOK
	}
	_, port, _ := splitPort(n.Address)
	fmt.Fprint(stdout, mosquittoSnippet(cfg, n, port))
	return exitOK
}

// aclPath is where the snippet expects the ACL file.
const aclPath = "/etc/mosquitto/mosquitto-ha.acl"

// aclFile gives the agent account alone access to the control and relay topics. MQTT wildcards
// never match '$' topics [MQTT-4.7.2-1], so '#' grants every other client all ordinary topics
// and none of the cluster's.
func aclFile(cfg *Config) string {
	t := bridge.NewTopics(cfg.Cluster, cfg.Agent.ForwardPrefix)
	var b strings.Builder
	fmt.Fprintf(&b, "# mosquitto-ha ACL for cluster %q. Generated by `mosquitto-ha mosquitto --acl`.\n", cfg.Cluster)
	b.WriteString("# Merge with your own ACL if you have one: Mosquitto reads a single acl_file.\n\n")
	b.WriteString("# Anonymous clients (when allow_anonymous is true): every ordinary topic.\ntopic readwrite #\n\n")
	b.WriteString("# Every authenticated client: every ordinary topic ('#' never matches '$' topics).\n")
	b.WriteString("# Add 'topic read $SYS/#' under a user that needs the broker's statistics.\npattern readwrite #\n\n")
	fmt.Fprintf(&b, "# The agent account: its broker's log, every topic, and the cluster's control and relay topics.\nuser %s\n", cfg.Agent.Username)
	b.WriteString("topic read $SYS/#\ntopic readwrite #\n")
	fmt.Fprintf(&b, "topic readwrite %s#\n", t.Control())
	for _, f := range t.ForwardFilters() {
		fmt.Fprintf(&b, "topic readwrite %s\n", f)
	}
	if lb := cfg.LoadBalancer; lb != nil && lb.HealthCheck != nil {
		b.WriteString("\n# HAProxy's health check account only connects and disconnects: no topic at all. Mosquitto\n")
		b.WriteString("# reads a user's deny lines before any pattern, so 'pattern readwrite #' does not reach it.\n")
		fmt.Fprintf(&b, "user %s\ntopic deny #\n", lb.HealthCheck.Username)
	}
	return b.String()
}

func mosquittoSnippet(cfg *Config, n Node, port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# mosquitto-ha: cluster %q, node %q. Generated by `mosquitto-ha mosquitto`.\n", cfg.Cluster, n.Name)
	fmt.Fprintf(&b, "# Peers and HAProxy reach this broker at %s.\n", n.Address)
	fmt.Fprintf(&b, "listener %d\n\n", port)
	b.WriteString("# The agent reads subscribe, unsubscribe, connect and disconnect lines from $SYS/broker/log.\n")
	b.WriteString(mosquittoLogConf)
	b.WriteString("\n# $SYS/broker/clients/total every 2 s lets a fresh agent confirm it knows every client sooner.\n")
	b.WriteString("sys_interval 2\n")
	b.WriteString("\n# Without TCP_NODELAY Mosquitto adds up to 40 ms to each relay (Nagle).\n")
	b.WriteString("set_tcp_nodelay true\n")
	b.WriteString("\n# The agent subscribes to '#': Mosquitto drops messages for a subscriber that is more than\n")
	b.WriteString("# max_queued_messages behind (default 1000, QoS 0 included), and queues for the agent while it\n")
	b.WriteString("# restarts. Raise it so bursts and restarts lose nothing.\n")
	b.WriteString("max_queued_messages 100000\n")
	b.WriteString("\n# Persistent sessions and retained messages survive a broker restart.\n")
	b.WriteString("persistence true\n")
	if cfg.Agent.Username == "" {
		b.WriteString("\n# WARNING: agent.username is empty, so any client can publish to the cluster's $HA/ and\n")
		fmt.Fprintf(&b, "# %s topics. Give the agents an account, then restrict those topics to it:\n", cfg.Agent.ForwardPrefix)
		fmt.Fprintf(&b, "#   mosquitto-ha mosquitto --config FILE --node %s --acl > %s\n", n.Name, aclPath)
	} else {
		fmt.Fprintf(&b, "\n# Only the agent account %q may use the cluster's $HA/ and %s topics.\n", cfg.Agent.Username, cfg.Agent.ForwardPrefix)
		fmt.Fprintf(&b, "# Write the file with: mosquitto-ha mosquitto --config FILE --node %s --acl > %s\n", n.Name, aclPath)
		b.WriteString("# and create the account with: mosquitto_passwd -c /etc/mosquitto/passwd " + cfg.Agent.Username + "\n")
		b.WriteString("password_file /etc/mosquitto/passwd\n")
		fmt.Fprintf(&b, "acl_file %s\n", aclPath)
	}
	return b.String()
}

func runHAProxy(_ context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("haproxy", stderr)
	output := f.fs.StringP("output", "o", "", "write haproxy.cfg to this file, mode 0640 (it may hold the health check's password), instead of stdout")
	cfg, code := f.parse(args, stderr)
	if cfg == nil {
		return code
	}
	return writeHAProxy(cfg, *output, stdout, stderr)
}

func runKeepalived(_ context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("keepalived", stderr)
	var lb string
	f.fs.StringVar(&lb, "lb", "", "load balancer host to print the file for (required)")
	cfg, code := f.parse(args, stderr)
	if cfg == nil {
		return code
	}
	out, err := keepalivedConfig(cfg, lb)
	if errors.Is(err, errNoVIP) {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitFail
	}
	stdout.Write(out)
	return exitOK
}
