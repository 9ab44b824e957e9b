// status.go is `mosquitto-ha status`: it connects to every broker as the agent would (its TLS
// settings, its account), reads each agent's retained status message, and every agent's last
// live status from every broker (which tells when a vanished agent was last seen, and what an
// agent whose own broker refuses it says), and prints the cluster.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
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
	// LastSeen is the newest last live status of the node's agent found on any broker.
	LastSeen *bridge.Status `json:"last_seen,omitempty"`
	// DownSince is when the agent went down, when it is known to be down: its stop, or the
	// time of its last live status after a crash (within 2 s of the crash).
	DownSince time.Time `json:"down_since,omitzero"`
}

// liveWithin is how old a last live status may be for its agent to count as running: a few of
// the agent's 2 s refreshes.
const liveWithin = 10 * time.Second

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
	var lastMu sync.Mutex
	last := map[string]*bridge.Status{} // newest last live status by node, from every broker
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
			// The last live statuses first: the broker sends their retained messages before it
			// answers the next subscription, so they are in when the node's status arrives.
			c.Subscribe(topics.LastStatusFilter(), 0, func(_ mqtt.Client, m mqtt.Message) {
				var s bridge.Status
				// Retained only: a live one arriving while another broker is still read would
				// look newer than the status read from the node's own broker a moment before.
				if !m.Retained() || json.Unmarshal(m.Payload(), &s) != nil || s.Node == "" {
					return
				}
				lastMu.Lock()
				if prev := last[s.Node]; prev == nil || s.Time.After(prev.Time) {
					last[s.Node] = &s
				}
				lastMu.Unlock()
			}).WaitTimeout(timeout)
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
	for i := range out {
		out[i].LastSeen = last[out[i].Node]
		out[i].DownSince = downSince(out[i])
	}
	return out
}

// downSince is when h's agent went down, or zero when it is up or nothing says when.
func downSince(h nodeHealth) time.Time {
	if s := h.current(); s != nil && s.AgentUp {
		return time.Time{}
	}
	if h.Agent != nil && !h.Agent.Time.IsZero() {
		return h.Agent.Time // it stopped on purpose and said when
	}
	if h.LastSeen != nil && (h.Agent != nil || time.Since(h.LastSeen.Time) > liveWithin) {
		return h.LastSeen.Time // its will, or silence: last seen alive then
	}
	return time.Time{}
}

// current is the status that describes h's agent now: its own broker's, or its last live status
// from the other brokers when that is fresh and newer: the own broker cannot be read, or it keeps
// the last status of an agent it dropped (a reloaded password file drops without a will) or
// refuses. A will against a last live status that says the agent was connected is a crash: the
// will wins.
func (h nodeHealth) current() *bridge.Status {
	l := h.LastSeen
	if l == nil || !l.AgentUp || time.Since(l.Time) > liveWithin {
		return h.Agent
	}
	switch {
	case h.Agent == nil:
		return l
	case h.Agent.AgentUp: // newer than a refresh or so: the own broker's copy is stuck
		if l.Time.Sub(h.Agent.Time) > 3*time.Second {
			return l
		}
	case !h.Agent.Time.IsZero(): // a clean stop, and the agent runs again without its broker
		if l.Time.After(h.Agent.Time) {
			return l
		}
	case !l.LocalUp: // a will, and the agent runs on without its broker
		return l
	}
	return h.Agent
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
		if s := h.current(); !h.BrokerUp || s == nil || !s.AgentUp || !s.LocalUp {
			return exitFail
		}
	}
	return exitOK
}

