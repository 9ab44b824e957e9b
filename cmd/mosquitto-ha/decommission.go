// decommission.go owns `mosquitto-ha decommission`: it removes what a node's agent leaves on
// the brokers once the node is gone from the cluster (or the node or the cluster renamed).
//
// The agent's local connection ("mha-<cluster>-<node>-local") is a persistent session
// subscribed to '#': left behind, it keeps queueing every QoS>=1 publish of its broker forever.
// Its links, pulls and readers ("-to-", "-pull-", "-retained-") are clean sessions, removed too
// in case a broker still holds one. With a cluster secret every id also ends in a tag derived
// from it (bridge.Topics.WithIDSecret); both forms are removed, in case the agent ran without the
// secret before. A session is removed the way MQTT 3.1.1 defines: a CONNECT
// with its client id and clean session 1 discards it [MQTT-3.1.2-6], then DISCONNECT. The
// node's retained control messages ($HA/<cluster>/<node>/...) are cleared with empty retained
// publishes [MQTT-3.3.1-10].
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/bridge"
)

// decommission is what one run removes: node's sessions and retained messages on brokers.
type decommission struct {
	cfg     *Config
	topics  bridge.Topics
	secret  []byte // the cluster secret the agents' client ids derive from, if any
	node    string
	brokers []Node // where to look; Name is empty for a --broker that is not in the file
	timeout time.Duration
	out     io.Writer
	warn    io.Writer
}

func runDecommission(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("decommission", stderr)
	f.fs.StringVar(&f.node, "node", "", "the removed node whose agent sessions to remove (required)")
	cluster := f.fs.String("cluster", "", "the cluster name the node's agent used (default: the file's; give the old name after a rename)")
	extra := f.fs.StringArray("broker", nil, "host:port of a broker to clean that is no longer in the file, e.g. the removed node's own (repeatable)")
	force := f.fs.Bool("force", false, "go ahead even if the node is still in the file or its agent looks up")
	timeout := f.fs.Duration("timeout", 5*time.Second, "per broker connection")
	cfg, code := f.parse(args, stderr)
	if cfg == nil {
		return code
	}
	if f.node == "" {
		fmt.Fprintln(stderr, "mosquitto-ha: decommission: --node is required (the node whose sessions to remove)")
		return exitUsage
	}
	if *cluster == "" {
		*cluster = cfg.Cluster
	}
	for flag, v := range map[string]string{"--node": f.node, "--cluster": *cluster} {
		if !nameRE.MatchString(v) {
			fmt.Fprintf(stderr, "mosquitto-ha: decommission: %s %q: want 1-64 letters, digits, '.', '_' or '-' (as in the cluster file)\n", flag, v)
			return exitUsage
		}
	}
	if _, err := cfg.Node(f.node); err == nil && *cluster == cfg.Cluster && !*force {
		fmt.Fprintf(stderr, "mosquitto-ha: decommission: node %q is still in the nodes of %s: its agent and its peers' links would come back.\n"+
			"Remove it from the file, reload the other agents (systemctl reload 'mosquitto-ha@*'), stop its agent\n"+
			"(systemctl disable --now mosquitto-ha@%s), then run decommission with --broker <its broker> if that broker stays.\n",
			f.node, f.config, f.node)
		return exitUsage
	}
	secret, _ := cfg.ClusterSecret() // checked with the file; none: plain client ids
	d := &decommission{cfg: cfg, topics: bridge.NewTopics(*cluster, cfg.Agent.ForwardPrefix), secret: secret, node: f.node,
		timeout: *timeout, out: stdout, warn: stderr}
	d.brokers = append(d.brokers, cfg.Nodes...)
	for _, addr := range *extra {
		if err := checkHostPort(addr); err != nil {
			fmt.Fprintf(stderr, "mosquitto-ha: decommission: --broker %q: %v\n", addr, err)
			return exitUsage
		}
		if !slices.ContainsFunc(d.brokers, func(n Node) bool { return n.Address == addr }) {
			d.brokers = append(d.brokers, Node{Address: addr})
		}
	}
	retained, up, err := d.survey(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: decommission: %v\n", err)
		return exitFail
	}
	if len(up) > 0 && !*force {
		fmt.Fprintf(stderr, "mosquitto-ha: decommission: the agent of %q says it is up on %s (its retained status): stop it first\n"+
			"(systemctl disable --now mosquitto-ha@%s), or give --force if that status is stale.\n",
			f.node, strings.Join(up, ", "), f.node)
		return exitFail
	}
	if err := d.run(ctx, retained); err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: decommission: %v\n", err)
		return exitFail
	}
	return exitOK
}

// sessionIDs are the client ids node's agent uses on any broker: derived from the cluster
// secret when there is one (bridge.Topics.WithIDSecret), and the plain ones an agent without a
// secret (or before one was set) used.
func (d *decommission) sessionIDs() []string {
	var ids []string
	for _, t := range []bridge.Topics{d.topics.WithIDSecret(d.secret), d.topics} {
		ids = append(ids, t.LocalID(d.node))
		for _, p := range d.cfg.Nodes {
			if p.Name == d.node {
				continue
			}
			ids = append(ids, t.LinkID(d.node, p.Name), t.PullID(d.node, p.Name), t.ReaderID(d.node, p.Name))
		}
		if len(d.secret) == 0 {
			break
		}
	}
	return ids
}

