// Command mosquitto-ha runs the mosquitto-ha agent beside a Mosquitto broker and prints the
// configuration of every host of the cluster (Mosquitto, HAProxy, keepalived) from one file.
//
//	mosquitto-ha agent      --config cluster.yaml --node b1   run the sidecar of node b1
//	mosquitto-ha check      --config cluster.yaml [--node b1] validate the file; probe b1's broker
//	mosquitto-ha mosquitto  --config cluster.yaml --node b1   print b1's conf.d file for its Mosquitto
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
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"mosquitto-ha/bridge"
	"mosquitto-ha/cmd/mosquitto-ha/internal/mosqconf"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"agent", "run the sidecar of one node until SIGINT or SIGTERM", runAgent},
		{"check", "validate the cluster file; with --node, probe that node's broker", runCheck},
		{"mosquitto", "print the conf.d file that adds what one node's Mosquitto lacks", runMosquitto},
		{"haproxy", "print haproxy.cfg for the load balancer hosts", runHAProxy},
		{"keepalived", "print keepalived.conf for one load balancer host", runKeepalived},
		{"status", "show every node's broker, agent, peers and relay counters", runStatus},
		{"decommission", "remove a removed node's leftover agent sessions from the brokers", runDecommission},
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			return run([]string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return exitOK
	case "--version", "version":
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if helpRequested(args[1:]) {
				return c.run(ctx, args[1:], stdout, stdout) // the command's usage, to stdout
			}
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "mosquitto-ha: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
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
		ReadPause:        cfg.Agent.ReadPause,
		SnapshotInterval: cfg.Agent.SnapshotInterval,
		LocalTLS:         localTLS,
		ClusterSecret:    secret,
		Limits: bridge.Limits{MaxFilters: lim.MaxFilters, MaxFilterBytes: lim.MaxFilterBytes,
			MaxInterestBytes: lim.MaxInterestBytes, MaxPayloadBytes: lim.MaxPayloadBytes},
		Sessions: cfg.Agent.Sessions.options(),
		Logger:   log,
		Version:  shortVersion(),
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

// agentProcs is the agent's GOMAXPROCS unless the GOMAXPROCS variable says otherwise. The relay
// path is a pipeline of goroutines (reader, dispatcher, writers) that each run for a few
// microseconds per message; with a second P the runtime wakes an idle thread for every
// hand-off (futex, eventfd, epoll), and in the lab of docs/benchmarks.md ("Where the agents'
// microseconds go") that cost 54 us of agent CPU per message against 24 us with one P
// (medians of 3 interleaved runs of scripts/lab-profile.sh local). One
// Mosquitto is one thread, so one P keeps up with it.
const agentProcs = 1

func runAgent(ctx context.Context, args []string, _, stderr io.Writer) int {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(agentProcs)
	}
	f := newFlags("agent", stderr)
	f.fs.StringVar(&f.node, "node", "", "name of this node in the cluster file (required)")
	f.addLogFlags()
	metrics := f.fs.String("metrics", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9883")
	cpuProfile := f.fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) to this file until the agent stops")
	cfg, code := f.parse(args, stderr)
	if cfg == nil {
		return code
	}
	log, err := newLogger(stderr, f.logLevel, f.logFmt)
	if err != nil {
		return f.usageError(stderr, err.Error())
	}
	opts, err := agentOptions(cfg, f.node, log)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitUsage
	}
	ver, rev, _ := buildVersion()
	log.Info("mosquitto-ha starting", "version", ver, "commit", rev, "node", f.node, "config", f.config)
	a, err := bridge.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %v\n", err)
		return exitFail
	}
	reloads := newReloadState()
	if *metrics != "" {
		if err := serveMetrics(ctx, *metrics, a, reloads, log); err != nil {
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
	go reloadOnHUP(ctx, f.config, withDigests(cfg), f.node, a, reloads, log)
	if err := a.Run(ctx); err != nil {
		if errors.Is(err, bridge.ErrProbeRefused) {
			err = fmt.Errorf("%w; fix agent.username and agent.password_file (or MOSQUITTO_HA_PASSWORD) to match an account of the broker's password_file", err)
		}
		log.Error("agent cannot run", "err", err)
		if errors.Is(err, bridge.ErrProbeRefused) {
			for _, fl := range probeFaults(cfg, f.node, opts.Local, bridge.ProbeResult{}, err) {
				fmt.Fprintf(stderr, "\n%s\n", fl)
			}
		}
		if errors.Is(err, bridge.ErrNoLog) {
			fmt.Fprintf(stderr, "\n`mosquitto-ha mosquitto --config %s --node %s > /etc/mosquitto/conf.d/%s` adds what %s's broker lacks; or add these lines to its configuration; then restart it (`mosquitto-ha check --node %s` names the fault):\n\n%s",
				f.config, f.node, dropinName, f.node, f.node, mosquittoLogConf)
		}
		return exitFail
	}
	return exitOK
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
		Password: opts.Password, Timeout: 3 * time.Second, Topics: topics, ProveWildcard: true})
	failed := false
	faults := probeFaults(cfg, f.node, opts.Local, res, err)
	// The session check needs a broker that answers and takes the agent's credentials; a
	// probe that failed otherwise (e.g. its own connections taken over) does not stop it.
	if opts.Sessions.Enabled && !errors.Is(err, bridge.ErrProbeNoListener) && !errors.Is(err, bridge.ErrProbeRefused) {
		faults = append(faults, sessionFaults(ctx, cfg, opts)...)
	}
	for _, flt := range faults {
		fmt.Fprintf(stderr, "node %s: %s\n", f.node, flt)
		failed = failed || !flt.warning
	}
	if failed {
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
	brokerConf := f.fs.String("broker-conf", "/etc/mosquitto/mosquitto.conf", "the broker's configuration, read with its include_dir so that only what it lacks is printed (a missing file: a fresh install)")
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
	bc, err := mosqconf.Load(*brokerConf, skipOwnDropin)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: --broker-conf: %v\n", err)
		return exitFail
	}
	snippet, steps := mosquittoDropin(cfg, n, bc)
	fmt.Fprint(stdout, snippet)
	if len(steps) > 0 {
		fmt.Fprintf(stderr, "mosquitto-ha: besides installing this file as %s, do by hand:\n", dropinPath(bc))
		for i, s := range steps {
			fmt.Fprintf(stderr, "%d. %s\n", i+1, s)
		}
	}
	return exitOK
}

