// metrics.go owns /metrics: the agent's status, build, last reload and process figures in the
// Prometheus text format.

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"mosquitto-ha/bridge"
)

// writeMetrics renders an agent's status in the Prometheus text exposition format (0.0.4).
func writeMetrics(w io.Writer, s bridge.Status, now time.Time) {
	gauge := func(name, help string) { fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name) }
	counter := func(name, help string) { fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", name, help, name) }
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	node := fmt.Sprintf("node=%q", s.Node)

	gauge("mosquitto_ha_local_broker_up", "1 while the agent's connection to its own broker is up.")
	fmt.Fprintf(w, "mosquitto_ha_local_broker_up{%s} %d\n", node, b(s.LocalUp))
	gauge("mosquitto_ha_local_broker_auth_refused", "1 while the local broker refuses the agent's credentials: permanent until its password_file or agent.password_file changes (the agent keeps retrying).")
	fmt.Fprintf(w, "mosquitto_ha_local_broker_auth_refused{%s} %d\n", node, b(s.LocalAuthRefused))
	gauge("mosquitto_ha_local_filters", "Distinct topic filters of this broker's clients.")
	fmt.Fprintf(w, "mosquitto_ha_local_filters{%s} %d\n", node, s.LocalFilters)
	gauge("mosquitto_ha_want_all", "1 while the agent asks its peers for every publish (it cannot know its clients' interest yet).")
	fmt.Fprintf(w, "mosquitto_ha_want_all{%s} %d\n", node, b(s.WantAll))
	counter("mosquitto_ha_log_lines_widened_total", "Log lines that widened the interest, by cause.")
	fmt.Fprintf(w, "mosquitto_ha_log_lines_widened_total{%s,cause=\"ambiguous\"} %d\n", node, s.Ambiguous)
	fmt.Fprintf(w, "mosquitto_ha_log_lines_widened_total{%s,cause=\"truncated\"} %d\n", node, s.Truncated)
	fmt.Fprintf(w, "mosquitto_ha_log_lines_widened_total{%s,cause=\"malformed\"} %d\n", node, s.Malformed)
	counter("mosquitto_ha_republished_total", "Relays from peers published on the local broker.")
	fmt.Fprintf(w, "mosquitto_ha_republished_total{%s} %d\n", node, s.Republished)
	counter("mosquitto_ha_repeated_relays_total", "Relays from peers recognised as sent before (a retry or an agent restart): dropped, released or sent again with their packet id, never republished anew.")
	fmt.Fprintf(w, "mosquitto_ha_repeated_relays_total{%s} %d\n", node, s.Repeats)
	counter("mosquitto_ha_expired_relays_total", "Relays from peers whose MQTT 5 Message Expiry Interval ran out on the way: not republished, as one broker would not deliver them.")
	fmt.Fprintf(w, "mosquitto_ha_expired_relays_total{%s} %d\n", node, s.Expired)
	counter("mosquitto_ha_caught_up_relays_total", "Local publishes relayed to a peer after the fact: read after one of its clients subscribed, before the news of that subscription arrived.")
	fmt.Fprintf(w, "mosquitto_ha_caught_up_relays_total{%s} %d\n", node, s.CaughtUp)
	counter("mosquitto_ha_refused_total", "Input refused by this agent, by cause.")
	fmt.Fprintf(w, "mosquitto_ha_refused_total{%s,cause=\"forged_relay\"} %d\n", node, s.Forged)
	fmt.Fprintf(w, "mosquitto_ha_refused_total{%s,cause=\"oversized_relay\"} %d\n", node, s.Oversized)
	fmt.Fprintf(w, "mosquitto_ha_refused_total{%s,cause=\"forged_own_interest\"} %d\n", node, s.ForgedInterest)
	if s.Sessions != nil {
		fmt.Fprintf(w, "mosquitto_ha_refused_total{%s,cause=\"session_registry\"} %d\n", node, s.Sessions.RegistryRefused)
	}
	counter("mosquitto_ha_inbox_dropped_total", "Local QoS 0 publishes dropped because the agent fell behind.")
	fmt.Fprintf(w, "mosquitto_ha_inbox_dropped_total{%s} %d\n", node, s.InboxDropped)
	counter("mosquitto_ha_shared_extra_deliveries_total", "Deliveries to a $share subscription beyond one per message: a local publish that had to reach several brokers with members of it (README, shared subscriptions).")
	fmt.Fprintf(w, "mosquitto_ha_shared_extra_deliveries_total{%s} %d\n", node, s.SharedExtra)
	if ss := s.Sessions; ss != nil {
		gauge("mosquitto_ha_sessions_held", "Client ids this broker holds as their newest holder (issue 13), and of them the connected ones.")
		fmt.Fprintf(w, "mosquitto_ha_sessions_held{%s,state=\"all\"} %d\n", node, ss.Held)
		fmt.Fprintf(w, "mosquitto_ha_sessions_held{%s,state=\"connected\"} %d\n", node, ss.Connected)
		gauge("mosquitto_ha_session_replicas", "Replicas on this broker of persistent sessions held on another.")
		fmt.Fprintf(w, "mosquitto_ha_session_replicas{%s} %d\n", node, ss.Replicas)
		gauge("mosquitto_ha_session_jobs_pending", "Connections with clients' ids waiting for the agent's session worker.")
		fmt.Fprintf(w, "mosquitto_ha_session_jobs_pending{%s} %d\n", node, ss.Pending)
		counter("mosquitto_ha_session_connections_total", "Connections the agent made to its broker with a client's id, by job and outcome.")
		for _, c := range []struct {
			job string
			n   uint64
		}{{"takeover", ss.Takeovers}, {"drain", ss.Drains}, {"replica_sync", ss.ReplicaSyncs}, {"remove", ss.Removed}, {"refused", ss.Refused}, {"failed", ss.Failed}} {
			fmt.Fprintf(w, "mosquitto_ha_session_connections_total{%s,job=%q} %d\n", node, c.job, c.n)
		}
		counter("mosquitto_ha_session_drained_messages_total", "Messages replicas queued while their client was connected elsewhere, acknowledged by drains (duplicates a failover does not deliver).")
		fmt.Fprintf(w, "mosquitto_ha_session_drained_messages_total{%s} %d\n", node, ss.DrainedMessages)
		counter("mosquitto_ha_session_jobs_stale_total", "Drains and removals dropped unrun: what they were planned on (client connected at a reachable holder with a fresh registry) no longer held when their turn came.")
		fmt.Fprintf(w, "mosquitto_ha_session_jobs_stale_total{%s} %d\n", node, ss.Stale)
		counter("mosquitto_ha_session_closed_live_total", "Session connections that found their client connected here before the agent read its connect line: closed at once, nothing acknowledged.")
		fmt.Fprintf(w, "mosquitto_ha_session_closed_live_total{%s} %d\n", node, ss.ClosedLive)
		counter("mosquitto_ha_session_forwarded_messages_total", "Messages a session left behind had in flight to its client's last connection here (a takeover's, or a first drain's), handed to the client's new node.")
		fmt.Fprintf(w, "mosquitto_ha_session_forwarded_messages_total{%s} %d\n", node, ss.Forwarded)
		counter("mosquitto_ha_session_forward_skipped_messages_total", "Messages a hand-over acknowledged without forwarding: the client's new node did not drain them from its replica (its registry's filter), so the client gets them there.")
		fmt.Fprintf(w, "mosquitto_ha_session_forward_skipped_messages_total{%s} %d\n", node, ss.ForwardSkipped)
		counter("mosquitto_ha_session_registry_bytes_total", "Bytes of session registry this agent published (retained on its broker, read by every peer).")
		fmt.Fprintf(w, "mosquitto_ha_session_registry_bytes_total{%s} %d\n", node, ss.RegistryBytes)
	}
	gauge("mosquitto_ha_shared_split_subscriptions", "$share subscriptions with members on this broker and on peers (mosquitto-ha status names them).")
	fmt.Fprintf(w, "mosquitto_ha_shared_split_subscriptions{%s} %d\n", node, len(s.SharedSplit))

	peerMetrics := []struct {
		name, help, kind string
		value            func(p bridge.PeerStatus) float64
	}{
		{"mosquitto_ha_peer_up", "1 while the connection to the peer broker is up.", "gauge", func(p bridge.PeerStatus) float64 { return float64(b(p.Up)) }},
		{"mosquitto_ha_peer_interest_filters", "Distinct filters the peer's clients hold.", "gauge", func(p bridge.PeerStatus) float64 { return float64(p.Filters) }},
		{"mosquitto_ha_peer_interest_known", "1 when the peer's interest is known exactly (0: everything is relayed to it).", "gauge", func(p bridge.PeerStatus) float64 { return float64(b(p.InterestKnown)) }},
		{"mosquitto_ha_peer_interest_age_seconds", "Seconds since the peer's last interest message.", "gauge", func(p bridge.PeerStatus) float64 {
			if p.InterestUpdated.Unix() <= 0 {
				return -1
			}
			return now.Sub(p.InterestUpdated).Seconds()
		}},
		{"mosquitto_ha_peer_relayed_messages_total", "Publishes relayed to the peer.", "counter", func(p bridge.PeerStatus) float64 { return float64(p.Relayed) }},
		{"mosquitto_ha_peer_relayed_bytes_total", "Payload bytes relayed to the peer.", "counter", func(p bridge.PeerStatus) float64 { return float64(p.RelayedBytes) }},
		{"mosquitto_ha_peer_buffered_relays", "Relays waiting for the peer.", "gauge", func(p bridge.PeerStatus) float64 { return float64(p.Buffered) }},
		{"mosquitto_ha_peer_buffered_bytes", "Payload bytes of the relays waiting for the peer.", "gauge", func(p bridge.PeerStatus) float64 { return float64(p.BufferedBytes) }},
		{"mosquitto_ha_peer_buffer_limit_bytes", "The payload bytes the peer's buffer holds before it drops relays nobody waits for (agent.buffer_bytes).", "gauge", func(p bridge.PeerStatus) float64 { return float64(p.BufferLimitBytes) }},
		{"mosquitto_ha_peer_dropped_relays_total", "Relays dropped for the peer (buffer full, or QoS 0 while it was down).", "counter", func(p bridge.PeerStatus) float64 { return float64(p.Dropped) }},
		{"mosquitto_ha_peer_refused_total", "Interest messages from the peer refused (malformed or over a limit).", "counter", func(p bridge.PeerStatus) float64 { return float64(p.Refused) }},
		{"mosquitto_ha_peer_forged_total", "Interest messages on the peer's topics with a missing or wrong signature.", "counter", func(p bridge.PeerStatus) float64 { return float64(p.Forged) }},
		{"mosquitto_ha_peer_expired_relays_total", "Relays for the peer whose MQTT 5 Message Expiry Interval ran out while they waited: not sent.", "counter", func(p bridge.PeerStatus) float64 { return float64(p.Expired) }},
		{"mosquitto_ha_peer_retries_total", "Relays sent again after the peer connection was lost.", "counter", func(p bridge.PeerStatus) float64 { return float64(p.Retries) }},
	}
	for _, m := range peerMetrics {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.kind)
		for _, p := range s.Peers {
			fmt.Fprintf(w, "%s{%s,peer=%q} %g\n", m.name, node, p.Name, m.value(p))
		}
	}
}

// serveMetrics serves /metrics on addr until ctx ends: the agent's, its build, its last reload
// and its process.
func serveMetrics(ctx context.Context, addr string, a *bridge.Agent, reload *reloadState, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(w, a.Status(), time.Now())
		writeBuildInfo(w)
		reload.writeMetrics(w)
		writeProcessMetrics(w)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics served", "addr", l.Addr().String(), "path", "/metrics")
	return nil
}
