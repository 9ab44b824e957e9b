// Command mqbench is a bounded MQTT load generator that measures END-TO-END delivery.
//
// It connects --subscribers subscribers (round-robin over --sub-brokers), waits for every SUBACK,
// then starts --publishers publishers (round-robin over --pub-brokers) that each publish --count
// messages of --size bytes to --topic. Every payload carries the publisher index, a sequence
// number and the send time, so the subscribers measure what the broker(s) actually delivered:
// deliveries per second, latency (payload timestamp to arrival), loss and duplicates per
// (publisher, sequence, subscriber). The run always ends by itself: after the last publish it waits
// at most --drain for stragglers (less once every expected message arrived), and never longer than
// --timeout in all.
//
// Payload layout (big endian): bytes 0-7 publisher index, 8-15 sequence number, 16-23 send time
// (unix nanoseconds), 24-31 a random run id when --size >= 32 (messages of another run on the same
// topic are then counted as invalid, not as duplicates), then zero padding up to --size.
//
// With --phase-file a caller can read counters (bytes, CPU) between the phases: mqbench writes
// "ready" to the file once subscribed, settled and connected and publishes only after the caller
// removed it; after the drain it writes "done" and disconnects only after the file is removed
// again. Both waits are bounded by --timeout (scripts/bench-reference.sh uses this).
//
// Exit status: 0 when the run completed (loss is a measurement, not a failure), 1 for setup errors
// (a broker cannot be reached or refuses a subscription), 2 for usage errors.
//
// The scenario of the reference study (chapter 5), on two brokers A and B:
//
//	mqbench --sub-brokers A,B --subscribers 500 --sub-topic-pattern 'test_1/%d' \
//	        --pub-brokers A,B --publishers 20 --count 3000 --size 100 --qos 1 --topic test_1/1
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
)

// headerLen is the part of the payload mqbench decodes: publisher, sequence, send time.
const headerLen = 24

// runIDLen is the run id that follows the header when the payload has room for it.
const runIDLen = 8

// maxBits bounds publishers*count: the size of one subscriber's duplicate bitmap.
const maxBits = 1 << 31

type config struct {
	pubBrokers      []string // host:port
	subBrokers      []string // host:port
	publishers      int
	count           int
	size            int
	qos             int
	topic           string
	rate            float64
	inflight        int
	subscribers     int
	subTopicPattern string
	subTopics       []string
	subQoS          int
	subPersistent   bool // subscribers keep a session (clean session false), removed at the end
	timeout         time.Duration
	drain           time.Duration
	settle          time.Duration
	phaseFile       string // handshake between the phases (--phase-file)
	clientPrefix    string
	json            bool
	quiet           bool
	expectPerSub    int // -1: computed from the filters
}

// filterFor is the topic filter subscriber i subscribes to.
func (c *config) filterFor(i int) string {
	if len(c.subTopics) > 0 {
		return c.subTopics[i%len(c.subTopics)]
	}
	if c.subTopicPattern == "" {
		return c.topic
	}
	if strings.Contains(c.subTopicPattern, "%") {
		return fmt.Sprintf(c.subTopicPattern, i)
	}
	return c.subTopicPattern
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, code := parseArgs(args, stdout, stderr)
	if cfg == nil {
		return code
	}
	res, err := bench(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mqbench: %v\n", err)
		return 1
	}
	if res.TimedOut {
		fmt.Fprintf(stderr, "mqbench: the run reached --timeout %s before it finished; the figures cover what happened until then\n", cfg.timeout)
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "mqbench: %v\n", err)
			return 1
		}
		return 0
	}
	printTable(stdout, res)
	return 0
}

