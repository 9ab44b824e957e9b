// Command labcheck is the checker client pair of the mosquitto-ha lab (scripts/lab.sh): one QoS 1
// publisher and one QoS 1 subscriber, both connected through the VIP, measuring what a fault
// does to the messages the cluster acknowledged.
//
//	ip netns exec mha-client labcheck --config /tmp/mha-lab/cluster.yaml --vip 198.18.0.100:1883 \
//	    --sub-broker b1 --duration 10s --dead b1 < marks
//
// What it does, in order:
//
//  1. Observers. One plain client per broker (client id "labcheck-obs", connected to the broker's
//     own address, not through the VIP) reads `$SYS/broker/log/N` and
//     `$SYS/broker/log/M/subscribe`. From these lines labcheck learns which broker each of its
//     connections landed on, and through which HAProxy host (the source address of the line).
//  2. Placement. HAProxy sends a client id to a broker by a consistent hash of the id, which
//     labcheck does not compute: it tries candidate ids through the VIP (clean session, connect,
//     disconnect), watches on which broker each one lands, and keeps a subscriber id and a
//     publisher id that land on different brokers (or on --sub-broker / --pub-broker). Behind
//     a balancer that does not keep ids on brokers (the study's round robin) the pair then
//     reconnects until each lands where it was placed, deleting the session it left elsewhere.
//  3. The pair. Both clients use persistent sessions (clean session false), QoS 1, and reconnect
//     on their own every --retry. On every connection each subscribes to a marker filter
//     `labcheck/<run>/conn/<role>/<n>` (n counts its TCP connections): the broker's log line
//     for it tells which broker carried connection n. The subscriber also subscribes to the data
//     topic on every connection, since a session on a new broker starts empty.
//  4. Warm-up. The publisher sends sequence 0 until the subscriber gets one (the subscription
//     has reached the publisher's broker through the agents), then prints a "ready:" line on
//     stderr and publishes sequence 1, 2, ... at --rate for --duration. Payload (big endian):
//     sequence (8 bytes), send time in unix nanoseconds (8), run id (8).
//  5. Marks. Every line read on stdin is a mark (a fault, a heal) stamped with the time it was
//     read; labcheck reports how long after each mark the subscriber received again.
//  6. Drain. After the last publish it waits at most --drain for acknowledgements and arrivals.
//  7. Return visits. A subscriber that moved (its broker went down, or an HAProxy marked it
//     down) left its persistent session behind, and that session went on drawing messages:
//     the ones published before its new subscription took effect elsewhere reached only the
//     old session. A real client gets them when it connects to that broker again. labcheck
//     connects directly to each broker the subscriber left, as the subscriber with its
//     session, collects what waited there, and reports those messages apart ("stranded" when
//     the subscriber had not received them live). Then it deletes its sessions on every broker
//     it can reach and prints one JSON report on stdout.
//
// Dead letters. A message the publisher's broker acknowledged but that was handed to a broker
// that then died can only come back with that broker. With --dead B, an acknowledged message
// never received is a dead letter, not a loss, when either
//
//   - its PUBACK came on a publisher connection to B (B accepted it and died before its agent
//     relayed it), or
//   - it was published while the subscriber's only session was the one on B: its sequence lies
//     after the last message the subscriber received on B and before the first one it received
//     on the broker it moved to (a new session only receives what is published after its
//     subscription took effect, so those messages were routed to B alone).
//
// Every other acknowledged message that never arrives is lost. The attribution errs towards
// "lost": a PUBACK or an arrival is credited to the connection current when labcheck handled it,
// which is never earlier than the one that carried it.
//
// `labcheck hastat --socket PATH` prints each server's state from an HAProxy stats socket (the
// lab uses it to wait until every broker is UP behind every HAProxy).
//
// Exit status: 0 when the run completed (loss is a measurement), 1 for setup errors, 2 for usage.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// observerID is the client id of the per-broker log readers; the lab's cluster file lists it
// in agent.ignore_clients so that its $SYS subscriptions never count as interest.
const observerID = "labcheck-obs"

// payloadLen is sequence + send time + run id.
const payloadLen = 24

