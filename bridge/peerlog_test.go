package bridge_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"mosquitto-ha/bridge"
	"mosquitto-ha/sysparse/mosqtest"
)

// lockedBuffer is a log destination shared by the agent's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A peer that cannot be reached is logged at Warn with the reason, once per outage (then at most
// once a minute), not hidden at Debug and not repeated at every redial.
func TestPeerConnectFailureWarns(t *testing.T) {
	closed := mosqtest.FreePort(t) // nothing listens there
	var logs lockedBuffer
	c := newCluster(t, 1, func(_ int, o *bridge.Options) {
		o.Peers = []bridge.PeerAddr{{Name: "gone", Address: fmt.Sprintf("127.0.0.1:%d", closed)}}
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	c.startAgent(0)
	waitFor(t, 5*time.Second, "a Warn naming the peer and the reason", func() string {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, `msg="connect failed"`) &&
				strings.Contains(l, "peer=gone") && strings.Contains(l, "connection refused") {
				return ""
			}
		}
		return logs.String()
	})
	// The link redials every 0.1-5 s; within the minute only the first failure is a Warn.
	time.Sleep(2 * time.Second)
	if n := strings.Count(logs.String(), "peer=gone"); n != 1 {
		t.Errorf("%d log lines for the unreachable peer in 2 s, want 1 (rate limited):\n%s", n, logs.String())
	}
}
