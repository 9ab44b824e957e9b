// retainreg.go owns the retained register: for every retained topic, the stamp of the write
// this node holds as the last one (hlc.go) and a hash of its value, kept in memory and in a
// file beside the state file, so a restarted agent still refuses older values.

package bridge

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io/fs"
	"os"
	"sync"
	"time"
)

// retainEntry is the last write of one retained topic this node knows.
type retainEntry struct {
	stamp uint64
	hash  uint64 // valueHash of the write; 0 for a deletion
	// gen is the local broker generation the write was applied in (retainReg.gen).
	gen uint32
}

// deleted reports a tombstone: the last write was a deletion.
func (e retainEntry) deleted() bool { return e.hash == 0 }

// valueHash identifies a retained value: FNV-1a over its QoS and payload, 0 for a deletion (an
// empty payload, whatever its QoS), never 0 otherwise. Two writes with the same stamp are
// ordered by it, so every node breaks the tie the same way without knowing the writer.
func valueHash(qos byte, payload []byte) uint64 {
	if len(payload) == 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte{qos})
	h.Write(payload)
	return max(h.Sum64(), 1)
}

// newerThan orders writes: by stamp, then by value hash.
func newerThan(stamp, hash uint64, e retainEntry) bool {
	return stamp > e.stamp || (stamp == e.stamp && hash > e.hash)
}

// retainReg is the register. Bounds: at most max topics (past it a new topic is not recorded:
// its writes are relayed and applied as they arrive, without ordering, and counted), and a
// tombstone is forgotten tombstoneTTL after its write (a value older than that, held by a
// node that was away longer, can come back). The file is a log of records, one per line:
// "<crc32c of the JSON, 8 hex digits> <JSON>\n" as in journal.go, the last record of a topic
// wins, a line that fails its checksum is skipped; it is rewritten whole (write, fsync,
// rename) when it holds more than twice the live records. A record is written before the
// relay that carried its write is acknowledged; the kernel keeps it through a kill -9, and a
// power cut loses what was not yet written back (no fsync per record).
type retainReg struct {
	mu      sync.Mutex
	m       map[string]retainEntry
	max     int
	ttl     time.Duration
	gen     uint32
	path    string // "" keeps no file
	f       *os.File
	lines   int
	failed  bool // the last write failed; reported once
	maxSeen uint64

	untracked, writeErrors uint64
}

// errRegisterFull marks a topic the register had no room for.
var errRegisterFull = errors.New("bridge: retained register full")

// newRetainReg returns an empty register kept in memory only; open adds its file.
func newRetainReg(maxTopics int, ttl time.Duration) *retainReg {
	return &retainReg{m: map[string]retainEntry{}, max: maxTopics, ttl: ttl}
}

// openRetainReg returns the register kept in the file at path ("" for none).
func openRetainReg(path string, maxTopics int, ttl time.Duration) (*retainReg, error) {
	r := newRetainReg(maxTopics, ttl)
	if err := r.open(path); err != nil {
		return nil, err
	}
	return r, nil
}

// open loads the register file at path ("" for none) over what r holds, and opens it for
// appending. A file that exists but cannot be read wraps ErrStateUnreadable.
func (r *retainReg) open(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.path = path
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("%w: %v", ErrStateUnreadable, err)
	default:
		// Line by line over the whole file: a line that is torn, corrupt or longer than
		// maxRegLine is skipped and the records after it still count (a scanner would stop
		// there, and the rewrite below would make the loss permanent).
		limit := uint64(time.Now().Add(-r.ttl).UnixMilli())
		for len(data) > 0 {
			line := data
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				line, data = data[:i], data[i+1:]
			} else {
				data = nil
			}
			rec, ok := regRecord{}, false
			if len(line) <= maxRegLine {
				rec, ok = parseRegRecord(line)
			}
			if !ok {
				continue
			}
			if rec.Hash == 0 && stampMillis(rec.Stamp) < limit {
				delete(r.m, rec.Topic) // an expired deletion is forgotten (expire), and takes no room
				continue
			}
			if _, known := r.m[rec.Topic]; !known && len(r.m) >= r.max {
				r.untracked++ // the bound holds for the file too
				continue
			}
			r.m[rec.Topic] = retainEntry{stamp: rec.Stamp, hash: rec.Hash}
			r.maxSeen = max(r.maxSeen, rec.Stamp)
		}
	}
	r.expire(time.Now())
	return r.rewrite()
}