type options struct {
	config     string
	brokers    string
	vip        string
	rate       float64
	duration   time.Duration
	drain      time.Duration
	warmup     time.Duration
	subBroker  string
	pubBroker  string
	dead       string
	gap        time.Duration
	keepalive  time.Duration
	retry      time.Duration
	idPrefix   string
	maxRuntime time.Duration
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "hastat" {
		return runHAStat(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "run" {
		args = args[1:]
	}
	var o options
	fs := pflag.NewFlagSet("labcheck", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "config", "", "cluster file: the brokers' names and addresses (or --brokers)")
	fs.StringVar(&o.brokers, "brokers", "", "brokers as name=host:port,... (instead of --config)")
	fs.StringVar(&o.vip, "vip", "198.18.0.100:1883", "where the clients connect: the VIP and HAProxy's port")
	fs.Float64Var(&o.rate, "rate", 100, "messages per second")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to publish")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "after the last publish, wait at most this for acks and arrivals")
	fs.DurationVar(&o.warmup, "warmup", 15*time.Second, "wait at most this for the subscriber's first message")
	fs.StringVar(&o.subBroker, "sub-broker", "", "put the subscriber on this broker (default: any)")
	fs.StringVar(&o.pubBroker, "pub-broker", "", "put the publisher on this broker (default: any other than the subscriber's)")
	fs.StringVar(&o.dead, "dead", "", "broker lost during the run: count its dead letters apart")
	fs.DurationVar(&o.gap, "gap", 0, "report reception gaps longer than this (default 3 x the publish interval)")
	fs.DurationVar(&o.keepalive, "keepalive", time.Second, "MQTT keepalive of the pair (whole seconds)")
	fs.DurationVar(&o.retry, "retry", 200*time.Millisecond, "reconnect interval")
	fs.StringVar(&o.idPrefix, "id-prefix", "", "client id prefix (default: lc-<random>)")
	fs.DurationVar(&o.maxRuntime, "timeout", 0, "hard bound on the whole run (default: warmup + duration + drain + 30s + 15s per broker)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	brokers, err := loadBrokers(o.config, o.brokers)
	if err != nil {
		fmt.Fprintf(stderr, "labcheck: %v\n", err)
		return exitUsage
	}
	for _, b := range []string{o.subBroker, o.pubBroker, o.dead} {
		if b != "" && brokers.addr(b) == "" {
			fmt.Fprintf(stderr, "labcheck: broker %q is not in %s\n", b, brokers.names())
			return exitUsage
		}
	}
	if o.subBroker != "" && o.subBroker == o.pubBroker {
		fmt.Fprintln(stderr, "labcheck: --sub-broker and --pub-broker must differ")
		return exitUsage
	}
	if o.rate <= 0 || o.rate > 10000 || o.duration <= 0 || o.keepalive < time.Second {
		fmt.Fprintln(stderr, "labcheck: want 0 < --rate <= 10000, --duration > 0, --keepalive >= 1s")
		return exitUsage
	}
	if o.maxRuntime == 0 {
		// 15 s per broker: the return visits (at most 15 s each) after the drain.
		o.maxRuntime = o.warmup + o.duration + o.drain + 30*time.Second + time.Duration(len(brokers))*15*time.Second
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.maxRuntime)
	defer cancel()

	rep, err := check(ctx, o, brokers, stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "labcheck: %v\n", err)
		return exitFail
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return exitFail
	}
	return exitOK
}

// brokerList is the cluster's brokers in file order.
type brokerList []struct{ Name, Address string }

func (l brokerList) addr(name string) string {
	for _, b := range l {
		if b.Name == name {
			return b.Address
		}
	}
	return ""
}

func (l brokerList) names() string {
	var n []string
	for _, b := range l {
		n = append(n, b.Name)
	}
	return strings.Join(n, ", ")
}

// loadBrokers reads the nodes of a cluster file (only name and address) or a --brokers list.
func loadBrokers(config, list string) (brokerList, error) {
	var out brokerList
	switch {
	case config != "" && list != "":
		return nil, errors.New("give --config or --brokers, not both")
	case config != "":
		data, err := os.ReadFile(config)
		if err != nil {
			return nil, err
		}
		var f struct {
			Nodes []struct {
				Name    string `yaml:"name"`
				Address string `yaml:"address"`
			} `yaml:"nodes"`
		}
		if err := yaml.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("%s: %v", config, err)
		}
		for _, n := range f.Nodes {
			out = append(out, struct{ Name, Address string }{n.Name, n.Address})
		}
	case list != "":
		for _, item := range strings.Split(list, ",") {
			name, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
			if !ok || name == "" || addr == "" {
				return nil, fmt.Errorf("--brokers %q: want name=host:port,...", list)
			}
			out = append(out, struct{ Name, Address string }{name, addr})
		}
	default:
		return nil, errors.New("want --config cluster.yaml or --brokers name=host:port,...")
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("want at least 2 brokers, have %d", len(out))
	}
	return out, nil
}

// ---- observers ----------------------------------------------------------------------------

// logEvent is one line of a broker's log that concerns a labcheck client.
type logEvent struct {
	broker string
	t      time.Time
	client string
	// connect: the HAProxy host (source address) the client came through
	from string
	// subscribe: the marker's role and connection number
	role  string
	epoch int64
}

type observers struct {
	mu       sync.Mutex
	connects []logEvent
	markers  []logEvent
	clients  []mqtt.Client
	run      string
}

var (
	connectRE = regexp.MustCompile(`New client connected from (\S+):\d+ as (\S+) \(`)
	markerRE  *regexp.Regexp
)

func startObservers(ctx context.Context, brokers brokerList, run string, o options) (*observers, error) {
	obs := &observers{run: run}
	markerRE = regexp.MustCompile(`(\S+) [012] labcheck/` + regexp.QuoteMeta(run) + `/conn/(sub|pub)/(\d+)$`)
	errc := make(chan error, len(brokers))
	for _, b := range brokers {
		b := b
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + b.Address).SetClientID(observerID).
			SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
			SetConnectRetryInterval(o.retry).SetMaxReconnectInterval(o.retry).
			SetConnectTimeout(time.Second).SetKeepAlive(2 * time.Second).SetPingTimeout(time.Second)
		handler := func(_ mqtt.Client, m mqtt.Message) { obs.line(b.Name, m.Topic(), string(m.Payload())) }
		opts.SetOnConnectHandler(func(c mqtt.Client) {
			c.SubscribeMultiple(map[string]byte{"$SYS/broker/log/N": 0, "$SYS/broker/log/M/subscribe": 0}, handler)
		})
		c := mqtt.NewClient(opts)
		obs.clients = append(obs.clients, c)
		go func() {
			tok := c.Connect()
			select {
			case <-tok.Done():
				errc <- tok.Error()
			case <-time.After(5 * time.Second):
				errc <- fmt.Errorf("observer: broker %s (%s) unreachable", b.Name, b.Address)
			case <-ctx.Done():
				errc <- ctx.Err()
			}
		}()
	}
	var errs []error
	for range brokers {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		obs.stop()
		return nil, errors.Join(errs...)
	}
	// Let the SUBSCRIBEs of the OnConnect handlers land before anything is measured.
	time.Sleep(200 * time.Millisecond)
	return obs, nil
}

