// Per fault: what happened to the messages published after each mark (received, lost,
// stranded), and the duplicate bound every mark must keep when one is given.

package main

import (
	"fmt"
	"sort"
)

// perMark books each message published after a mark, and before the next one, on that mark:
// published, received live, and, among the acknowledged ones never received live (missing: the
// kind analyse gave each), lost, lost on surviving brokers and stranded.
func perMark(r *report, in analysisInput, first map[uint64]arrival, missing map[uint64]string) {
	if len(r.Marks) == 0 {
		return
	}
	for seq := 1; seq < len(in.sent); seq++ {
		sent := in.sent[seq]
		i := sort.Search(len(r.Marks), func(i int) bool { return r.Marks[i].t.After(sent) }) - 1
		if i < 0 {
			continue
		}
		m := &r.Marks[i]
		m.Published++
		if _, ok := first[uint64(seq)]; ok {
			m.Received++
		}
		switch missing[uint64(seq)] {
		case "stranded":
			m.Stranded++
		case "lost":
			m.Lost++
			m.LostOnSurvivors++
		case "dead-sub":
			m.LostOnSurvivors++
		}
	}
}

// checkDupBound sets DupBoundOK and lists every mark over the bound. A bound of -1 messages and
// 0 age checks nothing (and is reported as kept).
func checkDupBound(r *report) {
	r.DupBoundOK = true
	for _, m := range r.Marks {
		if r.DupBoundMsgs >= 0 && m.Duplicates > r.DupBoundMsgs {
			r.DupBoundViolations = append(r.DupBoundViolations,
				fmt.Sprintf("%q: %d duplicates, bound %d", m.Label, m.Duplicates, r.DupBoundMsgs))
		}
		if r.DupBoundAgeMs > 0 && m.DupOldestMs > r.DupBoundAgeMs {
			r.DupBoundViolations = append(r.DupBoundViolations,
				fmt.Sprintf("%q: a duplicate first received %d ms before the mark, bound %d ms", m.Label, m.DupOldestMs, r.DupBoundAgeMs))
		}
	}
	r.DupBoundOK = len(r.DupBoundViolations) == 0
}