// printHealth prints one row per node, then, under it, each node's last error.
func printHealth(w io.Writer, health []nodeHealth) {
	now := time.Now()
	ago := func(t time.Time) string { return now.Sub(t).Round(time.Second).String() + " ago" }
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tBROKER\tAGENT\tVERSION\tUPTIME\tPEERS UP\tFILTERS\tINTEREST\tRELAYED OUT\tREPUBLISHED\tBUFFERED\tDROPPED\tREFUSED\tNOTE")
	var errs []string
	for _, h := range health {
		s := h.current()
		if s != nil && s.LastError != "" {
			errs = append(errs, fmt.Sprintf("%s: last error %s (%s): %s", h.Node, s.LastErrorTime.Format(time.RFC3339), ago(s.LastErrorTime), s.LastError))
		}
		if s == nil || !s.AgentUp {
			agent, version, note := "-", "-", h.Error
			if s != nil || h.LastSeen != nil {
				agent = "down"
			}
			if s != nil && s.Version != "" {
				version = s.Version
			} else if h.LastSeen != nil && h.LastSeen.Version != "" {
				version = h.LastSeen.Version
			}
			switch {
			case !h.DownSince.IsZero():
				agent = "down since " + h.DownSince.Format(time.RFC3339)
				note = strings.TrimPrefix(note+"; ", "; ") + "agent down " + ago(h.DownSince)
			case s != nil:
				note = strings.TrimPrefix(note+"; ", "; ") + "agent down (its will: counters and interest unknown)"
			}
			// The broker published the agent's will: its counters are not a state of the
			// cluster, and nothing is known about its interest.
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\n", h.Node, h.Broker, agent, version, note)
			continue
		}
		agent := "up " + ago(s.Time)
		if s != h.Agent {
			agent = "up (seen " + ago(s.Time) + " via peers)"
		}
		uptime := "-"
		if !s.Started.IsZero() {
			uptime = s.Time.Sub(s.Started).Round(time.Second).String()
		}
		up, relayed, buffered := 0, uint64(0), 0
		dropped, refused := s.InboxDropped, s.Forged+s.Oversized+s.ForgedInterest
		var down, notes []string
		for _, p := range s.Peers {
			if p.Up {
				up++
			} else {
				down = append(down, p.Name)
			}
			relayed += p.Relayed
			buffered += p.Buffered
			dropped += p.Dropped
			refused += p.Refused + p.Forged
		}
		interest := "exact"
		if s.WantAll {
			interest = "everything"
		}
		if h.Error != "" {
			notes = append(notes, h.Error)
		}
		if s.LocalAuthRefused {
			notes = append(notes, "its broker refuses the agent's credentials")
		} else if !s.LocalUp {
			notes = append(notes, "agent not connected to its broker")
		}
		if len(down) > 0 {
			notes = append(notes, "peers down: "+strings.Join(down, ","))
		}
		if ss := s.Sessions; ss != nil {
			// Sessions that follow their client (issue 13): what this broker holds, its
			// replicas of sessions held elsewhere, and what it took over or drained.
			n := fmt.Sprintf("sessions: %d held (%d connected), %d replicas, %d takeovers, %d drains (%d messages)",
				ss.Held, ss.Connected, ss.Replicas, ss.Takeovers, ss.Drains, ss.DrainedMessages)
			if ss.Forwarded+ss.ForwardSkipped > 0 {
				n += fmt.Sprintf(", %d handed over (%d the client had at its new broker)", ss.Forwarded, ss.ForwardSkipped)
			}
			if ss.Refused > 0 {
				n += fmt.Sprintf(", %d refused by the broker (the agent may not act for those client ids, see `mosquitto-ha acl`)", ss.Refused)
			}
			notes = append(notes, n)
		}
		if n := sharedSplitNote(s.SharedSplit); n != "" {
			notes = append(notes, n)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", h.Node, h.Broker, agent, orDash(s.Version), uptime,
			up, len(s.Peers), s.LocalFilters, interest, relayed, s.Republished, buffered, dropped, refused, strings.Join(notes, "; "))
	}
	tw.Flush()
	if len(errs) > 0 {
		fmt.Fprintln(w)
		for _, e := range errs {
			fmt.Fprintln(w, e)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
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
