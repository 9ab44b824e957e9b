package main

// Issue 13 in the lab (TestLabFailover faults 6 to 8): the targets of sessions that follow their
// client (no loss, no strand and the takeover asserted by default; the timing and the duplicate
// bound too with MHA_SESSION_TARGETS=1; reported always), the table of the subscribe-once rows,
// and the same-client-id probe.
//
// The targets: after a fault of its broker the subscribe-once subscriber receives again within
// 3 s (docs/failover.md's target for a dead broker), no acknowledged message published on a
// surviving broker is lost (labcheck's lost_on_survivors, the subscriber-side dead letters
// included), none is stranded, and every fault keeps the duplicate bound: at most
// MHA_SESSION_DUP_MSGS duplicates (default 200, 2 s at 100 msg/s), none of a message first
// received more than MHA_SESSION_DUP_AGE before the fault (default 2s). Set both to the bound
// the sessions mechanism states. The same client id connected to b1 and then b2 closes the
// older connection within 1 s and keeps the newer, as one broker does.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sessionTargetsBinding is whether issue 13's targets are asserted when MHA_SESSION_TARGETS is
// unset: sessions follow their client, so no loss, no strand and the takeover are; the timing
// and duplicate targets need MHA_SESSION_TARGETS=1 (sessionTargets.strict); "0" asserts none.
const sessionTargetsBinding = true

type sessionTargets struct {
	binding bool
	// strict adds the timing and duplicate targets (receiving again within recover, the
	// duplicate bound) to loss, strands and the takeover: MHA_SESSION_TARGETS=1. CI runs the lab
	// beside the other packages' tests, on 2 cores, where a move can take seconds longer
	// (fault 6 received again after 4.17 s once, with a longest gap of 0.10 s): there they are
	// measured and reported.
	strict   bool
	dupMsgs  int
	dupAge   time.Duration
	recover  time.Duration
	takeover time.Duration
}

func sessionTargetsFromEnv(t *testing.T) sessionTargets {
	t.Helper()
	s := sessionTargets{binding: sessionTargetsBinding, dupMsgs: 200, dupAge: 2 * time.Second,
		recover: 3 * time.Second, takeover: time.Second}
	switch v := os.Getenv("MHA_SESSION_TARGETS"); v {
	case "1":
		s.binding, s.strict = true, true
	case "0":
		s.binding = false
	case "":
	default:
		t.Fatalf("MHA_SESSION_TARGETS %q: want 1 (assert issue 13's targets) or 0 (measure only)", v)
	}
	if v := os.Getenv("MHA_SESSION_DUP_MSGS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			t.Fatalf("MHA_SESSION_DUP_MSGS %q: want a count >= 0", v)
		}
		s.dupMsgs = n
	}
	if v := os.Getenv("MHA_SESSION_DUP_AGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("MHA_SESSION_DUP_AGE %q: want a duration > 0 (e.g. 2s)", v)
		}
		s.dupAge = d
	}
	if !s.binding {
		t.Log("issue 13's targets not binding (MHA_SESSION_TARGETS=1 makes them so): faults 6 to 8 measure and report")
	}
	return s
}

// afterDowntime is the bound for a return to a broker that was down for d: the client's copy of
// its session there drew messages (100 a second here) that no drain could take from the stop
// until the agent's first drain after the restart (d, then up to 2 s: its reconnection to the
// broker, a plan period and the drain interval; measured 0.9-1 s).
func (s sessionTargets) afterDowntime(d time.Duration) sessionTargets {
	s.dupMsgs += int((d + 2*time.Second).Seconds() * 100)
	s.dupAge += d + 2*time.Second
	return s
}

// dupArgs gives labcheck the duplicate bound to check.
func (s sessionTargets) dupArgs() []string {
	return []string{"--dup-bound-msgs", strconv.Itoa(s.dupMsgs), "--dup-bound-age", s.dupAge.String()}
}

// check asserts the targets of a subscribe-once fault when they are binding.
func (s sessionTargets) check(t *testing.T, row failoverRow, fault string) {
	t.Helper()
	rep := row.rep
	if rep.Acked == 0 {
		t.Errorf("nothing measured: %d acknowledged", rep.Acked)
	}
	if !s.binding {
		return
	}
	if s.strict && (row.recoverMs < 0 || row.recoverMs > s.recover.Milliseconds()) {
		t.Errorf("the subscriber received again %s after the %s, want under %s", seconds(row.recoverMs), fault, s.recover)
	}
	if rep.LostOnSurvivors > 0 {
		t.Errorf("%d acknowledged messages published on surviving brokers never arrived (first: %v)", rep.LostOnSurvivors, rep.LostOnSurvivorsSeqs)
	}
	if rep.Stranded > 0 {
		t.Errorf("%d messages stranded in sessions the subscriber left (%v)", rep.Stranded, rep.StrandedOn)
	}
	if s.strict && !rep.DupBoundOK {
		t.Errorf("duplicate bound (%d messages, %s) exceeded: %s", s.dupMsgs, s.dupAge, strings.Join(rep.DupBoundViolations, "; "))
	}
}