func (obs *observers) line(broker, topic, line string) {
	now := time.Now()
	obs.mu.Lock()
	defer obs.mu.Unlock()
	switch {
	case strings.HasSuffix(topic, "/N"):
		if m := connectRE.FindStringSubmatch(line); m != nil {
			obs.connects = append(obs.connects, logEvent{broker: broker, t: now, client: m[2], from: m[1]})
		}
	case strings.HasSuffix(topic, "/subscribe"):
		if m := markerRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[3], 10, 64)
			obs.markers = append(obs.markers, logEvent{broker: broker, t: now, client: m[1], role: m[2], epoch: n})
		}
	}
}

// landed returns the broker on which client id connected, if an observer saw it.
func (obs *observers) landed(id string) string {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	for _, e := range obs.connects {
		if e.client == id {
			return e.broker
		}
	}
	return ""
}

// connections maps every connection number of role to the broker that logged its marker
// subscription, and the HAProxy host of the last connect line of that client on that broker
// before the marker.
func (obs *observers) connections(role, id string) map[int64]connInfo {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	out := map[int64]connInfo{}
	for _, m := range obs.markers {
		if m.role != role || m.client != id {
			continue
		}
		if _, seen := out[m.epoch]; seen {
			continue // a marker re-sent on a later connection: the first one is the right one
		}
		ci := connInfo{Conn: m.epoch, Broker: m.broker, UnixMs: m.t.UnixMilli()}
		for _, c := range obs.connects {
			if c.broker == m.broker && c.client == id && !c.t.After(m.t) {
				ci.Via = c.from
			}
		}
		out[m.epoch] = ci
	}
	return out
}

// connectionsAfter is connections without the connections up to skip.
func (obs *observers) connectionsAfter(role, id string, skip int64) map[int64]connInfo {
	m := obs.connections(role, id)
	for n := range m {
		if n <= skip {
			delete(m, n)
		}
	}
	return m
}

func (obs *observers) stop() {
	for _, c := range obs.clients {
		c.Disconnect(50)
	}
}

// ---- placement ----------------------------------------------------------------------------

// place finds a subscriber id and a publisher id that land on different brokers.
func place(ctx context.Context, obs *observers, o options, prefix string) (subID, subB, pubID, pubB string, err error) {
	const batch, maxTries = 6, 60
	try := func(id string) string {
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + o.vip).SetClientID(id).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			return ""
		}
		defer c.Disconnect(20)
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if b := obs.landed(id); b != "" {
				return b
			}
		}
		return ""
	}
	for k := 0; k < maxTries && (subID == "" || pubID == ""); k += batch {
		if ctx.Err() != nil {
			return "", "", "", "", ctx.Err()
		}
		ids := make([]string, batch)
		got := make([]string, batch)
		var wg sync.WaitGroup
		for i := range ids {
			ids[i] = fmt.Sprintf("%s-%d", prefix, k+i)
			wg.Add(1)
			go func(i int) { defer wg.Done(); got[i] = try(ids[i]) }(i)
		}
		wg.Wait()
		for i, b := range got {
			switch {
			case b == "":
			case subID == "" && (o.subBroker == "" || b == o.subBroker) && b != o.pubBroker && b != pubB:
				subID, subB = ids[i], b
			case pubID == "" && (o.pubBroker == "" || b == o.pubBroker) && b != o.subBroker && b != subB:
				pubID, pubB = ids[i], b
			}
		}
	}
	if subID == "" || pubID == "" {
		return "", "", "", "", fmt.Errorf("placement: after %d client ids through %s, no subscriber on %q and publisher on %q (is every broker up behind HAProxy?)",
			maxTries, o.vip, or(o.subBroker, "any"), or(o.pubBroker, "another"))
	}
	return subID, subB, pubID, pubB, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ---- the pair -----------------------------------------------------------------------------

// connCounter numbers a client's TCP connections: it is bumped when the connection is dialled,
// before CONNECT is sent, so anything read later belongs to this connection or a newer one.
type connCounter struct {
	n atomic.Int64
	// skip is the last connection of the placement attempts that landed on the wrong broker.
	skip atomic.Int64
}

func (c *connCounter) dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", uri.Host, o.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	c.n.Add(1)
	return conn, nil
}