// parseArgs returns the configuration, or nil and the exit status (0 for --help, 2 for usage).
func parseArgs(args []string, stdout, stderr io.Writer) (*config, int) {
	fs := pflag.NewFlagSet("mqbench", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	var (
		pubBrokers = fs.String("pub-brokers", "127.0.0.1:1883", "publishers connect round-robin to these brokers (host:port[,host:port...])")
		subBrokers = fs.String("sub-brokers", "127.0.0.1:1883", "subscribers connect round-robin to these brokers (host:port[,host:port...])")
		cfg        config
	)
	fs.IntVar(&cfg.publishers, "publishers", 20, "number of publishers")
	fs.IntVar(&cfg.count, "count", 3000, "messages per publisher")
	fs.IntVar(&cfg.size, "size", 100, fmt.Sprintf("payload bytes (at least %d)", headerLen))
	fs.IntVar(&cfg.qos, "qos", 1, "publish QoS 0, 1 or 2")
	fs.StringVar(&cfg.topic, "topic", "test_1/1", "publish topic")
	fs.Float64Var(&cfg.rate, "rate", 0, "messages per second per publisher (0 = as fast as possible)")
	fs.IntVar(&cfg.inflight, "inflight", 16, "max unacknowledged publishes per publisher")
	fs.IntVar(&cfg.subscribers, "subscribers", 1, "number of subscribers")
	fs.StringVar(&cfg.subTopicPattern, "sub-topic-pattern", "", "filter of subscriber i: fmt.Sprintf(pattern, i), e.g. test_1/%d (default: the publish topic)")
	fs.StringSliceVar(&cfg.subTopics, "sub-topics", nil, "filters of the subscribers, subscriber i gets the (i mod n)th (instead of --sub-topic-pattern)")
	fs.IntVar(&cfg.subQoS, "sub-qos", -1, "subscription QoS 0, 1 or 2; -1 = same as --qos")
	fs.BoolVar(&cfg.subPersistent, "sub-persistent", false, "subscribers connect with clean session false (their sessions are removed at the end with a clean connect)")
	fs.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "overall bound of the run, setup included")
	fs.DurationVar(&cfg.settle, "settle", 0, "wait after every subscription is acknowledged before publishing (lets a cluster learn the subscriptions)")
	fs.DurationVar(&cfg.drain, "drain", 2*time.Second, "wait after the last publish for stragglers (ends early once every expected message arrived)")
	fs.StringVar(&cfg.phaseFile, "phase-file", "", "handshake with a caller that reads counters between phases: when subscribed, settled and connected write \"ready\" to this file and publish once it is removed; after the drain write \"done\" and disconnect once it is removed (bounded by --timeout)")
	fs.StringVar(&cfg.clientPrefix, "client-prefix", "mqbench-", "client id prefix")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object to stdout")
	fs.BoolVarP(&cfg.quiet, "quiet", "q", false, "no progress lines on stderr")
	fs.IntVar(&cfg.expectPerSub, "expect-per-sub", -1, "messages each subscriber should get; -1 = publishers*count for filters matching --topic, 0 for the others")
	help := fs.BoolP("help", "h", false, "show this help")

	usage := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: mqbench [flags]\n\nA bounded MQTT load generator: end-to-end delivery rate, latency, loss and duplicates.\n\nFlags:\n%s", fs.FlagUsages())
	}
	fail := func(format string, a ...any) (*config, int) {
		fmt.Fprintf(stderr, "mqbench: "+format+"\n", a...)
		fmt.Fprintf(stderr, "Run 'mqbench --help' for usage.\n")
		return nil, 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			usage(stdout)
			return nil, 0
		}
		return fail("%v", err)
	}
	if *help {
		usage(stdout)
		return nil, 0
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments: %q", fs.Args())
	}
	var err error
	if cfg.pubBrokers, err = parseBrokers(*pubBrokers); err != nil {
		return fail("--pub-brokers: %v", err)
	}
	if cfg.subBrokers, err = parseBrokers(*subBrokers); err != nil {
		return fail("--sub-brokers: %v", err)
	}
	if cfg.subQoS == -1 {
		cfg.subQoS = cfg.qos
	}
	switch {
	case cfg.publishers < 1:
		return fail("--publishers must be at least 1")
	case cfg.count < 1:
		return fail("--count must be at least 1")
	case int64(cfg.publishers)*int64(cfg.count) > maxBits:
		return fail("--publishers x --count must be at most %d", int64(maxBits))
	case cfg.size < headerLen:
		return fail("--size must be at least %d (the header: publisher, sequence, send time)", headerLen)
	case cfg.size > 256<<20-1024:
		return fail("--size is too large for MQTT")
	case cfg.qos < 0 || cfg.qos > 2:
		return fail("--qos must be 0, 1 or 2")
	case cfg.subQoS < 0 || cfg.subQoS > 2:
		return fail("--sub-qos must be 0, 1 or 2")
	case cfg.rate < 0:
		return fail("--rate must not be negative")
	case cfg.inflight < 1:
		return fail("--inflight must be at least 1")
	case cfg.subscribers < 0:
		return fail("--subscribers must not be negative")
	case cfg.timeout <= 0:
		return fail("--timeout must be positive")
	case cfg.drain < 0:
		return fail("--drain must not be negative")
	case cfg.expectPerSub < -1:
		return fail("--expect-per-sub must not be negative")
	case len(cfg.subTopics) > 0 && cfg.subTopicPattern != "":
		return fail("--sub-topics and --sub-topic-pattern exclude each other")
	case fs.Changed("sub-topics") && len(cfg.subTopics) == 0:
		return fail("--sub-topics: no filter given")
	}
	if err := validTopic(cfg.topic); err != nil {
		return fail("--topic: %v", err)
	}
	for _, f := range cfg.subTopics {
		if err := validFilter(f); err != nil {
			return fail("--sub-topics: %v", err)
		}
	}
	for i := 0; i < cfg.subscribers; i++ {
		f := cfg.filterFor(i)
		if strings.Contains(f, "%!") {
			return fail("--sub-topic-pattern %q: bad format (use one %%d): %q", cfg.subTopicPattern, f)
		}
		if err := validFilter(f); err != nil {
			return fail("--sub-topic-pattern: subscriber %d: %v", i, err)
		}
	}
	return &cfg, 0
}

