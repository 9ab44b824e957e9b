// status.go is `mosquitto-ha status`: it connects to every broker as the agent would (its TLS
// settings, its account), reads each agent's retained status message and prints the cluster.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"mosquitto-ha/bridge"
)

// nodeHealth is what `status` learned about one node.
type nodeHealth struct {
	Node     string `json:"node"`
	Address  string `json:"address"`
	BrokerUp bool   `json:"broker_up"`
	// Broker is "up", "down" (unreachable, TLS failed) or "refused" (it answered, and refused
	// the agent's credentials).
	Broker string         `json:"broker"`
	Error  string         `json:"error,omitempty"`
	Agent  *bridge.Status `json:"agent,omitempty"`
}

// Broker states in nodeHealth.Broker.
const (
	brokerUp      = "up"
	brokerDown    = "down"
	brokerRefused = "refused"
)

// connectProblem says why a connection to a broker failed, telling a broker that refuses the
// agent's credentials from one that cannot be reached.
func connectProblem(err error) (state, msg string) {
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	switch {
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return brokerRefused, "bad user name or password: the broker refuses the agent's credentials (check agent.username and agent.password_file against the broker's password_file)"
	case errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return brokerRefused, "not authorised: the broker refuses the agent's account (check agent.username, agent.password_file and the broker's password_file and allow_anonymous)"
	case errors.As(err, &verify):
		return brokerDown, fmt.Sprintf("TLS: the broker's certificate is not trusted: %v (check tls.ca and tls.server_name)", verify.Err)
	case errors.As(err, &alert):
		return brokerDown, fmt.Sprintf("TLS: the broker ended the handshake: %v (does it require a client certificate? check tls.cert and tls.key)", err)
	}
	return brokerDown, fmt.Sprint("unreachable: ", err)
}

// readHealth connects to every broker and reads its agent's retained status message.
func readHealth(ctx context.Context, cfg *Config, timeout time.Duration) []nodeHealth {
	topics := bridge.NewTopics(cfg.Cluster, cfg.Agent.ForwardPrefix)
	pw, _ := cfg.Password()
	out := make([]nodeHealth, len(cfg.Nodes))
	done := make(chan struct{}, len(cfg.Nodes))
	for i, n := range cfg.Nodes {
		go func(i int, n Node) {
			defer func() { done <- struct{}{} }()
			h := nodeHealth{Node: n.Name, Address: n.Address, Broker: brokerDown}
			got := make(chan []byte, 1)
			// The agent's own settings: its TLS for this node, its account, MQTT 3.1.1 only
			// (paho would otherwise retry with 3.1 and hide the broker's refusal).
			tlsConf, err := cfg.TLSFor(n)
			if err != nil {
				h.Error = err.Error()
				out[i] = h
				return
			}
			o := mqtt.NewClientOptions().SetClientID(topics.ClientPrefix() + "status-" + randomSuffix()).
				SetProtocolVersion(4).SetConnectTimeout(timeout).SetAutoReconnect(false)
			if tlsConf != nil {
				o.AddBroker("ssl://" + n.Address).SetTLSConfig(tlsConf)
			} else {
				o.AddBroker("tcp://" + n.Address)
			}
			if cfg.Agent.Username != "" {
				o.SetUsername(cfg.Agent.Username).SetPassword(pw)
			}
			c := mqtt.NewClient(o)
			tok := c.Connect()
			if !tok.WaitTimeout(timeout) {
				h.Error = fmt.Sprintf("unreachable: no answer within %s", timeout)
				out[i] = h
				return
			}
			if err := tok.Error(); err != nil {
				h.Broker, h.Error = connectProblem(err)
				out[i] = h
				return
			}
			defer c.Disconnect(50)
			h.BrokerUp, h.Broker = true, brokerUp
			c.Subscribe(topics.Status(n.Name), 0, func(_ mqtt.Client, m mqtt.Message) {
				select {
				case got <- m.Payload():
				default:
				}
			})
			select {
			case p := <-got:
				var s bridge.Status
				if err := json.Unmarshal(p, &s); err != nil {
					h.Error = "bad status message: " + err.Error()
				} else {
					h.Agent = &s
				}
			case <-time.After(timeout):
				h.Error = "no agent status (agent never ran here?)"
			case <-ctx.Done():
			}
			out[i] = h
		}(i, n)
	}
	for range cfg.Nodes {
		<-done
	}
	return out
}

func randomSuffix() string { return fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff) }

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("status", stderr)
	asJSON := f.fs.Bool("json", false, "print JSON")
	cfg, code := f.parse(args, stderr)
	if cfg == nil {
		return code
	}
	health := readHealth(ctx, cfg, 2*time.Second)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(health)
	} else {
		printHealth(stdout, health)
	}
	for _, h := range health {
		if !h.BrokerUp || h.Agent == nil || !h.Agent.AgentUp {
			return exitFail
		}
	}
	return exitOK
}

func printHealth(w io.Writer, health []nodeHealth) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tBROKER\tAGENT\tPEERS UP\tFILTERS\tINTEREST\tRELAYED OUT\tREPUBLISHED\tBUFFERED\tNOTE")
	for _, h := range health {
		broker := h.Broker
		if h.Agent == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", h.Node, broker, h.Error)
			continue
		}
		s := h.Agent
		if !s.AgentUp {
			// The broker published the agent's will: its counters are not a state of the
			// cluster, and nothing is known about its interest.
			fmt.Fprintf(tw, "%s\t%s\tdown\t-\t-\t-\t-\t-\t-\tagent down (its will: counters and interest unknown)\n", h.Node, broker)
			continue
		}
		agent := "up " + time.Since(s.Time).Round(time.Second).String() + " ago"
		up, relayed, buffered := 0, uint64(0), 0
		var down []string
		for _, p := range s.Peers {
			if p.Up {
				up++
			} else {
				down = append(down, p.Name)
			}
			relayed += p.Relayed
			buffered += p.Buffered
		}
		interest := "exact"
		if s.WantAll {
			interest = "everything"
		}
		note := ""
		if len(down) > 0 {
			note = "peers down: " + strings.Join(down, ",")
		}
		note = joinNote(note, sharedSplitNote(s.SharedSplit))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%s\t%d\t%d\t%d\t%s\n", h.Node, broker, agent, up, len(s.Peers),
			s.LocalFilters, interest, relayed, s.Republished, buffered, note)
	}
	tw.Flush()
}

// sharedSplitNote names the $share subscriptions whose members sit on this broker and on
// others: a publish that must reach several of those brokers anyway is delivered once on each
// (README, shared subscriptions).
func sharedSplitNote(split []bridge.SharedSplit) string {
	if len(split) == 0 {
		return ""
	}
	parts := make([]string, len(split))
	for i, s := range split {
		parts[i] = s.Share + " (also on " + strings.Join(s.Peers, ",") + ")"
	}
	return "shared subscriptions split over brokers: " + strings.Join(parts, ", ")
}

func joinNote(a, b string) string {
	if a == "" || b == "" {
		return a + b
	}
	return a + "; " + b
}