type arrival struct {
	seq  uint64
	sent time.Time
	t    time.Time
	conn int64
	// visit is the broker of a return visit that collected it ("" for the live subscriber).
	visit string
}

type ack struct {
	t    time.Time
	conn int64
}

type recorder struct {
	mu       sync.Mutex
	sent     []time.Time // by seq; index 0 unused
	acks     map[uint64]ack
	arrivals []arrival
	warm     chan struct{}
	warmOnce sync.Once
	invalid  int
}

// record books one message the subscriber received on connection conn, or on a return visit
// to broker visit.
func (r *recorder) record(topic string, runID [8]byte, m mqtt.Message, conn int64, visit string) {
	now := time.Now()
	p := m.Payload()
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Topic() != topic || len(p) != payloadLen || string(p[16:24]) != string(runID[:]) {
		r.invalid++
		return
	}
	seq := binary.BigEndian.Uint64(p[0:8])
	if seq == 0 {
		r.warmOnce.Do(func() { close(r.warm) })
		return
	}
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(p[8:16])))
	r.arrivals = append(r.arrivals, arrival{seq: seq, sent: sent, t: now, conn: conn, visit: visit})
}

// brokersLeft returns the brokers the subscriber had a connection to before its last one,
// other than the last one's, in the order it first left them.
func brokersLeft(conns map[int64]connInfo) []string {
	sorted := sortedConns(conns)
	if len(sorted) == 0 {
		return nil
	}
	current := sorted[len(sorted)-1].Broker
	var out []string
	for _, c := range sorted {
		if c.Broker != "" && c.Broker != current && !slices.Contains(out, c.Broker) {
			out = append(out, c.Broker)
		}
	}
	return out
}

// returnVisit connects to the broker at addr directly as client id with its persistent session
// (clean session false, no new subscription), hands each message the broker delivers to
// handle, and returns how many came once none arrived for a second (at most 15 s).
func returnVisit(ctx context.Context, addr, id string, handle func(mqtt.Message)) (int, error) {
	var n atomic.Int64
	got := make(chan struct{}, 1)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			handle(m)
			n.Add(1)
			select {
			case got <- struct{}{}:
			default:
			}
		}))
	if tok := c.Connect(); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		return 0, fmt.Errorf("connect to %s: %v", addr, tok.Error())
	}
	defer c.Disconnect(50)
	quiet := time.NewTimer(time.Second)
	limit := time.After(15 * time.Second)
	for {
		select {
		case <-got:
			quiet.Reset(time.Second)
		case <-quiet.C:
			return int(n.Load()), nil
		case <-limit:
			return int(n.Load()), nil
		case <-ctx.Done():
			return int(n.Load()), ctx.Err()
		}
	}
}

func pairOptions(o options, id string, cc *connCounter) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().AddBroker("tcp://" + o.vip).SetClientID(id).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(o.retry).SetMaxReconnectInterval(o.retry).
		SetConnectTimeout(time.Second).SetKeepAlive(o.keepalive).SetPingTimeout(time.Second).
		SetWriteTimeout(2 * time.Second).SetCustomOpenConnectionFn(cc.dial)
}

func check(ctx context.Context, o options, brokers brokerList, stdin io.Reader, stderr io.Writer) (*report, error) {
	var runID [8]byte
	binary.BigEndian.PutUint64(runID[:], rand.Uint64())
	run := fmt.Sprintf("%x", runID[:4])
	prefix := o.idPrefix
	if prefix == "" {
		prefix = "lc-" + run
	}
	topic := "labcheck/" + run + "/seq"
	marker := func(role string, n int64) string { return fmt.Sprintf("labcheck/%s/conn/%s/%d", run, role, n) }
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "labcheck: %s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}

	obs, err := startObservers(ctx, brokers, run, o)
	if err != nil {
		return nil, err
	}
	defer obs.stop()

	subID, subB, pubID, pubB, err := place(ctx, obs, o, prefix)
	if err != nil {
		return nil, err
	}
	logf("subscriber %s lands on %s, publisher %s on %s", subID, subB, pubID, pubB)
	// Whatever happens, leave no session behind on any broker labcheck can reach.
	defer deleteSessions(brokers, []string{subID, pubID})

	rec := &recorder{sent: []time.Time{{}}, acks: map[uint64]ack{}, warm: make(chan struct{})}
	var subConns, pubConns connCounter

	onMessage := func(_ mqtt.Client, m mqtt.Message) { rec.record(topic, runID, m, subConns.n.Load(), "") }
	subOpts := pairOptions(o, subID, &subConns).SetDefaultPublishHandler(onMessage)
	subOpts.SetOnConnectHandler(func(c mqtt.Client) {
		// A session on a broker it never saw starts empty: subscribe on every connection.
		c.SubscribeMultiple(map[string]byte{topic: 1, marker("sub", subConns.n.Load()): 0}, onMessage)
	})
	pubOpts := pairOptions(o, pubID, &pubConns)
	pubOpts.SetOnConnectHandler(func(c mqtt.Client) { c.Subscribe(marker("pub", pubConns.n.Load()), 0, nil) })

	// connectOn connects until the client lands where placement said: always at once behind a
	// client-id hash; behind round robin (the study's HAProxy) only every so often.
	connectOn := func(role, id string, opts *mqtt.ClientOptions, cc *connCounter, want string) (mqtt.Client, error) {
		for attempt := 0; attempt < 12; attempt++ {
			c := mqtt.NewClient(opts)
			tok := c.Connect()
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				c.Disconnect(0)
				return nil, fmt.Errorf("%s %s: connect through %s: %v", role, id, o.vip, tok.Error())
			}
			n := cc.n.Load()
			got := ""
			for deadline := time.Now().Add(2 * time.Second); got == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				got = obs.connections(role, id)[n].Broker
			}
			if got == want {
				return c, nil
			}
			logf("%s %s landed on %q, not %s as when placed (the balancer does not keep ids on brokers): again", role, id, got, want)
			c.Disconnect(50)
			// Leave no session there: it would queue messages for a later reconnection.
			if addr := brokers.addr(got); addr != "" {
				deleteSessions(brokerList{{got, addr}}, []string{id})
			}
			cc.skip.Store(cc.n.Load())
		}
		return nil, fmt.Errorf("%s %s: never landed on %s through %s", role, id, want, o.vip)
	}
	sub, err := connectOn("sub", subID, subOpts, &subConns, subB)
	if err != nil {
		return nil, err
	}
	defer sub.Disconnect(100)
	pub, err := connectOn("pub", pubID, pubOpts, &pubConns, pubB)
	if err != nil {
		return nil, err
	}
	defer pub.Disconnect(100)

	payload := func(seq uint64, t time.Time) []byte {
		b := make([]byte, payloadLen)
		binary.BigEndian.PutUint64(b[0:8], seq)
		binary.BigEndian.PutUint64(b[8:16], uint64(t.UnixNano()))
		copy(b[16:24], runID[:])
		return b
	}

	// Warm-up: sequence 0 until the subscriber gets one.
	warmStart := time.Now()
	warmDeadline := time.After(o.warmup)
	tick := time.NewTicker(100 * time.Millisecond)
