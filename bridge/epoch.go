// epoch.go owns the epoch of the agent's session on its local broker: the number a relay's
// identity carries besides the packet id the broker delivered the publish with (doc.go, relay
// identity). Packet ids only mean something within one broker session, so a new session (the
// CONNACK says session present = 0) gets a new random epoch; the broker's redeliveries to a
// restarted agent in the same session keep theirs, because the epoch is kept in a file beside
// the state file, written atomically. Without a state file it is random per process: a
// redelivery after an agent restart then cannot be recognised by the receivers.

package bridge

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"mosquitto-ha/bridge/mqttconn"
)

// localEpoch is the epoch of each local connection's session.
type localEpoch struct {
	path string // "" keeps none

	mu    sync.Mutex // serialises connected
	value uint64     // the epoch of the current session
	cur   atomic.Pointer[epochConn]
}

// epochConn is the current local connection and the epoch of its session.
type epochConn struct {
	c     *mqttconn.Conn
	epoch uint64
}

func newLocalEpoch(path string) *localEpoch { return &localEpoch{path: path, value: randomEpoch()} }

// load reads the epoch kept at path (nothing to read: the random one of newLocalEpoch, written
// at the first connection). A file that cannot be read is an error: the agent must not start
// with another epoch and relay its broker's redeliveries as new.
func (e *localEpoch) load() error {
	if e.path == "" {
		return nil
	}
	b, err := os.ReadFile(e.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStateUnreadable, err)
	}
	// A torn or foreign file: a new epoch only costs the recognition of the redeliveries.
	if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 64); err == nil && v != 0 {
		e.mu.Lock()
		e.value = v
		e.mu.Unlock()
	}
	return nil
}

// randomEpoch is a random non-zero uint64.
func randomEpoch() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// connected runs before anything is read from a new local connection (mqttconn.Link.Prepare):
// a session the broker did not keep starts a new epoch, written before any of its publishes is
// relayed.
func (e *localEpoch) connected(c *mqttconn.Conn, sessionPresent bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !sessionPresent {
		e.value = randomEpoch()
	}
	e.cur.Store(&epochConn{c: c, epoch: e.value})
	if e.path == "" {
		return nil
	}
	if err := writeFileAtomic(e.path, []byte(strconv.FormatUint(e.value, 16)+"\n")); err != nil {
		// An older epoch left in the file would be taken for this session's after a restart.
		_ = os.Remove(e.path)
		return err
	}
	return nil
}

// of is the epoch of the session a publish arrived on, or 0 when that connection is not the
// current one (its QoS 1/2 publishes are not relayed, see handleLocal).
func (e *localEpoch) of(c *mqttconn.Conn) uint64 {
	if cur := e.cur.Load(); cur != nil && cur.c == c {
		return cur.epoch
	}
	return 0
}
