// dedupe.go owns the receiving side of exactly once: the window of relay identities this agent
// republished, per origin node, kept across a kill -9 in a ring file beside the state file, and
// for QoS 2 the local packet id each was republished with. It decides, for each relay of a
// batch, whether to republish it, send it again with the same packet id, release it, wait for
// a copy in flight, or drop it as a repeat (relayin.go carries the decision out).
//
// Why the packet id: an agent killed after it republished a QoS 2 message and before its
// broker's PUBREC cannot know whether the broker holds it. The relay comes back (it was not
// acknowledged); republishing it with a new packet id would deliver it twice when the broker
// held the first, and dropping it would lose it when the broker did not. Sent again with the
// same packet id and DUP on the same persistent session, the broker recognises a QoS 2 message
// it holds and does not deliver it again (Mosquitto 2.0 handle__publish: db__message_store_find
// on the client's incoming messages, same topic, QoS and payload). And once the broker
// acknowledged it (PUBREC), which the window records before PUBREL is sent, a repeat is only
// released again (PUBREL, idempotent) or dropped.

package bridge

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"mosquitto-ha/bridge/mqttconn"
)

// relayID is a relay's identity within its origin (doc.go): the epoch of the origin agent's
// local session, the packet id its broker delivered the publish with, and a 64-bit FNV-1a hash
// of topic and payload computed here.
type relayID struct {
	epoch uint64
	mid   uint16
	hash  uint64
}

// relayHash is FNV-1a 64 over topic, a zero byte and payload, without allocating.
func relayHash(topic string, payload []byte) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(topic); i++ {
		h = (h ^ uint64(topic[i])) * prime
	}
	h *= prime // the zero byte between them
	for _, c := range payload {
		h = (h ^ uint64(c)) * prime
	}
	return h
}

// States of a window entry.
const (
	seenEmpty    byte = iota
	seenSent          // republished; a QoS 2 one may be held by the broker under lid
	seenReleased      // QoS 2: the broker holds it (PUBREC came); PUBREL may have been sent
	seenDone          // acknowledged by the broker (PUBACK, PUBCOMP)
)

// seenEntry is one slot of a window: 32 bytes, what the file holds of it. What only this
// process needs, for the few entries with a step in flight, is in seenWindow.pending.
type seenEntry struct {
	id    relayID
	seq   uint32 // order of recording; 0 = empty slot
	state byte
	qos   byte
	lid   uint16 // the local packet id of a QoS 2 republish
}

// seenPending is a window entry while a republish, resend or release of it is in flight: the
// connection the step runs on, and the acknowledgements of repeats that wait for it.
type seenPending struct {
	on      *mqttconn.Conn
	waiters []func()
}

// seenWindow is the ring of the last entries from one origin, and its file.
type seenWindow struct {
	origin  string
	size    int         // slots at most
	slots   []seenEntry // grows to size as entries come, then a ring
	index   seenIndex
	pending map[int32]seenPending // slots with a step in flight (busy)
	next    int
	seq     uint32
	f       *os.File // nil: memory only
	dirty   []int32  // slots changed since the last write
	buf     []byte   // records being written
}

// busy says whether slot i has a step in flight.
func (w *seenWindow) busy(i int32) bool {
	_, ok := w.pending[i]
	return ok
}

// grow makes room for one more slot, at most size: the capacity doubles (the index with it) so
// a full window holds no spare slots.
func (w *seenWindow) grow() {
	if len(w.slots) < cap(w.slots) {
		w.slots = w.slots[:len(w.slots)+1]
		return
	}
	slots := make([]seenEntry, len(w.slots)+1, min(w.size, max(64, 2*cap(w.slots))))
	copy(slots, w.slots)
	w.slots = slots
	w.index.rehash(w.slots, cap(w.slots))
}

// Record layout of a window file: a header record, then one record per slot.
//
//	header: "MHSEEN01", slots uint32, 16 zero bytes, crc32c of the first 28 bytes
//	slot:   seq uint32, state byte, qos byte, lid uint16, epoch uint64, mid uint16,
//	        hash uint64, 2 zero bytes, crc32c of the first 28 bytes
//
// A record is written with one write(2) per run of slots, which reaches the page cache before
// it returns: it survives a kill -9 of the agent without an fsync (not a power loss, after which
// the broker's sessions are gone too unless it saved them). A torn record fails its checksum
// and counts as empty.
const (
	seenRecord = 32
	seenMagic  = "MHSEEN01"
)