warm:
	for {
		pub.Publish(topic, 1, false, payload(0, time.Now()))
		select {
		case <-rec.warm:
			break warm
		case <-tick.C:
		case <-warmDeadline:
			tick.Stop()
			return nil, fmt.Errorf("warm-up: the subscriber on %s received nothing from the publisher on %s within %s (do the agents relay?)", subB, pubB, o.warmup)
		case <-ctx.Done():
			tick.Stop()
			return nil, ctx.Err()
		}
	}
	tick.Stop()
	warmup := time.Since(warmStart)

	// Marks from stdin, stamped when read.
	var marksMu sync.Mutex
	var marks []mark
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			label := strings.TrimSpace(sc.Text())
			if label == "" {
				continue
			}
			marksMu.Lock()
			marks = append(marks, mark{Label: label, t: time.Now()})
			marksMu.Unlock()
		}
	}()

	interval := time.Duration(float64(time.Second) / o.rate)
	start := time.Now()
	logf("ready: publishing %.0f msg/s for %s (warm-up took %s)", o.rate, o.duration, warmup.Round(time.Millisecond))
	var pending sync.WaitGroup
	var unacked atomic.Int64
	end := start.Add(o.duration)
	for seq := uint64(1); ; seq++ {
		next := start.Add(time.Duration(seq-1) * interval)
		if !next.Before(end) || ctx.Err() != nil {
			break
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		now := time.Now()
		rec.mu.Lock()
		rec.sent = append(rec.sent, now)
		rec.mu.Unlock()
		tok := pub.Publish(topic, 1, false, payload(seq, now))
		pending.Add(1)
		unacked.Add(1)
		go func(seq uint64) {
			defer pending.Done()
			select {
			case <-tok.Done():
			case <-ctx.Done():
				return
			}
			if tok.Error() != nil {
				return
			}
			conn := pubConns.n.Load()
			unacked.Add(-1)
			rec.mu.Lock()
			rec.acks[seq] = ack{t: time.Now(), conn: conn}
			rec.mu.Unlock()
		}(seq)
	}
	stopPub := time.Now()
	logf("published %d messages; draining (at most %s)", len(rec.sent)-1, o.drain)

	// Drain: until every acknowledged message arrived and nothing is pending, or --drain.
	drainEnd := time.Now().Add(o.drain)
	for time.Now().Before(drainEnd) && ctx.Err() == nil {
		if unacked.Load() == 0 && rec.allAckedReceived() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Return visits: the subscriber's persistent session on each broker it left holds what was
	// routed there after it left (see the package doc). A real client gets those messages when it
	// connects to that broker again; labcheck goes there directly and collects them.
	subConnsNow := obs.connectionsAfter("sub", subID, subConns.skip.Load())
	for _, b := range brokersLeft(subConnsNow) {
		n, err := returnVisit(ctx, brokers.addr(b), subID, func(m mqtt.Message) { rec.record(topic, runID, m, 0, b) })
		if err != nil {
			logf("return visit to %s: %v", b, err)
			continue
		}
		logf("return visit to %s: %d messages were waiting in the session left there", b, n)
	}
	finished := time.Now()

	marksMu.Lock()
	ms := append([]mark(nil), marks...)
	marksMu.Unlock()

	rec.mu.Lock()
	in := analysisInput{
		sent:      append([]time.Time(nil), rec.sent...),
		acks:      make(map[uint64]ack, len(rec.acks)),
		arrivals:  append([]arrival(nil), rec.arrivals...),
		invalid:   rec.invalid,
		subConns:  obs.connectionsAfter("sub", subID, subConns.skip.Load()),
		pubConns:  obs.connectionsAfter("pub", pubID, pubConns.skip.Load()),
		dead:      o.dead,
		interval:  interval,
		gap:       o.gap,
		marks:     ms,
		start:     start,
		stopPub:   stopPub,
		finished:  finished,
		warmup:    warmup,
		subBroker: subB,
		pubBroker: pubB,
		subID:     subID,
		pubID:     pubID,
		run:       run,
		rate:      o.rate,
	}
	for k, v := range rec.acks {
		in.acks[k] = v
	}
	rec.mu.Unlock()
	rep := analyse(in)
	logf("sent %d acked %d received %d lost %d duplicates %d dead letters %d stranded %d (waiting in left sessions %d)",
		rep.Sent, rep.Acked, rep.Received, rep.Lost, rep.Duplicates, rep.DeadLetters, rep.Stranded, rep.WaitingInLeftSessions)
	return rep, nil
}

func (r *recorder) allAckedReceived() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := make(map[uint64]bool, len(r.arrivals))
	for _, a := range r.arrivals {
		got[a.seq] = true
	}
	for seq := range r.acks {
		if !got[seq] {
			return false
		}
	}
	return true
}

