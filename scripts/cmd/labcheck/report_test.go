package main

import (
	"slices"
	"testing"
	"time"
)

// stream builds the input of analyse: seqs 1..n published every 10 ms from t0, all acknowledged
// on publisher connection 1 (on pubBroker), and received 1 ms after publication on the
// subscriber connection given by recv (0: not received).
func stream(n int, pubBroker string, recv func(seq int) int64) analysisInput {
	t0 := time.Unix(1000, 0)
	in := analysisInput{
		sent:     []time.Time{{}},
		acks:     map[uint64]ack{},
		subConns: map[int64]connInfo{1: {Conn: 1, Broker: "b1"}, 2: {Conn: 2, Broker: "b2"}, 3: {Conn: 3, Broker: "b1"}},
		pubConns: map[int64]connInfo{1: {Conn: 1, Broker: pubBroker}},
		interval: 10 * time.Millisecond,
		start:    t0,
	}
	for seq := 1; seq <= n; seq++ {
		sent := t0.Add(time.Duration(seq) * 10 * time.Millisecond)
		in.sent = append(in.sent, sent)
		in.acks[uint64(seq)] = ack{t: sent.Add(time.Millisecond), conn: 1}
		if c := recv(seq); c != 0 {
			in.arrivals = append(in.arrivals, arrival{seq: uint64(seq), sent: sent, t: sent.Add(time.Millisecond), conn: c})
		}
	}
	return in
}

// movesAt: the subscriber receives 1..10 on b1 (connection 1), nothing until 19, then 20.. on b2.
func movesAt(seq int) int64 {
	switch {
	case seq <= 10:
		return 1
	case seq < 20:
		return 0
	}
	return 2
}

func TestAnalyseDeadLettersOfTheSubscribersBroker(t *testing.T) {
	in := stream(30, "b3", movesAt)
	in.dead = "b1"
	in.marks = []mark{{Label: "fault", t: in.sent[12]}}
	r := analyse(in)
	if r.Lost != 0 || r.DeadLetters != 9 || r.DeadSubQueued != 1 || r.DeadSubNoSession != 8 || r.DeadPubSide != 0 {
		t.Errorf("lost %d dead %d (queued %d, no session %d, pub side %d), want 0 dead 9 (1, 8, 0)",
			r.Lost, r.DeadLetters, r.DeadSubQueued, r.DeadSubNoSession, r.DeadPubSide)
	}
	if want := []uint64{11, 12, 13, 14, 15, 16, 17, 18, 19}; !slices.Equal(r.DeadLetterSeqs, want) {
		t.Errorf("dead letters %v, want %v", r.DeadLetterSeqs, want)
	}
	// The outage: last arrival seq 10 (+1 ms), next seq 20 (+1 ms): 100 ms, over at seq 20's arrival.
	if len(r.Marks) != 1 || r.Marks[0].LongestGapMs != 100 || r.Marks[0].RecoverMs != 81 {
		t.Errorf("marks %+v, want an outage of 100 ms, receiving again 81 ms after the mark", r.Marks)
	}
}

func TestAnalyseWithoutDeadBrokerEverythingMissingIsLost(t *testing.T) {
	r := analyse(stream(30, "b3", movesAt))
	if r.Lost != 9 || r.DeadLetters != 0 {
		t.Errorf("lost %d dead %d, want 9 and 0", r.Lost, r.DeadLetters)
	}
}

func TestAnalyseLossAfterTheMoveIsNoDeadLetter(t *testing.T) {
	in := stream(30, "b3", func(seq int) int64 {
		if seq == 25 {
			return 0
		}
		return movesAt(seq)
	})
	in.dead = "b1"
	r := analyse(in)
	if r.Lost != 1 || !slices.Equal(r.LostSeqs, []uint64{25}) || r.DeadLetters != 9 {
		t.Errorf("lost %v dead %d, want [25] and 9", r.LostSeqs, r.DeadLetters)
	}
}