// dedupe holds the windows of every origin. Safe for concurrent use.
type dedupe struct {
	base string // window files are base + ".seen." + hex(origin); "" keeps them in memory
	size int    // slots per origin
	log  *slog.Logger

	mu      sync.Mutex
	windows map[string]*seenWindow
	conn    *mqttconn.Conn // the local connection of the latest connected
	failed  bool           // a write failed: reported once until one succeeds
}

// dedupeDirtyMax bounds the acknowledged republishes not yet marked done in the file: one write
// per this many acknowledgements at most.
const dedupeDirtyMax = 16

// maxDedupeOrigins bounds the windows (one per origin node that sent a batch); relays of
// origins beyond it are republished without dedupe.
const maxDedupeOrigins = 256

func newDedupe(base string, size int, log *slog.Logger) *dedupe {
	return &dedupe{base: base, size: size, log: log, windows: map[string]*seenWindow{}}
}

// load reads every window file beside the state file. A file that cannot be read stops the
// agent (ErrStateUnreadable); damaged records count as empty.
func (d *dedupe) load() error {
	if d.base == "" {
		return nil
	}
	names, err := filepath.Glob(globEscape(d.base) + ".seen.*")
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, name := range names {
		o, err := hex.DecodeString(strings.TrimPrefix(name, d.base+".seen."))
		if err != nil || !validOrigin(string(o)) || len(d.windows) >= maxDedupeOrigins {
			continue
		}
		if _, err := d.openLocked(string(o)); err != nil {
			return err
		}
	}
	return nil
}

// validOrigin says whether a batch topic's node name can have a window: one topic level of at
// most maxOriginBytes (node names in the cluster file are short).
func validOrigin(o string) bool {
	return o != "" && len(o) <= maxOriginBytes && !strings.ContainsAny(o, "/+#\x00")
}

// maxOriginBytes bounds a node name with a window (its file name is twice as long).
const maxOriginBytes = 100

func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}

// openLocked returns the window of origin, reading or creating its file.
func (d *dedupe) openLocked(origin string) (*seenWindow, error) {
	if w := d.windows[origin]; w != nil {
		return w, nil
	}
	if len(d.windows) >= maxDedupeOrigins {
		return nil, nil
	}
	w := &seenWindow{origin: origin, size: d.size, pending: map[int32]seenPending{}}
	d.windows[origin] = w
	if d.base == "" {
		return w, nil
	}
	f, err := os.OpenFile(d.base+".seen."+hex.EncodeToString([]byte(origin)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("%w: %w", ErrStateUnreadable, err)
		}
		d.log.Warn("dedupe window file cannot be opened, kept in memory", "origin", origin, "err", err)
		return w, nil
	}
	w.f = f
	buf, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStateUnreadable, err)
	}
	if !w.readFile(buf) {
		// New, or written with another window size: start empty with a fresh header.
		w.slots = nil
		w.index = seenIndex{}
		w.next, w.seq = 0, 0
		hdr := make([]byte, seenRecord)
		copy(hdr, seenMagic)
		binary.BigEndian.PutUint32(hdr[8:], uint32(d.size))
		binary.BigEndian.PutUint32(hdr[28:], crc32.Checksum(hdr[:28], crcTable))
		if err := f.Truncate(0); err == nil {
			_, err = f.WriteAt(hdr, 0)
		}
		if err != nil {
			d.log.Warn("dedupe window file cannot be written, kept in memory", "origin", origin, "err", err)
			f.Close()
			w.f = nil
		}
	}
	return w, nil
}

