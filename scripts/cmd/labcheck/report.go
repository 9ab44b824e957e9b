// The report: the JSON the run prints, and analyse, which turns what was recorded into losses,
// dead letters, stranded messages, reception gaps and recovery times.

package main

import (
	"sort"
	"time"
)

type mark struct {
	Label string `json:"label"`
	t     time.Time
	// UnixMs is when labcheck read the mark.
	UnixMs int64 `json:"unix_ms"`
	// LongestGapMs is the outage that followed the mark: the longest reception gap that began
	// after it (less one gap threshold: the mark may be read just after the fault) and before
	// the next mark. 0: no gap longer than the threshold.
	LongestGapMs int64 `json:"longest_gap_ms"`
	// RecoverMs is when the subscriber received again, counted from the mark: the end of that
	// outage, or without one the first arrival of a message published after the mark
	// (-1: nothing arrived).
	RecoverMs int64 `json:"recover_ms"`
	// Duplicates are the repeated live deliveries that arrived after this mark and before the
	// next one: what the fault the mark names cost in duplicates.
	Duplicates int `json:"duplicates"`
	// DuplicatesResent: of those, the ones the publisher caused (see report.DuplicatesResent).
	DuplicatesResent int `json:"duplicates_resent"`
	// DupOldestMs is how long before the mark the subscriber had first received the oldest of
	// those duplicates (0: none, or all first received after the mark): the time side of the
	// duplicate bound.
	DupOldestMs int64 `json:"dup_oldest_ms"`
	// Published counts the messages published after this mark and before the next one;
	// Received, Lost, LostOnSurvivors and Stranded are the run's figures of those messages.
	Published       int `json:"published"`
	Received        int `json:"received"`
	Lost            int `json:"lost"`
	LostOnSurvivors int `json:"lost_on_survivors"`
	Stranded        int `json:"stranded"`
}

type connInfo struct {
	Conn   int64  `json:"conn"`
	Broker string `json:"broker"`
	// Via is the HAProxy host the connection came through (source address in the broker's log).
	Via    string `json:"via,omitempty"`
	UnixMs int64  `json:"unix_ms"`
}

type gap struct {
	StartUnixMs int64 `json:"start_unix_ms"`
	EndUnixMs   int64 `json:"end_unix_ms"`
	Ms          int64 `json:"ms"`
	// Open: the subscriber never received a new message again before the publisher stopped
	// (EndUnixMs is the last send, Ms counts up to it).
	Open bool `json:"open,omitempty"`
}

