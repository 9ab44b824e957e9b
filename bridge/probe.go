// Probe: prove with the broker's own answers that it gives the agent what it needs (log lines,
// $SYS statistics, the cluster's topics), and name what is wrong when it does not.

package bridge

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// ProbeOptions say how to reach the broker to probe.
type ProbeOptions struct {
	Address            string // host:port
	TLS                *tls.Config
	ClientID           string
	Username, Password string
	Timeout            time.Duration
	Topics             Topics
	// ProveWildcard also publishes one message on an ordinary topic (ProbeTopicPrefix + a
	// random id) and expects it back, proving the ACL lets the account read and write ordinary
	// topics as the agent does through '#'. Every '#' subscriber of the broker sees that
	// message, so only the operator's `check` asks for it.
	ProveWildcard bool
}

// ProbeTopicPrefix starts the ordinary topic of the ProveWildcard message.
const ProbeTopicPrefix = "mosquitto-ha/check/"

// Probe connection errors, wrapped with the detail.
var (
	// ErrProbeRefused: the broker answered CONNECT with "not authorised" or "bad user name or
	// password": a wrong password or unknown user, or anonymous clients refused.
	ErrProbeRefused = errors.New("bridge: the broker refused the probe's credentials")
	// ErrProbeNoListener: the connection was refused: nothing listens at the address.
	ErrProbeNoListener = errors.New("bridge: nothing listens at the broker's address")
)

// ProbeResult is what a probe learned about a broker.
type ProbeResult struct {
	// Missing lists the log_type values whose lines the broker did not publish to
	// $SYS/broker/log: any of "subscribe", "unsubscribe", "notice", "error", or "topic" when
	// nothing at all arrived (log_dest topic is missing, or NoSys).
	Missing []string
	// AnonymousForward is true when a client without credentials could publish to the
	// forward prefix: anyone can inject relayed messages.
	AnonymousForward bool
	// NoSys is true when nothing at all arrived on $SYS: neither the probe's own log lines nor
	// the broker's $SYS/broker/uptime. The ACL denies $SYS/# to the probe's account (a broker
	// that lacks both log_dest topic and a sys_interval above 0 looks the same).
	NoSys bool
	// NoSysStats is true when log lines arrived but $SYS/broker/uptime and
	// $SYS/broker/clients/total did not: sys_interval 0 (or an ACL that grants
	// $SYS/broker/log/# alone). The agent then never leaves its "want everything" start.
	NoSysStats bool
	// Denied lists the filters on which the account's own publish did not come back to its
	// own subscription: the ACL denies it read or write there. Any of Topics.Control()+"#",
	// the forward prefix + "#", and "#" (only with ProveWildcard).
	Denied []string
}