func TestAnalyseAcceptedByTheDeadBroker(t *testing.T) {
	// The publisher is on b1, which accepted 8..10 and died; the subscriber (b2 throughout)
	// gets the rest.
	in := stream(10, "b1", func(seq int) int64 {
		if seq >= 8 {
			return 0
		}
		return 2
	})
	in.dead = "b1"
	r := analyse(in)
	if r.Lost != 0 || r.DeadLetters != 3 || r.DeadPubSide != 3 {
		t.Errorf("lost %d dead %d pub side %d, want 0, 3, 3", r.Lost, r.DeadLetters, r.DeadPubSide)
	}
}

func TestAnalyseDuplicatesAndNoOutage(t *testing.T) {
	in := stream(10, "b3", func(int) int64 { return 2 })
	in.arrivals = append(in.arrivals, arrival{seq: 3, sent: in.sent[3], t: in.sent[3].Add(5 * time.Millisecond), conn: 2})
	in.marks = []mark{{Label: "fault", t: in.sent[5].Add(-time.Millisecond)}}
	r := analyse(in)
	if r.Received != 10 || r.Deliveries != 11 || r.Duplicates != 1 || r.Lost != 0 || len(r.Gaps) != 0 {
		t.Errorf("received %d deliveries %d duplicates %d lost %d gaps %v", r.Received, r.Deliveries, r.Duplicates, r.Lost, r.Gaps)
	}
	// No outage: receiving again = first message published after the mark, 2 ms later.
	if r.Marks[0].LongestGapMs != 0 || r.Marks[0].RecoverMs != 2 {
		t.Errorf("marks %+v, want no outage and 2 ms", r.Marks)
	}
}

func TestSubSideWindowsBackAndForth(t *testing.T) {
	// b1 (1..10), b2 (20..30), back on b1 (31..40): one window, (10, 20).
	in := stream(40, "b3", func(seq int) int64 {
		switch {
		case seq <= 10:
			return 1
		case seq < 20:
			return 0
		case seq <= 30:
			return 2
		}
		return 3
	})
	w := subSideWindows(in.arrivals, in.subConns, "b1")
	if len(w) != 1 || w[0] != [2]uint64{10, 20} {
		t.Errorf("windows %v, want [[10 20]]", w)
	}
}

func TestAnalyseStrandedInTheSessionLeftBehind(t *testing.T) {
	// The subscriber moved from b1 to b2 (movesAt: 11..19 never arrived live); the return visit
	// to b1 finds 11..30 waiting in the session it left there: 11..19 stranded, 20..30 copies.
	in := stream(30, "b3", movesAt)
	late := in.sent[30].Add(time.Second)
	for seq := 11; seq <= 30; seq++ {
		in.arrivals = append(in.arrivals, arrival{seq: uint64(seq), sent: in.sent[seq], t: late, visit: "b1"})
	}
	r := analyse(in)
	if r.Lost != 0 || r.Stranded != 9 || r.StrandedOn["b1"] != 9 || r.WaitingInLeftSessions != 20 {
		t.Errorf("lost %d stranded %d on %v waiting %d, want 0, 9 on b1, 20", r.Lost, r.Stranded, r.StrandedOn, r.WaitingInLeftSessions)
	}
	// Visits are no live deliveries: received, duplicates and latency see the live ones only.
	if r.Received != 21 || r.Deliveries != 21 || r.Duplicates != 0 || r.LatencyMaxMs != 1 {
		t.Errorf("received %d deliveries %d duplicates %d max latency %v, want 21, 21, 0, 1 ms",
			r.Received, r.Deliveries, r.Duplicates, r.LatencyMaxMs)
	}
	if !slices.Equal(r.StrandedSeqs, []uint64{11, 12, 13, 14, 15, 16, 17, 18, 19}) {
		t.Errorf("stranded %v", r.StrandedSeqs)
	}
}

func TestAnalyseLateMessageAfterTheLastSendEndsNoOutage(t *testing.T) {
	// All on time but 5, which arrives 5 s after the last send: late, not an outage, since
	// nothing was published after the last on-time arrival.
	in := stream(10, "b3", func(int) int64 { return 2 })
	in.arrivals[4].t = in.sent[10].Add(5 * time.Second)
	in.gap = time.Second
	if r := analyse(in); len(r.Gaps) != 0 || r.LatencyMaxMs != 5050 {
		t.Errorf("gaps %v max latency %v, want none and 5050 ms", r.Gaps, r.LatencyMaxMs)
	}
	// Received nothing after 5 (sent before the last send): that is an outage.
	in = stream(10, "b3", func(seq int) int64 { return 2 })
	for i := 5; i < 10; i++ {
		in.arrivals[i].t = in.sent[10].Add(5 * time.Second)
	}
	in.gap = time.Second
	if r := analyse(in); len(r.Gaps) != 1 {
		t.Errorf("gaps %v, want one outage", r.Gaps)
	}
}

