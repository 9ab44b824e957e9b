package main

import (
	"slices"
	"testing"
	"time"
)

func TestAnalyseLostOnSurvivorsCountsTheSubscriberSideDeadLetters(t *testing.T) {
	// movesAt: 11..19 were routed only to the subscriber's session on the dead b1; the publisher
	// is on the survivor b3, so a cluster whose sessions follow the client owes them all.
	in := stream(30, "b3", movesAt)
	in.dead = "b1"
	in.marks = []mark{{Label: "fault", t: in.sent[12]}}
	r := analyse(in)
	if r.Lost != 0 || r.DeadLetters != 9 || r.LostOnSurvivors != 9 {
		t.Errorf("lost %d dead %d lost on survivors %d, want 0, 9, 9", r.Lost, r.DeadLetters, r.LostOnSurvivors)
	}
	if want := []uint64{11, 12, 13, 14, 15, 16, 17, 18, 19}; !slices.Equal(r.LostOnSurvivorsSeqs, want) {
		t.Errorf("lost on survivors %v, want %v", r.LostOnSurvivorsSeqs, want)
	}
	// Published from the mark (seq 12) on: 19, of which 12..19 (8) lost on survivors, 20..30 received.
	m := r.Marks[0]
	if m.Published != 19 || m.Received != 11 || m.LostOnSurvivors != 8 || m.Lost != 0 || m.Stranded != 0 {
		t.Errorf("mark %+v, want published 19, received 11, lost on survivors 8", m)
	}
}

func TestAnalyseLostOnSurvivorsSparesWhatTheDeadBrokerAccepted(t *testing.T) {
	in := stream(10, "b1", func(seq int) int64 {
		if seq >= 8 {
			return 0
		}
		return 2
	})
	in.dead = "b1"
	if r := analyse(in); r.LostOnSurvivors != 0 || r.DeadPubSide != 3 {
		t.Errorf("lost on survivors %d, dead pub side %d, want 0 and 3", r.LostOnSurvivors, r.DeadPubSide)
	}
}

func TestAnalyseSubscribeOnceNeverReceivingAgain(t *testing.T) {
	// The subscribe-once subscriber on main: after the move it receives nothing; no arrival on
	// the new broker means no subscriber-side window, so everything after the fault is lost.
	in := stream(30, "b3", func(seq int) int64 {
		if seq <= 10 {
			return 1
		}
		return 0
	})
	in.dead = "b1"
	in.subscribe = subscribeOnce
	in.marks = []mark{{Label: "fault", t: in.sent[11]}}
	r := analyse(in)
	if r.Subscribe != "once" || r.Lost != 20 || r.LostOnSurvivors != 20 || r.Marks[0].Published != 20 || r.Marks[0].Received != 0 {
		t.Errorf("subscribe %q lost %d lost on survivors %d mark %+v, want once, 20, 20, 20 published 0 received",
			r.Subscribe, r.Lost, r.LostOnSurvivors, r.Marks[0])
	}
	// It never receives again: an open outage from its last arrival (seq 10, +1 ms) to the last
	// send (seq 30), and no recovery.
	if r.Marks[0].RecoverMs != -1 || r.Marks[0].LongestGapMs != 199 || len(r.Gaps) != 1 || !r.Gaps[0].Open {
		t.Errorf("mark %+v gaps %+v, want no recovery after an open outage of 199 ms", r.Marks[0], r.Gaps)
	}
}

func TestAnalysePerMarkStranded(t *testing.T) {
	in := stream(30, "b3", movesAt)
	late := in.sent[30].Add(time.Second)
	for seq := 11; seq <= 19; seq++ {
		in.arrivals = append(in.arrivals, arrival{seq: uint64(seq), sent: in.sent[seq], t: late, visit: "b1"})
	}
	in.marks = []mark{{Label: "broker-restart b1", t: in.sent[11]}, {Label: "heal", t: in.sent[15]}}
	r := analyse(in)
	if r.Marks[0].Stranded != 4 || r.Marks[1].Stranded != 5 || r.Marks[1].Received != 11 {
		t.Errorf("marks %+v, want 4 stranded (11..14), then 5 (15..19) and 11 received", r.Marks)
	}
}

func TestDupBound(t *testing.T) {
	// Duplicates after the mark at seq 20: 15 (first received 50 ms before the mark) and 18 (20 ms).
	build := func(msgs int, age time.Duration) *report {
		in := stream(30, "b2", func(int) int64 { return 1 })
		for _, seq := range []int{15, 18} {
			in.arrivals = append(in.arrivals, arrival{seq: uint64(seq), sent: in.sent[seq], t: in.sent[21], conn: 1})
		}
		in.marks = []mark{{Label: "fault", t: in.sent[20].Add(time.Millisecond)}}
		in.dupMsgs, in.dupAge = msgs, age
		return analyse(in)
	}
	for _, c := range []struct {
		name string
		msgs int
		age  time.Duration
		ok   bool
	}{
		{"unchecked", -1, 0, true},
		{"two_allowed", 2, 0, true},
		{"one_allowed", 1, 0, false},
		{"age_60ms", -1, 60 * time.Millisecond, true},
		{"age_30ms", -1, 30 * time.Millisecond, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := build(c.msgs, c.age)
			if r.Marks[0].Duplicates != 2 || r.Marks[0].DupOldestMs != 50 {
				t.Fatalf("mark %+v, want 2 duplicates, oldest 50 ms before the mark", r.Marks[0])
			}
			if r.DupBoundOK != c.ok || (len(r.DupBoundViolations) == 0) != c.ok {
				t.Errorf("dup bound ok %v (%v), want %v", r.DupBoundOK, r.DupBoundViolations, c.ok)
			}
		})
	}
}