// aclFile gives the agent account alone access to the control and relay topics. MQTT wildcards
// never match '$' topics [MQTT-4.7.2-1], so '#' grants every other client all ordinary topics
// and none of the cluster's.
func aclFile(cfg *Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# mosquitto-ha ACL for cluster %q. Generated by `mosquitto-ha mosquitto --acl`.\n", cfg.Cluster)
	b.WriteString("# Merge with your own ACL if you have one: Mosquitto reads a single acl_file.\n\n")
	b.WriteString("# Anonymous clients (when allow_anonymous is true): every ordinary topic.\ntopic readwrite #\n\n")
	b.WriteString("# Every authenticated client: every ordinary topic ('#' never matches '$' topics).\n")
	b.WriteString("# Add 'topic read $SYS/#' under a user that needs the broker's statistics.\npattern readwrite #\n\n")
	b.WriteString("# The agent account: its broker's log, every topic, and the cluster's control and relay topics.\n")
	b.WriteString(agentACL(cfg))
	if lb := cfg.LoadBalancer; lb != nil && lb.HealthCheck != nil {
		b.WriteString("\n# HAProxy's health check account only connects and disconnects: no topic at all. Mosquitto\n")
		b.WriteString("# reads a user's deny lines before any pattern, so 'pattern readwrite #' does not reach it.\n")
		fmt.Fprintf(&b, "user %s\ntopic deny #\n", lb.HealthCheck.Username)
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
