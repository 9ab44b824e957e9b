package bridge

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ProbeOptions say how to reach the broker to probe.
type ProbeOptions struct {
	Address            string // host:port
	TLS                *tls.Config
	ClientID           string
	Username, Password string
	Timeout            time.Duration
	Topics             Topics
}

// ProbeResult is what a probe learned about a broker.
type ProbeResult struct {
	// Missing lists the log_type values whose lines the broker did not publish to
	// $SYS/broker/log: any of "subscribe", "unsubscribe", "notice", "error", or "topic" when
	// nothing at all arrived (log_dest topic is missing).
	Missing []string
	// AnonymousForward is true when a client without credentials could publish to the
	// forward prefix: anyone can inject relayed messages.
	AnonymousForward bool
}

// Probe connects to a broker and proves, with its own actions, that the broker publishes every
// log line the agent relies on: it subscribes and unsubscribes a probe filter, connects a second
// client and takes its session over, and watches $SYS/broker/log for each line. An error means
// the broker could not be reached or refused the probe's credentials.
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
		return res, fmt.Errorf("connect %s: %w", o.Address, err)
	}
	defer c.Disconnect(100)
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
	_ = wait(ctx, c.Subscribe(filter, 0, nil), o.Timeout)
	_ = wait(ctx, c.Unsubscribe(filter), o.Timeout)
	// A second client, then a takeover of its session: the notice and error lines.
	for i := 0; i < 2; i++ {
		oc := mqtt.NewClient(probeClientOptions(o, other))
		if err := wait(ctx, oc.Connect(), o.Timeout); err == nil {
			defer oc.Disconnect(50)
		}
	}

	// Could a client without credentials inject a relay?
	fwd := o.Topics.Forward("$mha-probe/"+nonce, false)
	_ = wait(ctx, c.Subscribe(fwd, 1, nil), o.Timeout)
	anon := probeClientOptions(ProbeOptions{Address: o.Address, TLS: o.TLS}, "mha-anon-probe-"+nonce)
	ac := mqtt.NewClient(anon)
	if err := wait(ctx, ac.Connect(), o.Timeout); err == nil {
		_ = wait(ctx, ac.Publish(fwd, 1, false, []byte("probe")), o.Timeout)
		ac.Disconnect(50)
	}

	seen := make([]bool, len(want))
	anything := false
	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	for {
		done := true
		for _, s := range seen {
			done = done && s
		}
		if done && res.AnonymousForward {
			break
		}
		select {
		case l := <-lines:
			if strings.HasPrefix(l, fwd+" ") {
				res.AnonymousForward = true
				continue
			}
			anything = true
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
	if !anything {
		return ProbeResult{Missing: []string{"topic"}, AnonymousForward: res.AnonymousForward}, nil
	}
	for i, w := range want {
		if !seen[i] {
			res.Missing = append(res.Missing, w.logType)
		}
	}
	return res, nil
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