type report struct {
	Run       string  `json:"run"`
	SubID     string  `json:"sub_id"`
	PubID     string  `json:"pub_id"`
	SubBroker string  `json:"sub_broker"`
	PubBroker string  `json:"pub_broker"`
	Rate      float64 `json:"rate"`
	// Subscribe is "every" (the subscriber subscribes on every connection) or "once" (it
	// subscribed on its first connection and never again).
	Subscribe   string `json:"subscribe"`
	WarmupMs    int64  `json:"warmup_ms"`
	StartUnixMs int64  `json:"start_unix_ms"`
	StopUnixMs  int64  `json:"stop_unix_ms"`
	EndUnixMs   int64  `json:"end_unix_ms"`
	// Sent is how many messages were published, Acked how many got a PUBACK.
	Sent  int `json:"sent"`
	Acked int `json:"acked"`
	// Received counts distinct sequence numbers, Deliveries every arrival.
	Received   int `json:"received"`
	Deliveries int `json:"deliveries"`
	Duplicates int `json:"duplicates"`
	// DuplicatesResent are the duplicates of messages the publisher sent on a connection that
	// broke before their PUBACK came, and sent again on a later one [MQTT-4.4.0-1]: the first
	// copy may have reached a broker anyway (TCP delivers what it buffered once a cut link
	// heals), and then one broker delivers the message twice as well. QoS 1 is at least once;
	// these are the publisher's, the rest (Duplicates less these) the cluster's.
	DuplicatesResent int `json:"duplicates_resent"`
	// DuplicatesBeforeMarks arrived before the first mark (no fault to blame).
	DuplicatesBeforeMarks int `json:"duplicates_before_marks"`
	// ReceivedUnacked arrived without a PUBACK reaching the publisher (harmless: QoS 1 is at
	// least once).
	ReceivedUnacked int `json:"received_unacked"`
	// WaitingInLeftSessions counts the messages the return visits found in the persistent
	// sessions the subscriber had left on other brokers (not in Deliveries); Stranded are the
	// acknowledged ones among them that the subscriber had not received: routed only to a
	// session it had left, delivered when it came back. Neither is lost.
	WaitingInLeftSessions int            `json:"waiting_in_left_sessions"`
	Stranded              int            `json:"stranded"`
	StrandedOn            map[string]int `json:"stranded_on,omitempty"`
	StrandedSeqs          []uint64       `json:"stranded_seqs,omitempty"`
	// Lost were acknowledged and never received, not even from a session the subscriber left,
	// and are no dead letters.
	Lost     int      `json:"lost"`
	LostSeqs []uint64 `json:"lost_seqs,omitempty"`
	// DeadLetters were acknowledged, never received, and routed only to the --dead broker.
	DeadBroker     string   `json:"dead_broker,omitempty"`
	DeadLetters    int      `json:"dead_letters"`
	DeadLetterSeqs []uint64 `json:"dead_letter_seqs,omitempty"`
	// DeadPubSide were accepted by the dead broker itself, DeadSubSide routed to the
	// subscriber's session on it: DeadSubQueued published before the first mark (the fault),
	// so possibly queued inside the broker when it died, DeadSubNoSession published after it,
	// while the subscriber had no live session anywhere (buffered for the dead broker by the
	// publisher's agent, or published before the new subscription took effect).
	DeadPubSide      int `json:"dead_pub_side"`
	DeadSubSide      int `json:"dead_sub_side"`
	DeadSubQueued    int `json:"dead_sub_queued"`
	DeadSubNoSession int `json:"dead_sub_no_session"`
	// LostOnSurvivors were acknowledged on a publisher connection to a broker other than the
	// --dead one and never received, neither live nor from a session the subscriber left: Lost
	// plus the subscriber-side dead letters. A cluster whose sessions follow their client owes
	// every one of them (issue 13); the subscriber-side window excuses none.
	LostOnSurvivors     int      `json:"lost_on_survivors"`
	LostOnSurvivorsSeqs []uint64 `json:"lost_on_survivors_seqs,omitempty"`
	// The duplicate bound (--dup-bound-msgs, --dup-bound-age; -1 and 0: not checked) and
	// whether every mark kept it: at most DupBoundMsgs duplicates per mark, none of a message
	// first received more than DupBoundAgeMs before the mark.
	DupBoundMsgs       int        `json:"dup_bound_msgs"`
	DupBoundAgeMs      int64      `json:"dup_bound_age_ms"`
	DupBoundOK         bool       `json:"dup_bound_ok"`
	DupBoundViolations []string   `json:"dup_bound_violations,omitempty"`
	Invalid            int        `json:"invalid"`
	GapThresholdMs     int64      `json:"gap_threshold_ms"`
	Gaps               []gap      `json:"gaps"`
	Marks              []mark     `json:"marks"`
	SubConnections     []connInfo `json:"sub_connections"`
	PubConnections     []connInfo `json:"pub_connections"`
	LatencyP50Ms       float64    `json:"latency_p50_ms"`
	LatencyP99Ms       float64    `json:"latency_p99_ms"`
	LatencyMaxMs       float64    `json:"latency_max_ms"`
}

type analysisInput struct {
	sent                     []time.Time
	sentOn                   []int64 // by seq: the publisher's connection when sent (0: none up; nil: not known)
	acks                     map[uint64]ack
	arrivals                 []arrival
	invalid                  int
	subConns, pubConns       map[int64]connInfo
	dead                     string
	interval, gap            time.Duration
	marks                    []mark
	start, stopPub, finished time.Time
	warmup                   time.Duration
	subBroker, pubBroker     string
	subID, pubID, run        string
	rate                     float64
	subscribe                string
	// dupMsgs < 0 and dupAge <= 0: the duplicate bound is not checked.
	dupMsgs int
	dupAge  time.Duration
}

// resent reports whether the publisher sent seq on a connection that broke before its PUBACK
// came (the PUBACK came on a later one): it sent the message again there.
func (in analysisInput) resent(seq uint64) bool {
	a, acked := in.acks[seq]
	return acked && seq < uint64(len(in.sentOn)) && in.sentOn[seq] > 0 && a.conn > in.sentOn[seq]
}

// maxSeqs bounds the sequence lists in the report.
const maxSeqs = 50