// maxRegLine bounds a register file line: a record holds a topic of at most 65,535 bytes,
// JSON-escaped (at most 6 bytes per byte), and two numbers.
const maxRegLine = 6*65535 + 128

// regRecord is one line of the register file.
type regRecord struct {
	Topic string `json:"t"`
	Stamp uint64 `json:"s"`
	Hash  uint64 `json:"h,omitempty"`
}

func parseRegRecord(line []byte) (regRecord, bool) {
	var rec regRecord
	if len(line) < 10 || line[8] != ' ' {
		return rec, false
	}
	var sum [4]byte
	if n, err := hex.Decode(sum[:], line[:8]); err != nil || n != 4 {
		return rec, false
	}
	want := uint32(sum[0])<<24 | uint32(sum[1])<<16 | uint32(sum[2])<<8 | uint32(sum[3])
	body := line[9:]
	if crc32.Checksum(body, crcTable) != want || json.Unmarshal(body, &rec) != nil || rec.Topic == "" {
		return rec, false
	}
	return rec, true
}

// expire forgets tombstones older than the ttl.
func (r *retainReg) expire(now time.Time) {
	limit := uint64(now.Add(-r.ttl).UnixMilli())
	for t, e := range r.m {
		if e.deleted() && stampMillis(e.stamp) < limit {
			delete(r.m, t)
		}
	}
}

// rewrite replaces the file with the live records and reopens it for appending.
func (r *retainReg) rewrite() error {
	if r.path == "" {
		return nil
	}
	var buf []byte
	for t, e := range r.m {
		buf = r.appendRec(buf, t, e)
	}
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	if err := writeFileAtomic(r.path, buf); err != nil {
		return err
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	r.f, r.lines = f, len(r.m)
	return nil
}

func (r *retainReg) appendRec(buf []byte, topic string, e retainEntry) []byte {
	b, _ := json.Marshal(regRecord{Topic: topic, Stamp: e.stamp, Hash: e.hash})
	return appendRecord(buf, b)
}

// get returns the entry of topic, and whether the local broker holds it (it was applied in the
// broker generation of now).
func (r *retainReg) get(topic string) (e retainEntry, ok, held bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok = r.m[topic]
	return e, ok, ok && e.gen == r.gen
}

// set records a write in memory; persist writes it to the file. A topic the register has no
// room for wraps errRegisterFull and is not recorded.
func (r *retainReg) set(topic string, stamp, hash uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[topic]; !ok && len(r.m) >= r.max {
		r.expire(time.Now())
		if len(r.m) >= r.max {
			r.untracked++
			return fmt.Errorf("%w: %d topics", errRegisterFull, len(r.m))
		}
	}
	r.m[topic] = retainEntry{stamp: stamp, hash: hash, gen: r.gen}
	r.maxSeen = max(r.maxSeen, stamp)
	return nil
}

// persist appends the topic's current entry to the file, and compacts the file when it holds
// more than twice the live records. It returns the write error, if any (the entry stays in
// memory; the next compaction writes it).
func (r *retainReg) persist(topic string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[topic]
	if !ok || r.f == nil {
		return nil
	}
	if r.lines > 2*len(r.m)+1024 {
		r.expire(time.Now())
		if err := r.rewrite(); err != nil {
			r.writeErrors++
			return err
		}
		return nil // the rewrite holds it
	}
	if _, err := r.f.Write(r.appendRec(nil, topic, e)); err != nil {
		r.writeErrors++
		r.lines = 1 << 30 // the next persist rewrites the whole file
		return err
	}
	r.lines++
	return nil
}

// newGeneration records that the local broker may have lost its retained messages (its
// session with the agent was gone): entries recorded before are no longer known to be held,
// so an equal write arriving again is applied again.
func (r *retainReg) newGeneration() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
}

// tombstones calls fn for every deletion recorded.
func (r *retainReg) tombstones(fn func(topic string, stamp uint64)) {
	r.mu.Lock()
	var ts []regRecord
	for t, e := range r.m {
		if e.deleted() {
			ts = append(ts, regRecord{Topic: t, Stamp: e.stamp})
		}
	}
	r.mu.Unlock()
	for _, t := range ts {
		fn(t.Topic, t.Stamp)
	}
}

// size is the number of topics recorded.
func (r *retainReg) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

func (r *retainReg) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}
