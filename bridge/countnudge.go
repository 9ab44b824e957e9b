// countnudge.go owns the connection that makes the local broker publish its client counts again.
//
// Mosquitto 2.0 publishes $SYS/broker/clients/total and clients/connected only at a tick where
// the value changed, retained with a message expiry of 60 s (sys_tree.c). An agent that
// subscribes after the counts stood still for a minute (it restarted, or its local connection
// came back) gets neither, and can then prove no restored connection (its peers keep every
// replica of those clients undrained: the session's next move repeats all they collected) and
// account for no client (contract 7) until some client connects or leaves across a tick. A chaos
// run showed it: a restarted agent read no count for over a minute, and the subscriber's next
// move repeated 1,300 messages. So after two ticks without a count the agent holds a connection
// of its own (clean session, a cluster client id, nothing subscribed) until both counts came: its
// connect changes them at the next tick, which publishes them. Its connect and disconnect lines
// are read like any cluster connection's, so the counts it brings agree with the model.

package bridge

import (
	"context"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// countNudgeHold bounds how long the nudge connection waits for the counts (a sys_interval is 10 s
// by default; an operator may set more).
const countNudgeHold = time.Minute

// countsKnown reports whether the broker's two client counts were read on this log subscription.
func (s *sysAccount) countsKnown() bool { return s.total >= 0 && s.connected >= 0 }

// nudgeCounts starts the nudge unless one runs; on the dispatcher, at a tick.
func (a *Agent) nudgeCounts(ctx context.Context) {
	if !a.countNudging.CompareAndSwap(false, true) {
		return
	}
	a.countsRead.Store(false)
	a.log.Debug("no client count from the broker for two ticks (Mosquitto lets them expire after 60 s unchanged): connecting once so that the next tick publishes them")
	d := a.ret.dialer
	go func() {
		defer a.countNudging.Store(false)
		ctx, cancel := context.WithTimeout(ctx, countNudgeHold)
		defer cancel()
		c, _, err := mqttconn.Dial(ctx, d.addr, d.conn.options(a.topics.CountID(a.opts.Node), 4, true, d.tls), func(m *message) { m.Ack() })
		if err != nil {
			a.log.Debug("client count nudge failed", "err", err)
			return
		}
		defer c.Close()
		for !a.countsRead.Load() {
			select {
			case <-ctx.Done():
				return
			case <-c.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
}