// deleteSessions connects to every broker directly with each id and a clean session, which
// discards the persistent session labcheck left there [MQTT-3.1.2-6].
func deleteSessions(brokers brokerList, ids []string) {
	var wg sync.WaitGroup
	for _, b := range brokers {
		for _, id := range ids {
			wg.Add(1)
			go func(addr, id string) {
				defer wg.Done()
				c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
					SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(time.Second))
				if tok := c.Connect(); tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
					c.Disconnect(20)
				}
			}(b.Address, id)
		}
	}
	wg.Wait()
}

// ---- report -------------------------------------------------------------------------------

type mark struct {
	Label string `json:"label"`
	t     time.Time
	// UnixMs is when labcheck read the mark.
	UnixMs int64 `json:"unix_ms"`
	// LongestGapMs is the outage that followed the mark: the longest reception gap that began
	// after it (less one gap threshold: the mark may be read just after the fault) and before
	// the next mark. 0: no gap longer than the threshold.
	LongestGapMs int64 `json:"longest_gap_ms"`
	// RecoverMs is when the subscriber received again, counted from the mark: the end of that
	// outage, or without one the first arrival of a message published after the mark
	// (-1: nothing arrived).
	RecoverMs int64 `json:"recover_ms"`
}

type connInfo struct {
	Conn   int64  `json:"conn"`
	Broker string `json:"broker"`
	// Via is the HAProxy host the connection came through (source address in the broker's log).
	Via    string `json:"via,omitempty"`
	UnixMs int64  `json:"unix_ms"`
}

type gap struct {
	StartUnixMs int64 `json:"start_unix_ms"`
	EndUnixMs   int64 `json:"end_unix_ms"`
	Ms          int64 `json:"ms"`
}

type report struct {
	Run         string  `json:"run"`
	SubID       string  `json:"sub_id"`
	PubID       string  `json:"pub_id"`
	SubBroker   string  `json:"sub_broker"`
	PubBroker   string  `json:"pub_broker"`
	Rate        float64 `json:"rate"`
	WarmupMs    int64   `json:"warmup_ms"`
	StartUnixMs int64   `json:"start_unix_ms"`
	StopUnixMs  int64   `json:"stop_unix_ms"`
	EndUnixMs   int64   `json:"end_unix_ms"`
	// Sent is how many messages were published, Acked how many got a PUBACK.
	Sent  int `json:"sent"`
	Acked int `json:"acked"`
	// Received counts distinct sequence numbers, Deliveries every arrival.
	Received   int `json:"received"`
	Deliveries int `json:"deliveries"`
	Duplicates int `json:"duplicates"`
	// ReceivedUnacked arrived without a PUBACK reaching the publisher (harmless: QoS 1 is at
	// least once).
	ReceivedUnacked int `json:"received_unacked"`
	// WaitingInLeftSessions counts the messages the return visits found in the persistent
	// sessions the subscriber had left on other brokers (not in Deliveries); Stranded are the
	// acknowledged ones among them that the subscriber had not received: routed only to a
	// session it had left, delivered when it came back. Neither is lost.
	WaitingInLeftSessions int            `json:"waiting_in_left_sessions"`
	Stranded              int            `json:"stranded"`
	StrandedOn            map[string]int `json:"stranded_on,omitempty"`
	StrandedSeqs          []uint64       `json:"stranded_seqs,omitempty"`
	// Lost were acknowledged and never received, not even from a session the subscriber left,
	// and are no dead letters.
	Lost     int      `json:"lost"`
	LostSeqs []uint64 `json:"lost_seqs,omitempty"`
	// DeadLetters were acknowledged, never received, and routed only to the --dead broker.
	DeadBroker     string   `json:"dead_broker,omitempty"`
	DeadLetters    int      `json:"dead_letters"`
	DeadLetterSeqs []uint64 `json:"dead_letter_seqs,omitempty"`
	// DeadPubSide were accepted by the dead broker itself, DeadSubSide routed to the
	// subscriber's session on it: DeadSubQueued published before the first mark (the fault),
	// so possibly queued inside the broker when it died, DeadSubNoSession published after it,
	// while the subscriber had no live session anywhere (buffered for the dead broker by the
	// publisher's agent, or published before the new subscription took effect).
	DeadPubSide      int        `json:"dead_pub_side"`
	DeadSubSide      int        `json:"dead_sub_side"`
	DeadSubQueued    int        `json:"dead_sub_queued"`
	DeadSubNoSession int        `json:"dead_sub_no_session"`
	Invalid          int        `json:"invalid"`
	GapThresholdMs   int64      `json:"gap_threshold_ms"`
	Gaps             []gap      `json:"gaps"`
	Marks            []mark     `json:"marks"`
	SubConnections   []connInfo `json:"sub_connections"`
	PubConnections   []connInfo `json:"pub_connections"`
	LatencyP50Ms     float64    `json:"latency_p50_ms"`
	LatencyP99Ms     float64    `json:"latency_p99_ms"`
	LatencyMaxMs     float64    `json:"latency_max_ms"`
}

