package bridge

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"mosquitto-ha/sysparse"
)

// journal makes the local interest survive an agent restart without rewriting the whole model
// after every change: the state file (see localInterest.save) is a base, and the journal beside
// it holds every log event applied since. A write per batch of events costs what the batch
// costs, whatever the size of the model; when the journal outgrows the model it is folded into
// a new base. Replaying a journal over a base that already includes part of it gives the same
// state, because every entry sets a subscription, clears one, or clears a client.
//
// Records cannot tear unnoticed: each is one line, "<crc32c of the JSON, 8 hex digits> <JSON>\n"
// (encoding/json never writes a raw newline), and replay skips a line whose checksum does not
// match and goes on with the next. A failed write (a full disk) is cut off again (truncated to
// the last complete record) or, when that fails too, the next write starts with a newline, so a
// torn fragment is one bad line of its own, never glued to the record written again after it.
// Skipping a record loses at most that record: a lost connect or disconnect only keeps more
// interest, and a lost subscribe cannot make the agent forward less, since restored clients
// never count as accounted for (accounting.go) until they connect again in this run.
//
// While the disk refuses writes the agent keeps working with its interest as it is (the journal
// has no say in what is forwarded, see above): the failure is reported once, the entries
// waiting are bounded by maxJournalBuffer, past which they are dropped and the next successful
// write is a whole new base (compaction from the model, which holds every event), so nothing
// stays lost once the disk takes writes again.
type journal struct {
	path    string
	f       journalFile
	buf     []byte
	lines   int
	size    int64 // bytes of complete records in the file
	synced  time.Time
	pending bool // written since the last fsync
	// torn: a failed write may have left a fragment that could not be cut off.
	torn bool
	// lost: entries were dropped (buffer over its bound, or a failed fsync): only a new base
	// makes the files whole again.
	lost bool
	// writeBase writes a new state file (writeFileAtomic; tests inject failures).
	writeBase func(path string, data []byte) error
	// failures counts failed writes since the last success; failedAt is the last one.
	failures int
	failedAt time.Time
}

// journalFile is what the journal needs of its file; tests inject failures through it.
type journalFile interface {
	io.Writer
	Truncate(size int64) error
	Sync() error
	Close() error
}

// maxJournalBuffer bounds the journal entries waiting for a disk that refuses writes.
const maxJournalBuffer = 1 << 20