// readFile restores the window from a file's bytes; false when its header does not match.
func (w *seenWindow) readFile(buf []byte) bool {
	if len(buf) < seenRecord || string(buf[:8]) != seenMagic ||
		binary.BigEndian.Uint32(buf[8:]) != uint32(w.size) ||
		binary.BigEndian.Uint32(buf[28:]) != crc32.Checksum(buf[:28], crcTable) {
		return false
	}
	buf = buf[seenRecord:]
	w.slots = make([]seenEntry, min(w.size, len(buf)/seenRecord))
	w.index.reset(len(w.slots))
	last := -1
	for i := range w.slots {
		off := i * seenRecord
		if off+seenRecord > len(buf) {
			break
		}
		r := buf[off : off+seenRecord]
		if binary.BigEndian.Uint32(r[28:]) != crc32.Checksum(r[:28], crcTable) {
			continue
		}
		e := seenEntry{seq: binary.BigEndian.Uint32(r), state: r[4], qos: r[5],
			lid: binary.BigEndian.Uint16(r[6:]),
			id: relayID{epoch: binary.BigEndian.Uint64(r[8:]), mid: binary.BigEndian.Uint16(r[16:]),
				hash: binary.BigEndian.Uint64(r[18:])}}
		if e.seq == 0 || e.state == seenEmpty || e.state > seenDone {
			continue
		}
		w.slots[i] = e
		if j, ok := w.index.find(w.slots, e.id); !ok || w.slots[j].seq < e.seq {
			w.index.put(w.slots, e.id, int32(i))
		}
		if e.seq > w.seq {
			w.seq, last = e.seq, i
		}
	}
	if len(w.slots) < w.size {
		w.next = len(w.slots)
	} else {
		w.next = (last + 1) % w.size
	}
	return true
}

// encode appends slot i as its file record.
func (w *seenWindow) encode(b []byte, i int) []byte {
	e := &w.slots[i]
	n := len(b)
	b = append(b, make([]byte, seenRecord)...)
	r := b[n:]
	binary.BigEndian.PutUint32(r[0:], e.seq)
	r[4], r[5] = e.state, e.qos
	binary.BigEndian.PutUint16(r[6:], e.lid)
	binary.BigEndian.PutUint64(r[8:], e.id.epoch)
	binary.BigEndian.PutUint16(r[16:], e.id.mid)
	binary.BigEndian.PutUint64(r[18:], e.id.hash)
	binary.BigEndian.PutUint32(r[28:], crc32.Checksum(r[:28], crcTable))
	return b
}

// flushLocked writes the dirty slots of w, one write per run of adjacent slots.
func (d *dedupe) flushLocked(w *seenWindow) {
	if len(w.dirty) == 0 {
		return
	}
	if w.f == nil {
		w.dirty = w.dirty[:0]
		return
	}
	slices.Sort(w.dirty)
	w.dirty = slices.Compact(w.dirty)
	buf := w.buf
	var err error
	for i := 0; i < len(w.dirty) && err == nil; {
		j := i + 1
		for j < len(w.dirty) && w.dirty[j] == w.dirty[j-1]+1 {
			j++
		}
		buf = buf[:0]
		for k := i; k < j; k++ {
			buf = w.encode(buf, int(w.dirty[k]))
		}
		_, err = w.f.WriteAt(buf, int64(w.dirty[i]+1)*seenRecord)
		i = j
	}
	w.buf = buf[:0]
	w.dirty = w.dirty[:0]
	switch {
	case err != nil && !d.failed:
		d.failed = true
		d.log.Warn("dedupe window cannot be written: relays repeated after an agent restart may be republished twice", "origin", w.origin, "err", err)
	case err == nil && d.failed:
		d.failed = false
		d.log.Info("dedupe window written again", "origin", w.origin)
	}
}

// writeLocked writes slot i of w at once.
func (d *dedupe) writeLocked(w *seenWindow, i int32) {
	if w.f == nil {
		return
	}
	w.buf = w.encode(w.buf[:0], int(i))
	if _, err := w.f.WriteAt(w.buf, int64(i+1)*seenRecord); err != nil {
		w.dirty = append(w.dirty, i) // tried again with the next batch
		if !d.failed {
			d.failed = true
			d.log.Warn("dedupe window cannot be written: relays repeated after an agent restart may be republished twice", "origin", w.origin, "err", err)
		}
	}
}

