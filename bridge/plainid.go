// plainid.go owns the move from plain to secret-derived client ids (topics.go): an agent that
// ran without a cluster secret, or before this version, left a persistent session under the
// plain local id "mha-<cluster>-<node>-local", subscribed to '#'. Nobody resumes it any more, so
// it would queue every QoS 1/2 publish of the broker for good; the agent with a secret removes
// it when it starts.

package bridge

import (
	"context"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// removePlainSession discards the session of the plain local id on the local broker, if there
// is one: a CONNECT without clean session says whether the broker held it (and keeps it), then
// one with clean session discards it [MQTT-3.1.2-6]. What the broker had queued for it (while
// the agent that used it was stopped) is discarded with it: docs/security.md says so. Failures
// are logged and left: the session costs memory, not correctness.
func (a *Agent) removePlainSession(ctx context.Context) {
	plain := NewTopics(a.opts.Cluster, a.opts.ForwardPrefix).LocalID(a.opts.Node)
	if a.signer == nil || plain == a.localID {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	present := false
	for _, clean := range []bool{false, true} {
		// Queued messages the broker sends meanwhile are never acknowledged: they go with it.
		c, had, err := mqttconn.Dial(ctx, a.opts.Local, a.peerEnv.conn.options(plain, 4, clean, a.opts.LocalTLS), func(*message) {})
		if err != nil {
			a.log.Warn("could not remove the session of the agent's plain client id", "client", plain, "err", err)
			return
		}
		c.Close()
		present = present || had
	}
	if present {
		a.log.Warn("removed the session the agent left under its plain client id (the cluster secret now derives its ids): what it had queued is discarded", "client", plain, "now", a.localID)
	}
}