// Probe connects to a broker and proves, with its own actions, that the broker publishes every
// log line the agent relies on: it subscribes and unsubscribes a probe filter, connects a second
// client and takes its session over, and watches $SYS/broker/log for each line. It also checks
// the $SYS statistics the agent reads, that the account may use the cluster's topics, and that
// a client without credentials may not publish relays. An error means the broker could not be
// reached (ErrProbeNoListener) or refused the probe's credentials (ErrProbeRefused).
func Probe(ctx context.Context, o ProbeOptions) (ProbeResult, error) {
	var res ProbeResult
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	nonce := randomHex(6)
	lines := make(chan string, 256)
	opts := probeClientOptions(o, o.ClientID+"-"+nonce)
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		// Only the probe's own lines: on a busy broker other clients' lines would crowd them out.
		line := m.Topic() + " " + string(m.Payload())
		if !strings.Contains(line, nonce) {
			return
		}
		select {
		case lines <- line:
		default:
		}
	})
	c := mqtt.NewClient(opts)
	if err := wait(ctx, c.Connect(), o.Timeout); err != nil {
		return res, connectError(o, err)
	}
	defer c.Disconnect(100)
	stats := make(chan struct{}, 1)
	sysStat := func(_ mqtt.Client, _ mqtt.Message) {
		select {
		case stats <- struct{}{}:
		default:
		}
	}
	// Retained: they arrive at once when the broker publishes them (sys_interval > 0).
	if err := wait(ctx, c.SubscribeMultiple(map[string]byte{"$SYS/broker/uptime": 0, "$SYS/broker/clients/total": 0}, sysStat), o.Timeout); err != nil {
		return res, fmt.Errorf("subscribe $SYS/broker/uptime: %w", err)
	}
	if err := wait(ctx, c.Subscribe("$SYS/broker/log/#", 0, nil), o.Timeout); err != nil {
		return res, fmt.Errorf("subscribe $SYS/broker/log/#: %w", err)
	}

	filter := o.Topics.Control() + "probe/" + nonce
	other := o.ClientID + "-" + nonce + "-2"
	want := []struct{ logType, topic, text string }{
		{"subscribe", "$SYS/broker/log/M/subscribe", " " + filter},
		{"unsubscribe", "$SYS/broker/log/M/unsubscribe", " " + filter},
		{"notice", "$SYS/broker/log/N", " as " + other + " ("},
		{"error", "$SYS/broker/log/E", "Client " + other + " already connected"},
	}
	// Round trips: the account publishes where the agent must, and expects its message back.
	fwd := o.Topics.Forward("$mha-probe/"+nonce, false)
	// The account's own round trip on the forward prefix uses its parent topic ("$forward"),
	// which "$forward/#" grants too ("#" matches its parent level, MQTT 3.1.1 section 4.7.1.2): a running agent reads "$forward/#" and
	// would count a probe message under the prefix as a forged relay. The payload carries the
	// nonce, since the topic does not.
	fwdParent := strings.TrimSuffix(o.Topics.Forward("", false), "/")
	trips := []struct{ denied, topic string }{
		{o.Topics.Control() + "#", filter},
		{o.Topics.ForwardFilters()[0], fwdParent},
	}
	if o.ProveWildcard {
		// Its own topic, not '#': a '#' subscription would first receive every retained message
		// of the broker. Mosquitto's acl_file checks read access per delivered topic, so the
		// round trip shows the same grant.
		trips = append(trips, struct{ denied, topic string }{"#", ProbeTopicPrefix + nonce})
		_ = wait(ctx, c.Subscribe(ProbeTopicPrefix+nonce, 1, nil), o.Timeout)
	}
	_ = wait(ctx, c.Subscribe(filter, 1, nil), o.Timeout)
	_ = wait(ctx, c.Publish(filter, 1, false, "agent "+nonce), o.Timeout)
	_ = wait(ctx, c.Unsubscribe(filter), o.Timeout)
	// A second client, then a takeover of its session: the notice and error lines.
	for i := 0; i < 2; i++ {
		oc := mqtt.NewClient(probeClientOptions(o, other))
		if err := wait(ctx, oc.Connect(), o.Timeout); err == nil {
			defer oc.Disconnect(50)
		}
	}

	// Could a client without credentials inject a relay? Its publish is acknowledged before
	// the account's own on the same topic is sent, so when the account's comes back, the
	// anonymous one has come back first or was refused.
	_ = wait(ctx, c.SubscribeMultiple(map[string]byte{fwd: 1, fwdParent: 1}, nil), o.Timeout)
	anon := probeClientOptions(ProbeOptions{Address: o.Address, TLS: o.TLS}, "mha-anon-probe-"+nonce)
	ac := mqtt.NewClient(anon)
	if err := wait(ctx, ac.Connect(), o.Timeout); err == nil {
		_ = wait(ctx, ac.Publish(fwd, 1, false, []byte("anonymous")), o.Timeout)
		ac.Disconnect(50)
	}
	_ = wait(ctx, c.Publish(fwdParent, 1, false, "agent "+nonce), o.Timeout)
	if o.ProveWildcard {
		_ = wait(ctx, c.Publish(ProbeTopicPrefix+nonce, 1, false, "agent "+nonce), o.Timeout)
	}

	seen := make([]bool, len(want))
	back := make([]bool, len(trips))
	gotStats := false
	anything := false
	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	for {
		done := gotStats
		for _, s := range seen {
			done = done && s
		}
		for _, b := range back {
			done = done && b
		}
		if done {
			break
		}
		select {
		case <-stats:
			gotStats = true
			continue
		case l := <-lines:
			if l == fwd+" anonymous" {
				res.AnonymousForward = true
				continue
			}
			for i, tr := range trips {
				if l == tr.topic+" agent "+nonce {
					back[i] = true
				}
			}
			if strings.HasPrefix(l, "$SYS/broker/log/") {
				anything = true
			}
			for i, w := range want {
				if strings.HasPrefix(l, w.topic+" ") && strings.Contains(l, w.text) {
					seen[i] = true
				}
			}
			continue
		case <-deadline.C:
		case <-ctx.Done():
			return res, ctx.Err()
		}
		break
	}
	for i, tr := range trips {
		if !back[i] {
			res.Denied = append(res.Denied, tr.denied)
		}
	}
	res.NoSys = !anything && !gotStats
	res.NoSysStats = anything && !gotStats
	if !anything {
		res.Missing = []string{"topic"}
		return res, nil
	}
	for i, w := range want {
		if !seen[i] {
			res.Missing = append(res.Missing, w.logType)
		}
	}
	return res, nil
}

// connectError names why the probe could not connect.
func connectError(o ProbeOptions, err error) error {
	who := "anonymous"
	if o.Username != "" {
		who = fmt.Sprintf("user %q", o.Username)
	}
	switch {
	case errors.Is(err, packets.ErrorRefusedNotAuthorised), errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return fmt.Errorf("%w: connect %s as %s: %v", ErrProbeRefused, o.Address, who, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: connect %s: %v", ErrProbeNoListener, o.Address, err)
	}
	return fmt.Errorf("connect %s: %w", o.Address, err)
}

func probeClientOptions(o ProbeOptions, id string) *mqtt.ClientOptions {
	opts := mqtt.NewClientOptions()
	if o.TLS != nil {
		opts.AddBroker("ssl://" + o.Address)
		opts.SetTLSConfig(o.TLS)
	} else {
		opts.AddBroker("tcp://" + o.Address)
	}
	opts.SetClientID(id)
	opts.SetProtocolVersion(4)
	opts.SetCleanSession(true)
	opts.SetAutoReconnect(false)
	opts.SetConnectTimeout(3 * time.Second)
	if o.Username != "" {
		opts.SetUsername(o.Username)
		opts.SetPassword(o.Password)
	}
	return opts
}

// wait waits for a paho token, a timeout or ctx.
func wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return fmt.Errorf("no answer within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