// Kinds of dedupe decisions.
const (
	dedupePlain   = iota // no identity: republish as it comes
	dedupePublish        // new: republish (QoS 2 with the held local id lid)
	dedupeResend         // QoS 2 not known to have reached the broker: same lid, DUP
	dedupeRelease        // QoS 2 the broker holds: PUBREL for lid
	dedupeWait           // a copy is in flight: acknowledged when it is
	dedupeDrop           // a repeat already delivered: acknowledge only
)

// dedupeStep is the decision for one relay of a batch.
type dedupeStep struct {
	kind int
	lid  uint16
	ref  seenRef
}

// seenRef names a window slot as it was when the step was decided, and the connection the
// step runs on.
type seenRef struct {
	w    *seenWindow
	slot int32
	seq  uint32
	conn *mqttconn.Conn
}

// connected runs before anything is read from a new local connection (mqttconn.Link.Prepare).
// With the session kept, it holds the packet ids of the QoS 2 republishes the broker may still
// hold, so no other publish takes them, and releases those it acknowledged (PUBREL again:
// [MQTT-4.4.0-1]). With a new session the broker holds none of them: a republish it had not
// acknowledged is forgotten (a repeat republishes it anew), one it had is done.
func (d *dedupe) connected(c *mqttconn.Conn, sessionPresent bool) {
	var release []func() // after the lock: a completion may run at once, and takes it
	defer func() {
		for _, f := range release {
			f()
		}
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.conn = c
	for _, w := range d.windows {
		// Steps in flight ran on an ended connection: the broker sends their forward
		// publishes (and those waiting for them) again on this one.
		clear(w.pending)
		for i := range w.slots {
			e := &w.slots[i]
			if e.seq == 0 || e.qos != 2 || (e.state != seenSent && e.state != seenReleased) {
				continue
			}
			switch {
			case !sessionPresent && e.state == seenSent:
				w.index.remove(w.slots, e.id, int32(i))
				*e = seenEntry{}
				w.dirty = append(w.dirty, int32(i))
			case !sessionPresent:
				e.state = seenDone
				w.dirty = append(w.dirty, int32(i))
			case e.state == seenSent:
				c.Hold(e.lid)
			default:
				ref := seenRef{w: w, slot: int32(i), seq: e.seq, conn: c}
				w.pending[int32(i)] = seenPending{on: c}
				lid := e.lid
				release = append(release, func() { c.Release(lid, func(err error) { d.finish(ref, err) }) })
			}
		}
		d.flushLocked(w)
	}
}

// admit decides what to do with each relay of one forward publish from src; dup is the DUP flag
// of that publish (the local broker sent it before, to this agent or to an earlier run of it).
// It records the new ones in the window, written before any is republished. ack is called for
// every relay whose step is dedupeWait once the copy it waits for is acknowledged. c is the
// local connection the steps are for; nil when it is not the current one any more (nothing to
// do: the broker sends the forward publish again on the next connection).
func (d *dedupe) admit(c *mqttconn.Conn, src relaySource, dup bool, entries []batchEntry, ack func()) []dedupeStep {
	steps := make([]dedupeStep, len(entries))
	identified := false
	for _, e := range entries {
		identified = identified || e.identified()
	}
	if src.origin == "" || !identified {
		return steps // all plain
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if c == nil || c != d.conn {
		return nil
	}
	if !validOrigin(src.origin) {
		return steps // all plain
	}
	w, err := d.openLocked(src.origin)
	if err != nil || w == nil {
		return steps
	}
	for i, e := range entries {
		if !e.identified() {
			continue // plain
		}
		id := relayID{epoch: src.epoch, mid: e.MID, hash: relayHash(e.Topic, e.Payload)}
		if j, ok := w.index.find(w.slots, id); ok && (e.Repeat || dup) {
			s := &w.slots[j]
			ref := seenRef{w: w, slot: j, seq: s.seq, conn: c}
			p, busy := w.pending[j]
			switch {
			case busy:
				steps[i] = dedupeStep{kind: dedupeWait}
				p.waiters = append(p.waiters, ack)
				w.pending[j] = p
			case s.state == seenDone:
				steps[i] = dedupeStep{kind: dedupeDrop}
			case s.state == seenReleased && e.QoS == 2 && s.qos == 2:
				w.pending[j] = seenPending{on: c}
				steps[i] = dedupeStep{kind: dedupeRelease, lid: s.lid, ref: ref}
			case s.state == seenSent && e.QoS == 2 && s.qos == 2:
				w.pending[j] = seenPending{on: c}
				steps[i] = dedupeStep{kind: dedupeResend, lid: s.lid, ref: ref}
			default: // QoS 1 not known to be acknowledged: republished (at least once)
				w.pending[j] = seenPending{on: c}
				steps[i] = dedupeStep{kind: dedupePublish, ref: ref}
			}
			continue
		}
		var lid uint16
		if e.QoS == 2 {
			if lid = c.HoldNext(); lid == 0 {
				continue // every id in use: cannot happen within the in-flight bounds
			}
		}
		slot := d.recordLocked(c, w, id, e.QoS, lid)
		steps[i] = dedupeStep{kind: dedupePublish, lid: lid, ref: seenRef{w: w, slot: slot, seq: w.slots[slot].seq, conn: c}}
	}
	d.flushLocked(w)
	return steps
}

// identified says whether the window decides about e: a QoS 1/2 relay with a packet id. A
// stamped retained write is not: its stamp orders it (retained.go), so a repeat, carrying the
// same stamp, is dropped there.
func (e *batchEntry) identified() bool { return e.QoS > 0 && e.MID != 0 && !(e.Retain && e.Stamp != 0) }

// recordLocked takes the next slot of w for a new entry, evicting the oldest.
func (d *dedupe) recordLocked(c *mqttconn.Conn, w *seenWindow, id relayID, qos byte, lid uint16) int32 {
	i := w.next
	w.next = (w.next + 1) % w.size
	if i == len(w.slots) {
		w.grow() // still growing
	}
	old := &w.slots[i]
	if old.seq != 0 {
		w.index.remove(w.slots, old.id, int32(i))
		if old.qos == 2 && old.state == seenSent && !w.busy(int32(i)) {
			c.Free(old.lid) // evicted before its repeat came: the id is no longer held
		}
	}
	w.seq++
	w.slots[i] = seenEntry{id: id, seq: w.seq, state: seenSent, qos: qos, lid: lid}
	w.pending[int32(i)] = seenPending{on: c}
	w.index.put(w.slots, id, int32(i))
	w.dirty = append(w.dirty, int32(i))
	return int32(i)
}

// received runs when the broker acknowledged a QoS 2 republish with PUBREC, before PUBREL is
// sent: from then on a repeat is released or dropped, never published again.
func (d *dedupe) received(ref seenRef) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := ref.entry(); s != nil && s.state == seenSent {
		s.state = seenReleased
		d.writeLocked(ref.w, ref.slot) // this record only: the others wait for the next batch
	}
}

// finish ends a step in flight: done when err is nil (the repeats waiting for it are
// acknowledged), otherwise left for the repeat that the broker sends after a reconnect.
func (d *dedupe) finish(ref seenRef, err error) {
	d.mu.Lock()
	s := ref.entry()
	p := ref.w.pendingOf(ref.slot)
	if s == nil || p.on != ref.conn {
		// Reused since, or a step of an ended connection completing after the next one took
		// the entry over (connected): that one finishes it.
		d.mu.Unlock()
		return
	}
	delete(ref.w.pending, ref.slot)
	waiters := p.waiters
	if err == nil {
		s.state = seenDone
		// Written when its batch settles, or with the next few: a kill -9 then finds at most
		// dedupeDirtyMax QoS 1 republishes acknowledged but not marked (sent again: duplicates).
		ref.w.dirty = append(ref.w.dirty, ref.slot)
		if len(ref.w.dirty) >= dedupeDirtyMax {
			d.flushLocked(ref.w)
		}
	}
	d.mu.Unlock()
	if err == nil {
		for _, ack := range waiters {
			ack()
		}
	}
}

// settled runs when every relay of a forward publish from src is acknowledged, before the
// forward publish is: the done states are written then, so a redelivery after a kill drops
// those QoS 1 republishes instead of sending them again.
func (d *dedupe) settled(src relaySource) {
	if src.origin == "" || d.base == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if w := d.windows[src.origin]; w != nil {
		d.flushLocked(w)
	}
}

// pendingOf is what is in flight for slot i; zero when nothing is. A nil window has nothing.
func (w *seenWindow) pendingOf(i int32) seenPending {
	if w == nil {
		return seenPending{}
	}
	return w.pending[i]
}

// entry is the slot ref names, or nil when it was reused since.
func (r seenRef) entry() *seenEntry {
	if r.w == nil {
		return nil
	}
	if s := &r.w.slots[r.slot]; s.seq == r.seq {
		return s
	}
	return nil
}

// close writes what is dirty and closes the files.
func (d *dedupe) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.windows {
		d.flushLocked(w)
		if w.f != nil {
			w.f.Close()
			w.f = nil
		}
	}
}