type analysisInput struct {
	sent                     []time.Time
	acks                     map[uint64]ack
	arrivals                 []arrival
	invalid                  int
	subConns, pubConns       map[int64]connInfo
	dead                     string
	interval, gap            time.Duration
	marks                    []mark
	start, stopPub, finished time.Time
	warmup                   time.Duration
	subBroker, pubBroker     string
	subID, pubID, run        string
	rate                     float64
}

// maxSeqs bounds the sequence lists in the report.
const maxSeqs = 50

func analyse(in analysisInput) *report {
	r := &report{
		Run: in.run, SubID: in.subID, PubID: in.pubID, SubBroker: in.subBroker, PubBroker: in.pubBroker,
		Rate: in.rate, WarmupMs: in.warmup.Milliseconds(), StartUnixMs: in.start.UnixMilli(),
		StopUnixMs: in.stopPub.UnixMilli(), EndUnixMs: in.finished.UnixMilli(),
		Sent: len(in.sent) - 1, Acked: len(in.acks),
		Invalid: in.invalid, DeadBroker: in.dead, Gaps: []gap{}, Marks: []mark{},
	}
	sort.SliceStable(in.arrivals, func(i, j int) bool { return in.arrivals[i].t.Before(in.arrivals[j].t) })
	// Messages collected on return visits are counted apart: they never reached the live
	// subscriber during the run.
	var live []arrival
	waiting := map[uint64]string{}
	for _, a := range in.arrivals {
		if a.visit == "" {
			live = append(live, a)
			continue
		}
		r.WaitingInLeftSessions++
		if _, seen := waiting[a.seq]; !seen {
			waiting[a.seq] = a.visit
		}
	}
	in.arrivals = live
	r.Deliveries = len(live)
	first := map[uint64]arrival{}
	var firsts []arrival
	var lat []float64
	for _, a := range in.arrivals {
		if _, dup := first[a.seq]; dup {
			r.Duplicates++
			continue
		}
		first[a.seq] = a
		firsts = append(firsts, a)
		lat = append(lat, float64(a.t.Sub(a.sent).Microseconds())/1000)
		if _, acked := in.acks[a.seq]; !acked {
			r.ReceivedUnacked++
		}
	}
	r.Received = len(first)
	if len(lat) > 0 {
		sort.Float64s(lat)
		r.LatencyP50Ms = lat[len(lat)/2]
		r.LatencyP99Ms = lat[len(lat)*99/100]
		r.LatencyMaxMs = lat[len(lat)-1]
	}

	// Reception gaps between consecutive first arrivals, while messages were being sent: a
	// message that arrives late after the last send ends no outage.
	threshold := in.gap
	if threshold <= 0 {
		threshold = 3 * in.interval
	}
	r.GapThresholdMs = threshold.Milliseconds()
	lastSent := in.sent[len(in.sent)-1]
	for i := 1; i < len(firsts); i++ {
		if d := firsts[i].t.Sub(firsts[i-1].t); d > threshold && firsts[i-1].t.Before(lastSent) {
			r.Gaps = append(r.Gaps, gap{firsts[i-1].t.UnixMilli(), firsts[i].t.UnixMilli(), d.Milliseconds()})
		}
	}

	// Marks: the outage that followed each, and when the subscriber received again.
	sort.SliceStable(in.marks, func(i, j int) bool { return in.marks[i].t.Before(in.marks[j].t) })
	for i, m := range in.marks {
		m.UnixMs = m.t.UnixMilli()
		from := m.t.Add(-threshold).UnixMilli()
		limit := int64(1<<62 - 1)
		if i+1 < len(in.marks) {
			limit = in.marks[i+1].t.UnixMilli()
		}
		var outage *gap
		for j, g := range r.Gaps {
			if g.StartUnixMs >= from && g.StartUnixMs < limit && (outage == nil || g.Ms > outage.Ms) {
				outage = &r.Gaps[j]
			}
		}
		m.RecoverMs = -1
		if outage != nil {
			m.LongestGapMs = outage.Ms
			m.RecoverMs = max(0, outage.EndUnixMs-m.UnixMs)
		} else {
			for _, a := range firsts {
				if !a.sent.Before(m.t) && !a.t.Before(m.t) {
					m.RecoverMs = a.t.Sub(m.t).Milliseconds()
					break
				}
			}
		}
		r.Marks = append(r.Marks, m)
	}

	r.SubConnections = sortedConns(in.subConns)
	r.PubConnections = sortedConns(in.pubConns)

	// Dead letters and losses.
	deadSub := subSideWindows(in.arrivals, in.subConns, in.dead)
	var acked []uint64
	for seq := range in.acks {
		acked = append(acked, seq)
	}
	sort.Slice(acked, func(i, j int) bool { return acked[i] < acked[j] })
	for _, seq := range acked {
		if _, got := first[seq]; got {
			continue
		}
		if b, ok := waiting[seq]; ok {
			r.Stranded++
			if r.StrandedOn == nil {
				r.StrandedOn = map[string]int{}
			}
			r.StrandedOn[b]++
			if len(r.StrandedSeqs) < maxSeqs {
				r.StrandedSeqs = append(r.StrandedSeqs, seq)
			}
			continue
		}
		a := in.acks[seq]
		pubSide := in.dead != "" && in.pubConns[a.conn].Broker == in.dead
		subSide := false
		for _, w := range deadSub {
			if seq > w[0] && seq < w[1] {
				subSide = true
			}
		}
		switch {
		case pubSide || subSide:
			r.DeadLetters++
			switch {
			case pubSide:
				r.DeadPubSide++
			case len(in.marks) > 0 && !in.sent[seq].Before(in.marks[0].t):
				r.DeadSubSide++
				r.DeadSubNoSession++
			default:
				r.DeadSubSide++
				r.DeadSubQueued++
			}
			if len(r.DeadLetterSeqs) < maxSeqs {
				r.DeadLetterSeqs = append(r.DeadLetterSeqs, seq)
			}
		default:
			r.Lost++
			if len(r.LostSeqs) < maxSeqs {
				r.LostSeqs = append(r.LostSeqs, seq)
			}
		}
	}
	return r
}