// parseBrokers splits a comma list of host:port (a tcp:// or mqtt:// prefix is accepted, a missing
// port is 1883).
func parseBrokers(s string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(s, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		b = strings.TrimPrefix(strings.TrimPrefix(b, "tcp://"), "mqtt://")
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			if strings.Contains(err.Error(), "missing port") {
				host, port = b, "1883"
			} else {
				return nil, fmt.Errorf("%q: %v", b, err)
			}
		}
		if host == "" {
			return nil, fmt.Errorf("%q: no host", b)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q: bad port", b)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	if len(out) == 0 {
		return nil, errors.New("no broker given")
	}
	return out, nil
}

// printTable writes the human-readable report.
func printTable(w io.Writer, r *result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "run\t%d publishers x %d msgs x %d B, QoS %d -> %d subscribers (sub QoS %d, %d matching)\n",
		r.Publishers, r.Count, r.Size, r.QoS, r.Subscribers, r.SubQoS, r.MatchingSubscribers)
	fmt.Fprintf(tw, "brokers\tpub %s; sub %s\n", strings.Join(r.PubBrokers, ","), strings.Join(r.SubBrokers, ","))
	fmt.Fprintf(tw, "publish\t%d sent, %d completed, %d errors in %.3f s = %.0f msg/s\n",
		r.Published, r.Acked, r.PublishErrors, r.PublishDurationS, r.PublishRate)
	fmt.Fprintf(tw, "end to end\t%d deliveries in %.3f s = %.0f deliveries/s\n", r.Received, r.E2EDurationS, r.DeliveryRate)
	fmt.Fprintf(tw, "deliveries\texpected %d, received %d (distinct %d), lost %d, duplicates %d, unexpected %d, invalid %d\n",
		r.Expected, r.Received, r.Distinct, r.Lost, r.Duplicates, r.Unexpected, r.Invalid)
	fmt.Fprintf(tw, "latency ms\tp50 %.3f  p99 %.3f  max %.3f  mean %.3f  (%d samples)\n",
		r.LatencyP50Ms, r.LatencyP99Ms, r.LatencyMaxMs, r.LatencyMeanMs, r.LatencySamples)
	fmt.Fprintf(tw, "per subscriber\tmin %d  max %d (received, over subscribers expecting messages)\n", r.PerSubMin, r.PerSubMax)
	status := "complete"
	if !r.Complete {
		status = "INCOMPLETE: not every expected message arrived"
	}
	if r.TimedOut {
		status += " (timed out)"
	}
	if r.ConnectionsLost > 0 {
		status += fmt.Sprintf(" (%d connections lost)", r.ConnectionsLost)
	}
	fmt.Fprintf(tw, "status\t%s, wall %.3f s\n", status, r.WallS)
	tw.Flush()
	if len(r.Subs) > 0 && len(r.Subs) <= 10 {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "sub\tbroker\tfilter\texpected\treceived\tdistinct\tlost\tdup\t\n")
		for _, s := range r.Subs {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t\n", s.Index, s.Broker, s.Filter,
				s.Expected, s.Received, s.Distinct, s.Lost, s.Duplicates)
		}
		tw.Flush()
	}
}