func TestBrokersLeft(t *testing.T) {
	conns := map[int64]connInfo{1: {Broker: "b2"}, 2: {Broker: "b1"}, 3: {Broker: ""}, 4: {Broker: "b2"}, 5: {Broker: "b3"}, 6: {Broker: "b1"}}
	for k, c := range conns {
		c.Conn = k
		conns[k] = c
	}
	if got := brokersLeft(conns); !slices.Equal(got, []string{"b2", "b3"}) {
		t.Errorf("brokersLeft %v, want [b2 b3]", got)
	}
	if got := brokersLeft(map[int64]connInfo{1: {Conn: 1, Broker: "b1"}}); len(got) != 0 {
		t.Errorf("one broker: %v, want none", got)
	}
}

func TestAnalyseDuplicatesBlamedOnTheLastMarkBeforeThem(t *testing.T) {
	in := stream(30, "b2", func(int) int64 { return 1 })
	dup := func(seq int, after time.Duration) {
		in.arrivals = append(in.arrivals, arrival{seq: uint64(seq), sent: in.sent[seq], t: in.sent[seq].Add(after), conn: 1})
	}
	dup(2, 2*time.Millisecond)   // before any mark
	dup(12, 2*time.Millisecond)  // after "agent-kill" at seq 10
	dup(13, 2*time.Millisecond)  // idem
	dup(21, 50*time.Millisecond) // after "link-cut" at seq 20
	// Marks arrive in any order; analyse sorts them.
	in.marks = []mark{{Label: "link-cut b1", t: in.sent[20]}, {Label: "agent-kill b2", t: in.sent[10]}}
	r := analyse(in)
	if r.Duplicates != 4 || r.DuplicatesBeforeMarks != 1 {
		t.Fatalf("duplicates %d (before marks %d), want 4 (1)", r.Duplicates, r.DuplicatesBeforeMarks)
	}
	got := map[string]int{}
	for _, m := range r.Marks {
		got[m.Label] = m.Duplicates
	}
	if got["agent-kill b2"] != 2 || got["link-cut b1"] != 1 {
		t.Errorf("duplicates per mark %v, want agent-kill b2: 2, link-cut b1: 1", got)
	}
}

// A duplicate counts as the publisher's only when the publisher sent the message on a connection
// that broke before its PUBACK (acknowledged on a later one); one sent while no connection was
// up, or acknowledged where it was sent, is the cluster's.
func TestAnalyseDuplicatesResentByThePublisher(t *testing.T) {
	in := stream(10, "b1", func(int) int64 { return 1 })
	in.sentOn = make([]int64, 11)
	for seq := 1; seq <= 10; seq++ {
		in.sentOn[seq] = 1
	}
	in.acks[4] = ack{t: in.sent[4].Add(time.Second), conn: 2} // connection 1 broke: sent again on 2
	in.sentOn[5] = 0                                          // sent while none was up: sent once, on 2
	in.acks[5] = ack{t: in.sent[5].Add(time.Second), conn: 2}
	in.marks = []mark{{Label: "fault", t: in.sent[1]}}
	for _, seq := range []int{4, 5, 6} {
		in.arrivals = append(in.arrivals, arrival{seq: uint64(seq), sent: in.sent[seq], t: in.sent[seq].Add(2 * time.Second), conn: 1})
	}
	r := analyse(in)
	if r.Duplicates != 3 || r.DuplicatesResent != 1 || r.Marks[0].DuplicatesResent != 1 {
		t.Errorf("duplicates %d, resent by the publisher %d (mark %d), want 3 and 1 (1)", r.Duplicates, r.DuplicatesResent, r.Marks[0].DuplicatesResent)
	}
}