func analyse(in analysisInput) *report {
	r := &report{
		Run: in.run, SubID: in.subID, PubID: in.pubID, SubBroker: in.subBroker, PubBroker: in.pubBroker,
		Rate: in.rate, Subscribe: in.subscribe, WarmupMs: in.warmup.Milliseconds(), StartUnixMs: in.start.UnixMilli(),
		StopUnixMs: in.stopPub.UnixMilli(), EndUnixMs: in.finished.UnixMilli(),
		Sent: len(in.sent) - 1, Acked: len(in.acks),
		Invalid: in.invalid, DeadBroker: in.dead, Gaps: []gap{}, Marks: []mark{},
		DupBoundMsgs: in.dupMsgs, DupBoundAgeMs: in.dupAge.Milliseconds(),
	}
	if r.Subscribe == "" {
		r.Subscribe = subscribeEvery
	}
	sort.SliceStable(in.arrivals, func(i, j int) bool { return in.arrivals[i].t.Before(in.arrivals[j].t) })
	// Messages collected on return visits are counted apart: they never reached the live
	// subscriber during the run.
	var live []arrival
	waiting := map[uint64]string{}
	for _, a := range in.arrivals {
		if a.visit == "" {
			live = append(live, a)
			continue
		}
		r.WaitingInLeftSessions++
		if _, seen := waiting[a.seq]; !seen {
			waiting[a.seq] = a.visit
		}
	}
	in.arrivals = live
	r.Deliveries = len(live)
	first := map[uint64]arrival{}
	var firsts []arrival
	var lat []float64
	sort.SliceStable(in.marks, func(i, j int) bool { return in.marks[i].t.Before(in.marks[j].t) })
	for _, a := range in.arrivals {
		if _, dup := first[a.seq]; dup {
			r.Duplicates++
			resent := in.resent(a.seq)
			if resent {
				r.DuplicatesResent++
			}
			// Blamed on the last mark at or before its arrival.
			i := sort.Search(len(in.marks), func(i int) bool { return in.marks[i].t.After(a.t) }) - 1
			if i < 0 {
				r.DuplicatesBeforeMarks++
			} else {
				in.marks[i].Duplicates++
				if resent {
					in.marks[i].DuplicatesResent++
				}
				if age := in.marks[i].t.Sub(first[a.seq].t).Milliseconds(); age > in.marks[i].DupOldestMs {
					in.marks[i].DupOldestMs = age
				}
			}
			continue
		}
		first[a.seq] = a
		firsts = append(firsts, a)
		lat = append(lat, float64(a.t.Sub(a.sent).Microseconds())/1000)
		if _, acked := in.acks[a.seq]; !acked {
			r.ReceivedUnacked++
		}
	}
	r.Received = len(first)
	if len(lat) > 0 {
		sort.Float64s(lat)
		r.LatencyP50Ms = lat[len(lat)/2]
		r.LatencyP99Ms = lat[len(lat)*99/100]
		r.LatencyMaxMs = lat[len(lat)-1]
	}

	// Reception gaps between consecutive first arrivals, while messages were being sent: a
	// message that arrives late after the last send ends no outage.
	threshold := in.gap
	if threshold <= 0 {
		threshold = 3 * in.interval
	}
	r.GapThresholdMs = threshold.Milliseconds()
	lastSent := in.sent[len(in.sent)-1]
	for i := 1; i < len(firsts); i++ {
		if d := firsts[i].t.Sub(firsts[i-1].t); d > threshold && firsts[i-1].t.Before(lastSent) {
			r.Gaps = append(r.Gaps, gap{StartUnixMs: firsts[i-1].t.UnixMilli(), EndUnixMs: firsts[i].t.UnixMilli(), Ms: d.Milliseconds()})
		}
	}
	if n := len(firsts); n > 0 && lastSent.Sub(firsts[n-1].t) > threshold {
		// Nothing new arrived after this while messages were still being sent: an outage that
		// had not ended when the publisher stopped (the subscribe-once subscriber on a broker
		// without its session).
		last := firsts[n-1].t
		r.Gaps = append(r.Gaps, gap{StartUnixMs: last.UnixMilli(), EndUnixMs: lastSent.UnixMilli(), Ms: lastSent.Sub(last).Milliseconds(), Open: true})
	}

	// Marks: the outage that followed each, and when the subscriber received again.
	for i, m := range in.marks {
		m.UnixMs = m.t.UnixMilli()
		from := m.t.Add(-threshold).UnixMilli()
		limit := int64(1<<62 - 1)
		if i+1 < len(in.marks) {
			limit = in.marks[i+1].t.UnixMilli()
		}
		var outage *gap
		for j, g := range r.Gaps {
			if g.StartUnixMs >= from && g.StartUnixMs < limit && (outage == nil || g.Ms > outage.Ms) {
				outage = &r.Gaps[j]
			}
		}
		m.RecoverMs = -1
		switch {
		case outage != nil && outage.Open:
			m.LongestGapMs = outage.Ms
		case outage != nil:
			m.LongestGapMs = outage.Ms
			m.RecoverMs = max(0, outage.EndUnixMs-m.UnixMs)
		default:
			for _, a := range firsts {
				if !a.sent.Before(m.t) && !a.t.Before(m.t) {
					m.RecoverMs = a.t.Sub(m.t).Milliseconds()
					break
				}
			}
		}
		r.Marks = append(r.Marks, m)
	}

	r.SubConnections = sortedConns(in.subConns)
	r.PubConnections = sortedConns(in.pubConns)

	// Dead letters and losses.
	deadSub := subSideWindows(in.arrivals, in.subConns, in.dead)
	var acked []uint64
	for seq := range in.acks {
		acked = append(acked, seq)
	}
	sort.Slice(acked, func(i, j int) bool { return acked[i] < acked[j] })
	missing := map[uint64]string{} // acknowledged, never received live: "stranded", "lost", "dead-sub", "dead-pub"
	for _, seq := range acked {
		if _, got := first[seq]; got {
			continue
		}
		if b, ok := waiting[seq]; ok {
			r.Stranded++
			if r.StrandedOn == nil {
				r.StrandedOn = map[string]int{}
			}
			r.StrandedOn[b]++
			missing[seq] = "stranded"
			if len(r.StrandedSeqs) < maxSeqs {
				r.StrandedSeqs = append(r.StrandedSeqs, seq)
			}
			continue
		}
		a := in.acks[seq]
		pubSide := in.dead != "" && in.pubConns[a.conn].Broker == in.dead
		subSide := false
		for _, w := range deadSub {
			if seq > w[0] && seq < w[1] {
				subSide = true
			}
		}
		if !pubSide {
			r.LostOnSurvivors++
			if len(r.LostOnSurvivorsSeqs) < maxSeqs {
				r.LostOnSurvivorsSeqs = append(r.LostOnSurvivorsSeqs, seq)
			}
		}
		switch {
		case pubSide:
			missing[seq] = "dead-pub"
		case subSide:
			missing[seq] = "dead-sub"
		default:
			missing[seq] = "lost"
		}
		switch {
		case pubSide || subSide:
			r.DeadLetters++
			switch {
			case pubSide:
				r.DeadPubSide++
			case len(in.marks) > 0 && !in.sent[seq].Before(in.marks[0].t):
				r.DeadSubSide++
				r.DeadSubNoSession++
			default:
				r.DeadSubSide++
				r.DeadSubQueued++
			}
			if len(r.DeadLetterSeqs) < maxSeqs {
				r.DeadLetterSeqs = append(r.DeadLetterSeqs, seq)
			}
		default:
			r.Lost++
			if len(r.LostSeqs) < maxSeqs {
				r.LostSeqs = append(r.LostSeqs, seq)
			}
		}
	}
	perMark(r, in, first, missing)
	checkDupBound(r)
	return r
}