// survey reads node's retained control messages on every broker (nil where the ACL hides
// them) and names the brokers where its status says its agent is up. An unreachable broker is
// an error: nothing is removed anywhere then.
func (d *decommission) survey(ctx context.Context) (retained map[string]map[string][]byte, up []string, err error) {
	retained = map[string]map[string][]byte{}
	var errs []error
	for _, b := range d.brokers {
		r, err := d.readRetained(ctx, b)
		if errors.Is(err, errUnreadable) {
			fmt.Fprintf(d.warn, "mosquitto-ha: decommission: %v: cannot tell whether the agent is up there, and its retained messages stay\n", err)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		retained[b.Address] = r
		var st struct {
			AgentUp bool `json:"agent_up"`
		}
		if p, ok := r[d.topics.Status(d.node)]; ok && json.Unmarshal(p, &st) == nil && st.AgentUp {
			up = append(up, b.Address)
		}
	}
	return retained, up, errors.Join(errs...)
}

// run removes the sessions and clears the retained control messages on every broker. The
// sessions need no topic rights: they go also where the retained messages could not be read.
func (d *decommission) run(ctx context.Context, retained map[string]map[string][]byte) error {
	var errs []error
	for _, b := range d.brokers {
		if err := d.clean(ctx, b, retained[b.Address]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *decommission) clean(ctx context.Context, b Node, retained map[string][]byte) error {
	removed := 0
	for _, id := range d.sessionIDs() {
		// A first connect without clean session tells whether the session exists (the broker
		// may send it queued messages meanwhile: they are dropped with it next).
		c, present, err := d.connect(ctx, b, id, false)
		if err != nil {
			return err
		}
		c.Disconnect(0)
		if c, _, err = d.connect(ctx, b, id, true); err != nil {
			return err
		}
		c.Disconnect(100)
		if present {
			removed++
			fmt.Fprintf(d.out, "%s: removed session %s\n", b.Address, id)
		}
	}
	topics := make([]string, 0, len(retained))
	for t := range retained {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	if len(topics) > 0 {
		c, _, err := d.connect(ctx, b, d.topics.ClientPrefix()+"decommission-"+randomSuffix(), true)
		if err != nil {
			return err
		}
		defer c.Disconnect(100)
		for _, t := range topics {
			// [MQTT-3.3.1-10] a retained publish with an empty payload removes the retained message.
			if err := wait(ctx, c.Publish(t, 1, true, []byte{}), d.timeout); err != nil {
				return fmt.Errorf("%s: clearing retained %s: %w", b.Address, t, err)
			}
			fmt.Fprintf(d.out, "%s: cleared retained %s\n", b.Address, t)
		}
	}
	fmt.Fprintf(d.out, "%s: %d session(s) of %s removed, %d retained message(s) cleared\n", b.Address, removed, d.node, len(topics))
	return nil
}

// errUnreadable is returned by readRetained when the ACL hides the node's control topics, as
// after a cluster rename: the agent account's ACL names the new cluster's topics only.
var errUnreadable = errors.New("cannot read the node's control topics")

// readRetained returns node's retained control messages on broker b.
func (d *decommission) readRetained(ctx context.Context, b Node) (map[string][]byte, error) {
	var mu sync.Mutex
	got := map[string][]byte{}
	c, _, err := d.connect(ctx, b, d.topics.ClientPrefix()+"decommission-"+randomSuffix(), true)
	if err != nil {
		return nil, err
	}
	defer c.Disconnect(100)
	// Mosquitto sends the retained messages right after the SUBACK; a marker published after
	// the subscription comes back behind them.
	filter := d.topics.Control() + d.node + "/#"
	markerTopic := d.topics.Control() + d.node + "/decommission-marker-" + randomSuffix()
	marker := make(chan struct{})
	var once sync.Once
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		switch {
		case m.Topic() == markerTopic:
			once.Do(func() { close(marker) })
		case m.Retained() && len(m.Payload()) > 0:
			mu.Lock()
			got[m.Topic()] = m.Payload()
			mu.Unlock()
		}
	})
	if err := wait(ctx, tok, d.timeout); err != nil {
		return nil, fmt.Errorf("%s: subscribe %s: %w", b.Address, filter, err)
	}
	c.Publish(markerTopic, 1, false, []byte{})
	select {
	case <-marker:
	case <-time.After(d.timeout):
		return nil, fmt.Errorf("%s: %w %s: a marker published there did not come back within %s (the ACL gives agent.username no readwrite on it?)", b.Address, errUnreadable, filter, d.timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	return got, nil
}

// connect opens an MQTT 3.1.1 connection to b as id with the agent's credentials and reports
// whether the broker had a session for id [MQTT-3.2.2-2].
func (d *decommission) connect(ctx context.Context, b Node, id string, clean bool) (mqtt.Client, bool, error) {
	tlsConf, err := d.cfg.TLSFor(b)
	if err != nil {
		return nil, false, err
	}
	scheme := "tcp://"
	if tlsConf != nil {
		scheme = "ssl://"
	}
	o := mqtt.NewClientOptions().AddBroker(scheme + b.Address).SetClientID(id).SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(d.timeout).
		SetTLSConfig(tlsConf)
	if d.cfg.Agent.Username != "" {
		pw, err := d.cfg.Password()
		if err != nil {
			return nil, false, err
		}
		o.SetUsername(d.cfg.Agent.Username).SetPassword(pw)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if err := wait(ctx, tok, d.timeout); err != nil {
		return nil, false, fmt.Errorf("%s: connect as %s: %w", b.Address, id, err)
	}
	return c, tok.(*mqtt.ConnectToken).SessionPresent(), nil
}

// wait waits for tok within limit or until ctx is done.
func wait(ctx context.Context, tok mqtt.Token, limit time.Duration) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-time.After(limit):
		return fmt.Errorf("no reply within %s", limit)
	case <-ctx.Done():
		return ctx.Err()
	}
}