// notes is what the table says of a subscribe-once run beyond its columns.
func (s sessionTargets) notes(rep *labReport) []string {
	var out []string
	if rep.WaitingInLeftSessions > 0 {
		out = append(out, fmt.Sprintf("%d messages waited in sessions it left", rep.WaitingInLeftSessions))
	}
	if rep.DupBoundOK {
		out = append(out, fmt.Sprintf("duplicate bound (%d, %s) kept", s.dupMsgs, s.dupAge))
	} else {
		out = append(out, "duplicate bound exceeded: "+strings.Join(rep.DupBoundViolations, "; "))
	}
	if !s.binding {
		out = append(out, "targets not binding")
	}
	return out
}

// sessionTable renders the subscribe-once rows: the columns of failoverTable without the VIP
// (no load balancer fault), with the loss split into lost on surviving brokers and stranded.
// Rows are numbered from first, after the rows of failoverTable.
func sessionTable(rows []failoverRow, first int) string {
	var b strings.Builder
	b.WriteString("| # | fault | subscriber receives again | longest gap | sent | acked | received | lost on surviving brokers | stranded | duplicates | dead letters | notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, r := range rows {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %d | %d | %d | %d | %d | %d | %d | %s |\n", first+i, r.fault,
			seconds(r.recoverMs), seconds(r.gapMs), r.rep.Sent, r.rep.Acked, r.rep.Received, r.rep.LostOnSurvivors,
			r.rep.Stranded, r.rep.Duplicates, r.rep.DeadLetters, strings.Join(r.notes, "; "))
	}
	return b.String()
}

// sameIDReport is labcheck sameid's report.
type sameIDReport struct {
	OlderClosed    bool  `json:"older_closed"`
	ClosedAfterMs  int64 `json:"closed_after_ms"`
	NewerConnected bool  `json:"newer_connected"`
}

func (l *lab) sameID(t *testing.T, first, second string) sameIDReport {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", "mha-client", l.labcheck, "sameid",
		"--config", filepath.Join(labDir, "cluster.yaml"), "--first", first, "--second", second).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("labcheck sameid --first %s --second %s: %v\n%s", first, second, err, stderr)
	}
	var rep sameIDReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("labcheck sameid report: %v\n%s", err, out)
	}
	t.Logf("same client id on %s then %s: %+v", first, second, rep)
	return rep
}

// sameClientID connects one client id to b1 and then to b2, and the lone-broker oracle (b1 then
// b1): one broker closes the older connection [MQTT-3.1.4-2]; the cluster must too.
// It returns the line the table file gets.
func sameClientID(t *testing.T, l *lab, s sessionTargets) string {
	l.must(t, "repair")
	oracle := l.sameID(t, "b1", "b1")
	if !oracle.OlderClosed || !oracle.NewerConnected {
		t.Fatalf("one broker, the same client id twice: %+v, want the older closed and the newer connected (the probe is broken)", oracle)
	}
	cluster := l.sameID(t, "b1", "b2")
	if s.binding && (!cluster.OlderClosed || cluster.ClosedAfterMs > s.takeover.Milliseconds() || !cluster.NewerConnected) {
		t.Errorf("the same client id on b1 then b2: %+v, want the older closed within %s and the newer connected, as on one broker (%+v)",
			cluster, s.takeover, oracle)
	}
	closed := func(r sameIDReport) string {
		if !r.OlderClosed {
			return "older connection not closed"
		}
		return fmt.Sprintf("older connection closed after %d ms", r.ClosedAfterMs)
	}
	return fmt.Sprintf("Same client id (fault 8): one broker: %s, newer connected %v; b1 then b2: %s, newer connected %v.",
		closed(oracle), oracle.NewerConnected, closed(cluster), cluster.NewerConnected)
}

// waitUpBehindHAProxy waits until both HAProxy hosts have broker b UP (lab.sh wait would also
// wait for every agent to settle, 10 s and more after a broker restart: the subscriber's return
// must come while messages are still being published).
func (l *lab) waitUpBehindHAProxy(t *testing.T, b string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		up := 0
		for _, lb := range []string{"lb1", "lb2"} {
			out, err := exec.Command("ip", "netns", "exec", "mha-"+lb, l.labcheck, "hastat",
				"--socket", filepath.Join(labDir, lb, "admin.sock")).Output()
			if err == nil && strings.Contains(string(out), " "+b+" UP") {
				up++
			}
		}
		if up == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not UP behind both HAProxy hosts within %s", b, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