// seenIndex finds the slot of a relay identity in a window: an open-addressing table of slot
// numbers + 1 (0: empty) with linear probing, at least twice as many cells as the window has
// slots, so 8 bytes per slot where a map[relayID]int32 costs over 40. The identity of a cell is
// that of the slot it names: the window's slots are passed in. An identity has one cell at most.
type seenIndex struct {
	cells []int32
	n     int // identities held
}

// seenIndexMin is the fewest cells of a table.
const seenIndexMin = 8

// reset empties x, sized for slots entries.
func (x *seenIndex) reset(slots int) {
	n := seenIndexMin
	for n < 2*slots {
		n *= 2
	}
	x.cells, x.n = make([]int32, n), 0
}

// rehash sizes x for n entries, keeping every identity on its slot.
func (x *seenIndex) rehash(slots []seenEntry, n int) {
	old := x.cells
	x.reset(n)
	for _, c := range old {
		if c != 0 {
			x.put(slots, slots[c-1].id, c-1)
		}
	}
}

// home is the first cell probed for id.
func (x *seenIndex) home(id relayID) int {
	h := id.hash ^ id.epoch*0x9e3779b97f4a7c15 ^ uint64(id.mid)*0xc2b2ae3d27d4eb4f
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 29
	return int(h & uint64(len(x.cells)-1))
}

