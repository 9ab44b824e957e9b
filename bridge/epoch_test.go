package bridge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mosquitto-ha/bridge/mqttconn"
)

// The local session's epoch survives an agent restart while the broker keeps the session, and
// changes when it does not (packet ids start again), so the same packet id of two sessions is
// never one identity.
func TestLocalEpochFollowsTheSession(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b1.json.epoch")
	c1, c2 := &mqttconn.Conn{}, &mqttconn.Conn{}
	e := newLocalEpoch(path)
	if err := e.load(); err != nil {
		t.Fatal(err)
	}
	if err := e.connected(c1, false); err != nil {
		t.Fatal(err)
	}
	first := e.of(c1)
	if first == 0 || e.of(c2) != 0 {
		t.Fatalf("epoch %d for the current connection, %d for another", first, e.of(c2))
	}
	// Restarted (a new process reads the file), the session kept: the same epoch.
	e = newLocalEpoch(path)
	if err := e.load(); err != nil {
		t.Fatal(err)
	}
	if err := e.connected(c2, true); err != nil {
		t.Fatal(err)
	}
	if got := e.of(c2); got != first {
		t.Fatalf("epoch %d after a restart with the session kept, want %d", got, first)
	}
	if e.of(c1) != 0 {
		t.Fatal("an ended connection still has an epoch")
	}
	// The broker lost the session: a new epoch, kept for the next restart.
	if err := e.connected(c1, false); err != nil {
		t.Fatal(err)
	}
	second := e.of(c1)
	if second == first {
		t.Fatal("a new session kept the old epoch")
	}
	e = newLocalEpoch(path)
	if err := e.load(); err != nil || e.value != second {
		t.Fatalf("restored %d (%v), want %d", e.value, err, second)
	}
	// A damaged file is a new epoch, not an error.
	os.WriteFile(path, []byte("zz"), 0o600)
	if err := newLocalEpoch(path).load(); err != nil {
		t.Fatal(err)
	}
}

func TestValidOrigin(t *testing.T) {
	for o, want := range map[string]bool{"b1": true, "": false, "a/b": false, "+": false,
		strings.Repeat("a", maxOriginBytes+1): false, "node-7.example": true} {
		if validOrigin(o) != want {
			t.Errorf("validOrigin(%q) = %v, want %v", o, !want, want)
		}
	}
}
