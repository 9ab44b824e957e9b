package bridge_test

import (
	"context"
	"errors"
	"testing"

	"mosquitto-ha/bridge"
	"mosquitto-ha/sysparse/mosqtest"
)

// `check` warns when the agent's account cannot act for other client ids: with
// use_username_as_clientid every connection of the account gets one id (the second closes the
// first); a plain broker passes.
func TestCheckSessionRights(t *testing.T) {
	plain := mosqtest.Start(t, mosqtest.Options{})
	if err := bridge.CheckSessionRights(context.Background(), bridge.ProbeOptions{Address: plain.Addr, Username: "agent"}); err != nil {
		t.Errorf("plain broker: %v", err)
	}
	same := mosqtest.Start(t, mosqtest.Options{Extra: "use_username_as_clientid true\n"})
	err := bridge.CheckSessionRights(context.Background(), bridge.ProbeOptions{Address: same.Addr, Username: "agent"})
	if !errors.Is(err, bridge.ErrSessionRights) {
		t.Errorf("use_username_as_clientid: got %v, want ErrSessionRights", err)
	}
	t.Log(err)
}