// find returns the slot holding id.
func (x *seenIndex) find(slots []seenEntry, id relayID) (int32, bool) {
	if len(x.cells) == 0 {
		return 0, false
	}
	mask := len(x.cells) - 1
	for i := x.home(id); ; i = (i + 1) & mask {
		c := x.cells[i]
		if c == 0 {
			return 0, false
		}
		if slots[c-1].id == id {
			return c - 1, true
		}
	}
}

// put makes slot (which holds id) the one id is found at.
func (x *seenIndex) put(slots []seenEntry, id relayID, slot int32) {
	if 2*(x.n+1) > len(x.cells) {
		x.rehash(slots, x.n+1) // only when a caller did not size it for its slots
	}
	mask := len(x.cells) - 1
	for i := x.home(id); ; i = (i + 1) & mask {
		c := x.cells[i]
		if c == 0 {
			x.cells[i] = slot + 1
			x.n++
			return
		}
		if c-1 == slot || slots[c-1].id == id {
			x.cells[i] = slot + 1
			return
		}
	}
}

// remove forgets id when slot is the one it is found at, shifting back the cells probed past
// it so no probe stops early.
func (x *seenIndex) remove(slots []seenEntry, id relayID, slot int32) {
	if len(x.cells) == 0 {
		return
	}
	mask := len(x.cells) - 1
	i := x.home(id)
	for ; ; i = (i + 1) & mask {
		c := x.cells[i]
		if c == 0 {
			return
		}
		if slots[c-1].id == id {
			if c-1 != slot {
				return
			}
			break
		}
	}
	x.n--
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		c := x.cells[j]
		if c == 0 {
			break
		}
		// The cell at j may move to the hole at i unless its home lies cyclically in (i, j].
		if h := x.home(slots[c-1].id); (j-h)&mask >= (j-i)&mask {
			x.cells[i] = c
			i = j
		}
	}
	x.cells[i] = 0
}

// len is the number of identities held.
func (x *seenIndex) len() int { return x.n }
