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
//     topic on every connection, since a session on a new broker starts empty. With
//     --subscribe once it subscribes to the data topic once, on the connection placement
//     accepted, and never again, as many IoT apps do: after a move it receives only what the
//     cluster's sessions give it (issue 13). Its marker subscriptions go on (QoS 0, a topic
//     nobody publishes to): they change nothing it receives.
//  4. Warm-up. The publisher sends sequence 0 until the subscriber gets one (the subscription
//     has reached the publisher's broker through the agents), then prints a "ready:" line on
//     stderr and publishes sequence 1, 2, ... at --rate for --duration. Payload (big endian):
//     sequence (8 bytes), send time in unix nanoseconds (8), run id (8).
//  5. Marks. Every line read on stdin is a mark (a fault, a heal) stamped with the time it was
//     read; labcheck reports how long after each mark the subscriber received again, and per
//     mark the duplicates that arrived after it and what became of the messages published
//     after it (received, lost, stranded). A mark whose first word is "reconnect-sub" also
//     closes the subscriber's TCP connection, so that it reconnects through the VIP (the
//     client-id hash sends it back to its own broker once that is up again: its return there).
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
// Every other acknowledged message that never arrives is lost. "Lost on survivors" is stricter:
// every acknowledged message never received whose PUBACK came from a broker other than --dead,
// subscriber-side dead letters included (a cluster whose sessions follow their client delivers
// those too). With --dup-bound-msgs and --dup-bound-age the report says whether every mark kept
// the duplicate bound (dup_bound_ok), and which did not. The attribution errs towards
// "lost": a PUBACK or an arrival is credited to the connection current when labcheck handled it,
// which is never earlier than the one that carried it.
//
// `labcheck sameid --config FILE --first b1 --second b2` connects one client id to b1 and then
// to b2 directly and reports whether the older connection was closed, as one broker closes it
// (--first and --second the same broker: the lone-broker oracle).
//
// `labcheck hastat --socket PATH` prints each server's state from an HAProxy stats socket (the
// lab uses it to wait until every broker is UP behind every HAProxy).
//
// Files: main.go (flags), brokers.go (the cluster file), observers.go (step 1), placement.go (2),
// pair.go (3 to 6, and check, which runs every step), recorder.go (what was sent, acknowledged
// and received), sessions.go (7), report.go (the JSON report and its analysis), perfault.go
// (per mark figures, the duplicate bound), sameid.go (`labcheck sameid`), hastat.go.
//
// Exit status: 0 when the run completed (loss is a measurement), 1 for setup errors, 2 for usage.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

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
	subscribe  string
	dupMsgs    int
	dupAge     time.Duration
}

// The subscriber's modes (--subscribe).
const (
	subscribeEvery = "every" // subscribes on every connection (a session on a new broker starts empty)
	subscribeOnce  = "once"  // subscribes on its first connection only, as many IoT apps do
)

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "hastat" {
		return runHAStat(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "sameid" {
		return runSameID(args[1:], stdout, stderr)
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
	fs.StringVar(&o.subscribe, "subscribe", subscribeEvery, "the subscriber subscribes on \"every\" connection, or \"once\" (its first) and relies on its persistent session after that")
	fs.IntVar(&o.dupMsgs, "dup-bound-msgs", -1, "duplicate bound: at most this many duplicates after each mark (-1: not checked; the report says whether it held)")
	fs.DurationVar(&o.dupAge, "dup-bound-age", 0, "duplicate bound: no duplicate of a message first received longer than this before the mark (0: not checked)")
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
	if o.subscribe != subscribeEvery && o.subscribe != subscribeOnce {
		fmt.Fprintf(stderr, "labcheck: --subscribe %q: want %q or %q\n", o.subscribe, subscribeEvery, subscribeOnce)
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