// journalRetryInterval spaces the attempts to write to a disk that refused a write.
const journalRetryInterval = 2 * time.Second

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrStateUnreadable means the state file or its journal exists but cannot be read (for
// example a permission error): the agent stops rather than start empty and overwrite it.
var ErrStateUnreadable = errors.New("bridge: state file unreadable")

// journalEntry is one record of the journal.
type journalEntry struct {
	Event *sysparse.Event `json:"ev,omitempty"`
	// Op is "malformed" (a subscribe line that did not parse: interest in everything) or
	// "restart" (the broker restarted: clean sessions are gone).
	Op string `json:"op,omitempty"`
	// Own: a connect line of one of the agent's own connections with a client's id.
	Own bool `json:"own,omitempty"`
}

func openJournal(statePath string) (*journal, error) {
	j := &journal{path: statePath + ".journal", writeBase: writeFileAtomic}
	if err := os.MkdirAll(filepath.Dir(j.path), 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(j.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	j.f, j.size = f, st.Size()
	return j, nil
}

// add queues an entry; flush writes the queued entries. Past maxJournalBuffer (a disk that
// refuses writes) the queued entries are dropped and the journal is marked lost.
func (j *journal) add(e journalEntry) {
	if j.lost {
		return // the next base holds it
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	if len(j.buf)+len(b)+10 > maxJournalBuffer {
		j.buf, j.lost = nil, true
		return
	}
	j.buf = appendRecord(j.buf, b)
	j.lines++
}

// appendRecord appends one journal line for the JSON record b.
func appendRecord(buf, b []byte) []byte {
	var sum [4]byte
	c := crc32.Checksum(b, crcTable)
	sum[0], sum[1], sum[2], sum[3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
	buf = hex.AppendEncode(buf, sum[:])
	buf = append(buf, ' ')
	buf = append(buf, b...)
	return append(buf, '\n')
}

// flush writes the queued entries with one write, and fsyncs at most once a second (a killed
// agent loses nothing the kernel has; a power cut loses at most that second). On a failed
// write the entries stay queued for the next flush.
func (j *journal) flush() error {
	if len(j.buf) > 0 {
		data := j.buf
		if j.torn {
			data = append([]byte{'\n'}, j.buf...) // ends the fragment a failed write left
		}
		n, err := j.f.Write(data)
		if err != nil {
			if n > 0 {
				// Cut the fragment off; when that fails too, it stays, and the next write
				// ends it.
				if j.f.Truncate(j.size) != nil {
					j.torn = true
					j.size += int64(n)
				}
			}
			return err
		}
		j.torn = false
		j.size += int64(n)
		j.buf = j.buf[:0]
		j.pending = true
	}
	if j.pending && time.Since(j.synced) >= time.Second {
		j.pending = false
		j.synced = time.Now()
		if err := j.f.Sync(); err != nil {
			// What the kernel held may be gone: only a new base is sure.
			j.lost = true
			return err
		}
	}
	return nil
}

// reset empties the journal after its entries were folded into a new base.
func (j *journal) reset() error {
	j.buf = j.buf[:0]
	j.lines = 0
	if err := j.f.Truncate(0); err != nil {
		return err
	}
	j.size, j.torn, j.lost = 0, false, false
	return nil
}

func (j *journal) close() error { return j.f.Close() }

// replayJournal applies a journal's entries to the model and returns how many it applied and
// how many lines it skipped (a bad checksum: a torn or damaged record). Lines of the earlier
// format (JSON without a checksum) are applied when they parse. An error means the journal
// could not be read at all (ErrStateUnreadable).
func replayJournal(path string, l *localInterest) (applied, skipped int, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: journal %s: %w", ErrStateUnreadable, path, err)
	}
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			continue
		}
		e, ok := parseRecord(line)
		if !ok {
			skipped++
			continue
		}
		switch {
		case e.Event != nil:
			l.Apply(*e.Event)
			l.markOwn(*e.Event, e.Own)
		case e.Op == "malformed":
			l.MalformedSubscribe()
		case e.Op == "restart":
			l.brokerRestarted()
		}
		applied++
	}
	return applied, skipped, nil
}

// parseRecord reads one journal line: "<crc> <json>", or a bare JSON line of the earlier format.
func parseRecord(line []byte) (journalEntry, bool) {
	var e journalEntry
	body := line
	if len(line) > 9 && line[8] == ' ' && line[0] != '{' {
		var sum [4]byte
		if _, err := hex.Decode(sum[:], line[:8]); err != nil {
			return e, false
		}
		body = line[9:]
		want := uint32(sum[0])<<24 | uint32(sum[1])<<16 | uint32(sum[2])<<8 | uint32(sum[3])
		if crc32.Checksum(body, crcTable) != want {
			return e, false
		}
	}
	if err := json.Unmarshal(body, &e); err != nil || (e.Event == nil && e.Op == "") {
		return e, false
	}
	return e, true
}

// restoreState loads the state file and replays its journal, then starts a new base. A file
// that cannot be read stops the agent (ErrStateUnreadable); a corrupt one is kept aside as
// <path>.corrupt and the agent starts from what it could read.
func (a *Agent) restoreState() error {
	path := a.opts.StatePath
	restored, err := a.model.restore(path, a.opts.Node)
	if errors.Is(err, ErrStateUnreadable) {
		return err
	}
	if err != nil {
		a.log.Warn("state file unusable, starting without it (kept as .corrupt)", "err", err)
		a.keepAside(path)
	}
	replayed, skipped, err := replayJournal(path+".journal", a.model)
	if err != nil {
		return err
	}
	if skipped > 0 {
		a.log.Warn("state journal: damaged records skipped (kept as .corrupt)", "skipped", skipped, "replayed", replayed)
		a.keepAside(path + ".journal")
	}
	if restored || replayed > 0 {
		a.log.Info("interest restored from state file", "path", path, "journal_entries", replayed, "filters", a.model.tree.Len())
	}
	a.model.ownConnsClosed()
	a.model.Ambiguous, a.model.Truncated, a.model.Malformed = 0, 0, 0
	a.model.Drain()
	if a.journal, err = openJournal(path); err != nil {
		return fmt.Errorf("state journal: %w", err)
	}
	a.compactState() // fold the replayed journal into a fresh base
	for id, c := range a.model.clients {
		if c.Connected {
			a.parser.Remember(id) // lets the parser split lines of clients with spaces in ids
		}
	}
	return nil
}

// keepAside copies a damaged state file to <path>.corrupt before a new base replaces it.
func (a *Agent) keepAside(path string) {
	if data, err := os.ReadFile(path); err == nil {
		_ = os.WriteFile(path+".corrupt", data, 0o600)
	}
}

// compactState writes the whole model as the new base and empties the journal.
func (a *Agent) compactState() bool {
	data, err := a.model.encode(a.opts.Node)
	if err == nil {
		err = a.journal.writeBase(a.opts.StatePath, data)
	}
	if err != nil {
		a.stateFailed(err)
		return false
	}
	if err := a.journal.reset(); err != nil {
		a.stateFailed(err)
		return false
	}
	return true
}

// persistState runs after each batch: it writes the batch's journal entries, or a new base when
// the journal outgrew the model or lost entries. After a failure it tries again at most every
// journalRetryInterval, and it reports a failure once until a write succeeds again.
func (a *Agent) persistState() {
	j := a.journal
	if j.failures > 0 && time.Since(j.failedAt) < journalRetryInterval {
		if j.lost || len(j.buf) > 0 {
			return
		}
	}
	var ok bool
	// Fold the journal into a new base once it outgrows the model: rare, since at 1,000
	// changes a second a model of 100k subscriptions is rewritten every few minutes.
	if j.lost || j.lines > max(10000, 2*a.model.subscriptions()) {
		ok = a.compactState()
	} else if err := j.flush(); err != nil {
		a.stateFailed(err)
	} else {
		ok = true
	}
	if ok && j.failures > 0 {
		a.log.Info("state file written again", "failed_attempts", j.failures, "path", a.opts.StatePath)
		j.failures = 0
	}
}

// stateFailed reports a failed state write, once until the next success.
func (a *Agent) stateFailed(err error) {
	j := a.journal
	if j.failures == 0 {
		a.log.Warn("state file cannot be written: keeping the interest in memory (entries are bounded; a new base is written once the disk takes writes again)",
			"path", a.opts.StatePath, "err", err, "buffered_bytes", len(j.buf))
	}
	j.failures++
	j.failedAt = time.Now()
}
