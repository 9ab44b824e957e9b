// sessioncheck.go owns the check that the broker lets the agent's account act for other client
// ids, which sessions that follow their client need (sessionwork.go): `mosquitto-ha check`
// warns when it does not.

package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"mosquitto-ha/bridge/mqttconn"
)

// ErrSessionRights marks a broker that does not let the agent's account act for a client id.
var ErrSessionRights = errors.New("bridge: the broker does not let the agent's account act for other client ids")

// Client ids and filter of the session rights check: ordinary names, none of the cluster's.
const (
	sessionCheckID     = "mosquitto-ha-session-check"
	sessionCheckFilter = "mosquitto-ha/session-check/#"
)

// CheckSessionRights connects to the broker with the probe's credentials as two client ids that
// are not the agent's, subscribes an ordinary filter as the first, and checks that the second
// connect did not close the first: a broker that replaces client ids with the username
// (use_username_as_clientid) closes it, a broker whose ACL, dynamic security client-id rules or
// plugin refuse the ids or the filter refuses them. Each case wraps ErrSessionRights. Only the
// ids and the filter above are tried: a rule that refuses other client ids is found by the
// agent at run time (logged once per client id, counted).
func CheckSessionRights(ctx context.Context, o ProbeOptions) error {
	timeout := orDefault(o.Timeout, DefaultProbeTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	opts := func(id string) mqttconn.ConnectOptions {
		return mqttconn.ConnectOptions{ClientID: id, Protocol: 4, CleanSession: true, Keepalive: 10 * time.Second,
			Username: o.Username, Password: o.Password, TLS: o.TLS}
	}
	first, _, err := mqttconn.Dial(ctx, o.Address, opts(sessionCheckID+"-a"), func(*message) {})
	if err != nil {
		return fmt.Errorf("%w: connect as client id %q: %w", ErrSessionRights, sessionCheckID+"-a", err)
	}
	defer first.Close()
	if err := first.Subscribe(ctx, map[string]byte{sessionCheckFilter: 1}); err != nil {
		return fmt.Errorf("%w: subscribe %q as client id %q: %w", ErrSessionRights, sessionCheckFilter, sessionCheckID+"-a", err)
	}
	second, _, err := mqttconn.Dial(ctx, o.Address, opts(sessionCheckID+"-b"), func(*message) {})
	if err != nil {
		return fmt.Errorf("%w: connect as client id %q: %w", ErrSessionRights, sessionCheckID+"-b", err)
	}
	defer second.Close()
	select {
	case <-first.Done():
		return fmt.Errorf("%w: connecting as %q closed the connection as %q: the broker gives every connection of the account one client id (use_username_as_clientid, or use_identity_as_username with it)",
			ErrSessionRights, sessionCheckID+"-b", sessionCheckID+"-a")
	case <-time.After(300 * time.Millisecond):
		return nil
	}
}