func sortedConns(m map[int64]connInfo) []connInfo {
	out := []connInfo{}
	for _, c := range m {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Conn < out[j].Conn })
	return out
}

// subSideWindows returns, for each time the subscriber left the dead broker for another one,
// the open interval (L, F) of sequence numbers routed only to its session on the dead broker:
// L the highest sequence received up to its last connection to the dead broker, F the lowest
// received on the connections that followed, up to its next connection to the dead broker.
// Connections whose broker is unknown count as not the dead broker.
func subSideWindows(arrivals []arrival, conns map[int64]connInfo, dead string) [][2]uint64 {
	if dead == "" {
		return nil
	}
	var maxConn int64
	for _, a := range arrivals {
		maxConn = max(maxConn, a.conn)
	}
	for c := range conns {
		maxConn = max(maxConn, c)
	}
	onDead := func(c int64) bool { return conns[c].Broker == dead }
	var out [][2]uint64
	for c := int64(1); c <= maxConn; c++ {
		// c is the last connection of a run of connections to the dead broker?
		if !onDead(c) || onDead(c+1) {
			continue
		}
		next := c + 1
		for next <= maxConn && !onDead(next) {
			next++
		}
		var lo uint64
		hi := uint64(1<<63 - 1)
		found := false
		for _, a := range arrivals {
			switch {
			case a.conn <= c:
				lo = max(lo, a.seq)
			case a.conn < next:
				hi = min(hi, a.seq)
				found = true
			}
		}
		if found {
			out = append(out, [2]uint64{lo, hi})
		}
	}
	return out
}