func sortedConns(m map[int64]connInfo) []connInfo {
	out := []connInfo{}
	for _, c := range m {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Conn < out[j].Conn })
	return out
}

// subSideWindows returns, for each time the subscriber left the dead broker for another one,
// the open interval (L, F) of sequence numbers routed only to its session on the dead broker:
// L the highest sequence received up to its last connection to the dead broker, F the lowest
// received on the connections that followed, up to its next connection to the dead broker.
// Connections whose broker is unknown count as not the dead broker.
func subSideWindows(arrivals []arrival, conns map[int64]connInfo, dead string) [][2]uint64 {
	if dead == "" {
		return nil
	}
	var maxConn int64
	for _, a := range arrivals {
		maxConn = max(maxConn, a.conn)
	}
	for c := range conns {
		maxConn = max(maxConn, c)
	}
	onDead := func(c int64) bool { return conns[c].Broker == dead }
	var out [][2]uint64
	for c := int64(1); c <= maxConn; c++ {
		// c is the last connection of a run of connections to the dead broker?
		if !onDead(c) || onDead(c+1) {
			continue
		}
		next := c + 1
		for next <= maxConn && !onDead(next) {
			next++
		}
		var lo uint64
		hi := uint64(1<<63 - 1)
		found := false
		for _, a := range arrivals {
			switch {
			case a.conn <= c:
				lo = max(lo, a.seq)
			case a.conn < next:
				hi = min(hi, a.seq)
				found = true
			}
		}
		if found {
			out = append(out, [2]uint64{lo, hi})
		}
	}
	return out
}

// ---- hastat -------------------------------------------------------------------------------

// runHAStat prints "backend server status" for each server of an HAProxy stats socket.
func runHAStat(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("hastat", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "HAProxy stats socket")
	if err := fs.Parse(args); err != nil || *socket == "" {
		fmt.Fprintln(stderr, "usage: labcheck hastat --socket PATH")
		return exitUsage
	}
	c, err := net.DialTimeout("unix", *socket, time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "labcheck: hastat: %v\n", err)
		return exitFail
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		fmt.Fprintf(stderr, "labcheck: hastat: %v\n", err)
		return exitFail
	}
	data, err := io.ReadAll(c)
	if err != nil && len(data) == 0 {
		fmt.Fprintf(stderr, "labcheck: hastat: %v\n", err)
		return exitFail
	}
	var cols []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "# ") {
			cols = strings.Split(strings.TrimPrefix(line, "# "), ",")
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 2 || cols == nil || f[1] == "FRONTEND" || f[1] == "BACKEND" {
			continue
		}
		status := ""
		for i, name := range cols {
			if name == "status" && i < len(f) {
				status = f[i]
			}
		}
		fmt.Fprintf(stdout, "%s %s %s\n", f[0], f[1], status)
	}
	return exitOK
}
