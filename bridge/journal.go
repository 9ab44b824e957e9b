package bridge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"mosquitto-ha/sysparse"
)

// journal makes the local interest survive an agent restart without rewriting the whole model
// after every change: the state file (see localInterest.save) is a base, and the journal beside
// it holds, one JSON line each, every log event applied since. A write per batch of events costs
// what the batch costs, whatever the size of the model; when the journal outgrows the model it is
// folded into a new base. Replaying a journal over a base that already includes part of it gives
// the same state, because every entry sets a subscription, clears one, or clears a client.
type journal struct {
	path    string
	f       *os.File
	buf     []byte
	lines   int
	synced  time.Time
	pending bool // written since the last fsync
}

// journalEntry is one line of the journal.
type journalEntry struct {
	Event *sysparse.Event `json:"ev,omitempty"`
	// Op is "malformed" (a subscribe line that did not parse: interest in everything) or
	// "restart" (the broker restarted: clean sessions are gone).
	Op string `json:"op,omitempty"`
}

func openJournal(statePath string) (*journal, error) {
	j := &journal{path: statePath + ".journal"}
	if err := os.MkdirAll(filepath.Dir(j.path), 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(j.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	j.f = f
	return j, nil
}

// add queues an entry; flush writes the queued entries.
func (j *journal) add(e journalEntry) {
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	j.buf = append(append(j.buf, b...), '\n')
	j.lines++
}

// flush writes the queued entries with one write, and fsyncs at most once a second (a killed
// agent loses nothing the kernel has; a power cut loses at most that second).
func (j *journal) flush() error {
	if len(j.buf) > 0 {
		if _, err := j.f.Write(j.buf); err != nil {
			return err
		}
		j.buf = j.buf[:0]
		j.pending = true
	}
	if j.pending && time.Since(j.synced) >= time.Second {
		j.pending = false
		j.synced = time.Now()
		return j.f.Sync()
	}
	return nil
}

// reset empties the journal after its entries were folded into a new base.
func (j *journal) reset() error {
	j.buf = j.buf[:0]
	j.lines = 0
	return j.f.Truncate(0)
}

func (j *journal) close() error { return j.f.Close() }

// replayJournal applies a journal's entries to the model. A truncated last line (a crash in the
// middle of a write) ends the replay; any other bad line is an error.
func replayJournal(path string, l *localInterest) (int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var e journalEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			if !bytes.HasSuffix(data, []byte("\n")) && len(sc.Bytes()) > 0 && !sc.Scan() {
				break // the last line was cut by a crash
			}
			return n, fmt.Errorf("journal %s line %d: %w", path, n+1, err)
		}
		switch {
		case e.Event != nil:
			l.Apply(*e.Event)
		case e.Op == "malformed":
			l.MalformedSubscribe()
		case e.Op == "restart":
			l.brokerRestarted()
		}
		n++
	}
	return n, sc.Err()
}
