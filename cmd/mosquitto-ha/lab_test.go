package main

// TestLabFailover runs the faults of contract line 8 against the lab of scripts/lab.sh: network
// namespaces as hosts (two HAProxy + keepalived hosts sharing the VIP 198.18.0.100, three
// Mosquitto brokers each with its agent, one client host), all addresses in 198.18.0.0/15.
// For each fault scripts/cmd/labcheck runs a QoS 1 publisher and a QoS 1 subscriber with
// persistent sessions through the VIP, on different brokers, while the test injects the fault,
// and reports what the cluster acknowledged, delivered, lost and duplicated, and how long the
// subscriber waited. The test asserts that every acknowledged message arrives at least once, except the
// dead letters of a broker that died (labcheck's package doc defines them; they are reported
// apart); timings are reported (t.Logf, and the file named by MHA_FAILOVER_TABLE), not asserted.
//
// It needs root (namespaces, a bridge, a VIP) and fails without it. -short runs faults 1 and 2
// only. The lab is always torn down (`lab.sh down`), also when a fault fails.
//
// Faults 6 and 7 use a subscriber that subscribes once and never again (labcheck --subscribe
// once), and fault 8 connects one client id to two brokers (labcheck sameid): issue 13's tests
// for sessions that follow their client. Until the cluster does that, they measure ("before")
// and assert only that the fault happened as staged; MHA_SESSION_TARGETS=1 makes the issue's
// targets binding (sessionTargets below). They are not run with -short or MHA_LAB_NATIVE=1.
//
// MHA_LAB_NATIVE=1 runs the same faults against the reference study's own design instead
// (`lab.sh up --native --brokers 2`: a native Mosquitto bridge, HAProxy round robin, keepalived
// without HAProxy tracking), for comparison: the agent fault does not apply, and nothing is
// asserted about delivery (the table says what happened).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

// labDir is the lab's state directory during the test (fixed, so that a run killed before its
// cleanup leaves a lab the next run's first `lab.sh down` removes).
const labDir = "/tmp/mha-lab-test"

const labVIP = "198.18.0.100"

// labReport is the part of labcheck's JSON report the test reads.
type labReport struct {
	SubBroker        string `json:"sub_broker"`
	PubBroker        string `json:"pub_broker"`
	Sent             int    `json:"sent"`
	Acked            int    `json:"acked"`
	Received         int    `json:"received"`
	Duplicates       int    `json:"duplicates"`
	Lost             int    `json:"lost"`
	LostSeqs         []int  `json:"lost_seqs"`
	DeadLetters      int    `json:"dead_letters"`
	DeadPubSide      int    `json:"dead_pub_side"`
	DeadSubQueued    int    `json:"dead_sub_queued"`
	DeadSubNoSession int    `json:"dead_sub_no_session"`
	// Stranded reached only a session the subscriber had left (labcheck's return visits).
	Stranded   int            `json:"stranded"`
	StrandedOn map[string]int `json:"stranded_on"`
	Marks      []struct {
		Label           string `json:"label"`
		RecoverMs       int64  `json:"recover_ms"`
		LongestGapMs    int64  `json:"longest_gap_ms"`
		Duplicates      int    `json:"duplicates"`
		DupOldestMs     int64  `json:"dup_oldest_ms"`
		Published       int    `json:"published"`
		Received        int    `json:"received"`
		LostOnSurvivors int    `json:"lost_on_survivors"`
		Stranded        int    `json:"stranded"`
	} `json:"marks"`
	SubConnections []struct {
		Broker string `json:"broker"`
		Via    string `json:"via"`
	} `json:"sub_connections"`
	PubConnections []struct {
		Broker string `json:"broker"`
		Via    string `json:"via"`
	} `json:"pub_connections"`
	LatencyMaxMs float64 `json:"latency_max_ms"`
	// The subscribe-once figures (labcheck's report doc).
	Subscribe             string   `json:"subscribe"`
	LostOnSurvivors       int      `json:"lost_on_survivors"`
	LostOnSurvivorsSeqs   []int    `json:"lost_on_survivors_seqs"`
	WaitingInLeftSessions int      `json:"waiting_in_left_sessions"`
	DupBoundOK            bool     `json:"dup_bound_ok"`
	DupBoundViolations    []string `json:"dup_bound_violations"`
}

// mark returns the recovery after the mark with this label.
func (r *labReport) mark(label string) (recoverMs, gapMs int64) {
	for _, m := range r.Marks {
		if m.Label == label {
			return m.RecoverMs, m.LongestGapMs
		}
	}
	return -1, -1
}

// path is the brokers (and HAProxy hosts) one client went through, e.g. "b1 -> b2".
func path(conns []struct {
	Broker string `json:"broker"`
	Via    string `json:"via"`
}) string {
	var out []string
	for _, c := range conns {
		if len(out) == 0 || out[len(out)-1] != c.Broker {
			out = append(out, c.Broker)
		}
	}
	return strings.Join(out, "->")
}

// failoverRow is one line of the table.
type failoverRow struct {
	fault     string
	vip       time.Duration // -1: not a load balancer fault
	recoverMs int64
	gapMs     int64
	rep       *labReport
	notes     []string
	// once: the subscriber subscribed once (faults 6 and 7): rendered in sessionTable.
	once bool
	// bound is the duplicate bound of a subscribe-once fault when it is not the common one.
	bound *sessionTargets
}

// lab drives scripts/lab.sh.
type lab struct {
	script   string
	labcheck string
	env      []string
}

func (l *lab) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{l.script}, args...)...)
	cmd.Env = l.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// with returns a copy of l whose lab.sh runs get extra environment (e.g. MHA_KILL_SIGNAL=TERM).
func (l *lab) with(env ...string) *lab {
	c := *l
	c.env = append(append([]string(nil), l.env...), env...)
	return &c
}

// must runs lab.sh and fails the (sub)test t on error.
func (l *lab) must(t *testing.T, args ...string) {
	t.Helper()
	if out, err := l.run(90*time.Second, args...); err != nil {
		t.Fatalf("lab.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// vipHolders returns the load balancers that have the VIP on eth0.
func vipHolders() []string {
	var out []string
	for _, lb := range []string{"lb1", "lb2"} {
		b, err := exec.Command("ip", "-n", "mha-"+lb, "-4", "-o", "addr", "show", "dev", "eth0").Output()
		if err == nil && bytes.Contains(b, []byte(" "+labVIP+"/")) {
			out = append(out, lb)
		}
	}
	return out
}

// vipWatch records every change of the VIP's holders, every 20 ms, until stopped.
type vipWatch struct {
	mu      sync.Mutex
	changes []vipChange
	stop    chan struct{}
	done    chan struct{}
}

type vipChange struct {
	t       time.Time
	holders string
}

func watchVIP() *vipWatch {
	w := &vipWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := "?"
		for {
			h := strings.Join(vipHolders(), "+")
			if h == "" {
				h = "none"
			}
			if h != last {
				w.mu.Lock()
				w.changes = append(w.changes, vipChange{time.Now(), h})
				w.mu.Unlock()
				last = h
			}
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *vipWatch) end() []vipChange {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]vipChange(nil), w.changes...)
}

// movedTo is when, after from, lb alone held the VIP first (-1: never).
func movedTo(changes []vipChange, from time.Time, lb string) time.Duration {
	for _, c := range changes {
		if c.t.After(from) && c.holders == lb {
			return c.t.Sub(from)
		}
	}
	return -1
}

// checkRun is one labcheck process in mha-client: its report on stdout, its log in Out.
type checkRun struct {
	*mosqtest.Proc
	stdin  io.WriteCloser
	stdout *mosqtest.Output
}

// startCheck runs labcheck through the VIP and returns once it publishes the measured sequence.
func (l *lab) startCheck(t *testing.T, args ...string) *checkRun {
	t.Helper()
	argv := append([]string{"netns", "exec", "mha-client", l.labcheck,
		"--config", filepath.Join(labDir, "cluster.yaml"), "--vip", labVIP + ":1883"}, args...)
	cmd := exec.Command("ip", argv...)
	c := &checkRun{stdout: &mosqtest.Output{}}
	cmd.Stdout = c.stdout
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	c.Proc = mosqtest.StartProc(t, cmd)
	deadline := time.After(40 * time.Second)
	for !strings.Contains(c.Out.String(), "ready:") {
		select {
		case <-c.Done():
			t.Fatalf("labcheck %s ended before it was ready: %v\n%s", strings.Join(args, " "), c.Err(), c.Out)
		case <-deadline:
			t.Fatalf("labcheck %s not ready within 40s:\n%s", strings.Join(args, " "), c.Out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return c
}

// mark tells labcheck that something happens now (it stamps the line when it reads it).
func (c *checkRun) mark(t *testing.T, label string) time.Time {
	now := time.Now()
	if _, err := fmt.Fprintln(c.stdin, label); err != nil {
		t.Fatalf("mark %s: %v", label, err)
	}
	return now
}

// finish waits for labcheck's report.
func (c *checkRun) finish(t *testing.T) *labReport {
	t.Helper()
	c.stdin.Close()
	select {
	case <-c.Done():
		if err := c.Err(); err != nil {
			t.Fatalf("labcheck: %v\n%s", err, c.Out)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("labcheck did not end within 90s:\n%s", c.Out)
	}
	var rep labReport
	if err := json.Unmarshal(c.stdout.Bytes(), &rep); err != nil {
		t.Fatalf("labcheck report: %v\n%s\n%s", err, c.stdout.String(), c.Out)
	}
	t.Logf("labcheck:\n%s", strings.TrimSpace(c.Out.String()))
	return &rep
}

// checkDelivery is the assertion of every fault: every acknowledged message arrived at least
// once, dead letters apart.
func checkDelivery(t *testing.T, rep *labReport) {
	t.Helper()
	if rep.Acked == 0 || rep.Received == 0 {
		t.Errorf("nothing measured: %d acknowledged, %d received", rep.Acked, rep.Received)
	}
	if rep.Lost > 0 {
		t.Errorf("%d acknowledged QoS 1 messages never arrived and are no dead letters (first: %v)", rep.Lost, rep.LostSeqs)
	}
}

func TestLabFailover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestLabFailover needs root: scripts/lab.sh creates network namespaces, a bridge and a floating IP (run the tests as root, e.g. sudo scripts/test.sh)")
	}
	for _, tool := range []string{"ip", "mosquitto", "mosquitto_pub", "haproxy", "keepalived", "setsid", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install -y iproute2 mosquitto mosquitto-clients haproxy keepalived util-linux coreutils", tool)
		}
	}
	script, err := filepath.Abs("../../scripts/lab.sh")
	if err != nil {
		t.Fatal(err)
	}
	labcheck := filepath.Join(t.TempDir(), "labcheck")
	if out, err := exec.Command("go", "build", "-o", labcheck, "../../scripts/cmd/labcheck").CombinedOutput(); err != nil {
		t.Fatalf("go build scripts/cmd/labcheck: %v\n%s", err, out)
	}
	l := &lab{script: script, labcheck: labcheck,
		env: append(os.Environ(), "MHA_LAB_DIR="+labDir, "MHA_BIN="+binary, "MHA_LABCHECK="+labcheck)}

	// A lab left by a run that was killed before its cleanup (same names): remove it.
	if out, _ := exec.Command("ip", "netns", "list").Output(); bytes.Contains(out, []byte("mha-")) {
		t.Logf("removing a lab left behind:\n%s", out)
	}
	if out, err := l.run(60*time.Second, "down"); err != nil {
		t.Fatalf("lab.sh down: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := l.run(30*time.Second, "status"); err == nil || out != "" {
				t.Logf("lab.sh status:\n%s", out)
			}
			logs, _ := filepath.Glob(filepath.Join(labDir, "logs", "*.log"))
			for _, f := range logs {
				if b, err := exec.Command("tail", "-n", "25", f).Output(); err == nil {
					t.Logf("----- %s\n%s", filepath.Base(f), b)
				}
			}
		}
		if out, err := l.run(60*time.Second, "down"); err != nil {
			t.Errorf("lab.sh down: %v\n%s", err, out)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); bytes.Contains(out, []byte("mha-")) {
			t.Errorf("lab.sh down left namespaces:\n%s", out)
		}
		if out, _ := exec.Command("ip", "-o", "link", "show").Output(); bytes.Contains(out, []byte("mha-")) {
			t.Errorf("lab.sh down left links:\n%s", out)
		}
		if out, err := exec.Command("pgrep", "-af", labDir).Output(); err == nil && len(out) > 0 {
			t.Errorf("lab.sh down left processes:\n%s", out)
		}
	})
	native := os.Getenv("MHA_LAB_NATIVE") == "1"
	targets := sessionTargetsFromEnv(t)
	up := []string{"up"}
	if native {
		up = []string{"up", "--native", "--brokers", "2"}
		t.Log("MHA_LAB_NATIVE=1: the study's design (native bridge, round robin, untracked keepalived); delivery is reported, not asserted")
	}
	start := time.Now()
	l.must(t, up...)
	t.Logf("lab up in %s", time.Since(start).Round(100*time.Millisecond))

	other := func(lb string) string {
		if lb == "lb1" {
			return "lb2"
		}
		return "lb1"
	}
	holder := func(t *testing.T) string {
		h := vipHolders()
		if len(h) != 1 {
			t.Fatalf("VIP holders: %v, want exactly one", h)
		}
		return h[0]
	}

	faults := []struct {
		name  string
		short bool
		run   func(t *testing.T) failoverRow
	}{
		{"1_kill_subscriber_broker", true, func(t *testing.T) failoverRow {
			// The subscriber's broker dies (kill -9): HAProxy sends the subscriber to a
			// survivor; what was routed to its session on b1 is dead letters.
			c := l.startCheck(t, "--sub-broker", "b1", "--dead", "b1", "--duration", "8s", "--drain", "3s")
			time.Sleep(2 * time.Second)
			c.mark(t, "fault")
			l.must(t, "fault", "kill-broker", "b1")
			rep := c.finish(t)
			l.must(t, "fault", "start-broker", "b1")
			row := failoverRow{fault: "broker b1 killed (kill -9; the subscriber's broker)", vip: -1, rep: rep}
			row.recoverMs, row.gapMs = rep.mark("fault")
			if !strings.Contains(path(rep.SubConnections), "->") {
				t.Errorf("the subscriber never left b1: %+v", rep.SubConnections)
			}
			return row
		}},
		{"2_kill_haproxy_on_vip_holder", true, func(t *testing.T) failoverRow {
			h := holder(t)
			c := l.startCheck(t, "--duration", "8s", "--drain", "3s")
			w := watchVIP()
			time.Sleep(2 * time.Second)
			t0 := c.mark(t, "fault")
			l.must(t, "fault", "kill-haproxy", h)
			restarted := false
			for deadline := t0.Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if now := vipHolders(); len(now) == 1 && now[0] == other(h) {
					break
				}
				if time.Now().After(deadline) {
					// The VIP stays with a dead HAProxy: only a restart brings the service back.
					c.mark(t, "restart")
					l.must(t, "fault", "start-haproxy", h)
					restarted = true
					break
				}
			}
			rep := c.finish(t)
			if !restarted {
				l.must(t, "fault", "start-haproxy", h)
			}
			l.must(t, "wait", "60")
			changes := w.end()
			row := failoverRow{fault: "HAProxy killed on the VIP holder (" + h + ")", vip: movedTo(changes, t0, other(h)), rep: rep}
			row.recoverMs, row.gapMs = rep.mark("fault")
			switch {
			case restarted:
				row.notes = append(row.notes, fmt.Sprintf("the VIP stayed on %s with its HAProxy dead; service back only when HAProxy was restarted after 5 s", h))
				if !native {
					t.Errorf("the VIP never moved from %s to %s within 5 s: %v", h, other(h), changes)
				}
			case len(vipHolders()) != 1 || vipHolders()[0] != other(h):
				t.Errorf("after %s's HAProxy came back the VIP is on %v, want it to stay on %s (nopreempt)", h, vipHolders(), other(h))
				row.notes = append(row.notes, fmt.Sprintf("the VIP went back to %s when its HAProxy returned", h))
			default:
				row.notes = append(row.notes, fmt.Sprintf("VIP stays on %s when %s's HAProxy returns", other(h), h))
			}
			return row
		}},
		{"3_cut_vip_holder_link", false, func(t *testing.T) failoverRow {
			h := holder(t)
			c := l.startCheck(t, "--duration", "9s", "--drain", "3s")
			w := watchVIP()
			time.Sleep(2 * time.Second)
			t0 := c.mark(t, "fault")
			l.must(t, "fault", "cut", h)
			time.Sleep(time.Until(t0.Add(3 * time.Second)))
			c.mark(t, "heal")
			l.must(t, "fault", "heal", h)
			rep := c.finish(t)
			changes := w.end()
			row := failoverRow{fault: "link of the VIP holder (" + h + ") cut, healed after 3 s", vip: movedTo(changes, t0, other(h)), rep: rep}
			row.recoverMs, row.gapMs = rep.mark("fault")
			if row.vip < 0 {
				t.Errorf("the VIP never moved from %s to %s: %v", h, other(h), changes)
			}
			if last := changes[len(changes)-1]; last.holders != other(h) {
				if !native {
					t.Errorf("after the heal the VIP went to %s; want it to stay on %s (changes %v)", last.holders, other(h), changes)
				}
				row.notes = append(row.notes, fmt.Sprintf("the VIP went back to %s after the heal (a second cut for its clients)", last.holders))
			} else {
				row.notes = append(row.notes, fmt.Sprintf("no flap back after the heal: VIP stayed on %s", other(h)))
			}
			return row
		}},
		{"4_kill_and_restart_publisher_agent", false, func(t *testing.T) failoverRow {
			if native {
				t.Skip("the study's design has no agent")
			}
			c := l.startCheck(t, "--sub-broker", "b1", "--pub-broker", "b2", "--duration", "9s", "--drain", "4s")
			time.Sleep(2 * time.Second)
			c.mark(t, "fault")
			l.must(t, "fault", "kill-agent", "b2")
			time.Sleep(2 * time.Second)
			c.mark(t, "restart")
			l.must(t, "fault", "start-agent", "b2")
			rep := c.finish(t)
			row := failoverRow{fault: "agent of the publisher's broker (b2) killed (kill -9), restarted 2 s later", vip: -1, rep: rep}
			row.recoverMs, row.gapMs = rep.mark("fault")
			r2, _ := rep.mark("restart")
			row.notes = append(row.notes, fmt.Sprintf("receiving again %.2f s after the restart", float64(r2)/1000))
			return row
		}},
		{"5_cut_publisher_broker_link_10s", false, func(t *testing.T) failoverRow {
			c := l.startCheck(t, "--pub-broker", "b1", "--sub-broker", "b2", "--duration", "16s", "--drain", "8s")
			time.Sleep(2 * time.Second)
			t0 := c.mark(t, "fault")
			l.must(t, "fault", "cut", "b1")
			time.Sleep(time.Until(t0.Add(10 * time.Second)))
			c.mark(t, "heal")
			l.must(t, "fault", "heal", "b1")
			rep := c.finish(t)
			row := failoverRow{fault: "link of the publisher's broker (b1) cut for 10 s, healed", vip: -1, rep: rep}
			row.recoverMs, row.gapMs = rep.mark("fault")
			// The relay from b1 works again: its agent and the peers' reconnected.
			l.must(t, "wait", "60")
			c2 := l.startCheck(t, "--pub-broker", "b1", "--duration", "2s", "--drain", "3s")
			rep2 := c2.finish(t)
			if !native {
				checkDelivery(t, rep2)
			}
			row.notes = append(row.notes, fmt.Sprintf("after the heal b1->%s relays again: %d/%d received", rep2.SubBroker, rep2.Received, rep2.Acked))
			return row
		}},
		{"6_subscribe_once_kill_subscriber_broker", false, func(t *testing.T) failoverRow {
			// Issue 13: the subscriber subscribed once; kill -9 of its broker. It must keep
			// receiving through the VIP from the session the cluster holds for it elsewhere.
			c := l.startCheck(t, append([]string{"--subscribe", "once", "--sub-broker", "b1", "--dead", "b1",
				"--duration", "8s", "--drain", "3s"}, targets.dupArgs()...)...)
			time.Sleep(2 * time.Second)
			c.mark(t, "fault")
			l.must(t, "fault", "kill-broker", "b1")
			rep := c.finish(t)
			l.must(t, "fault", "start-broker", "b1")
			row := failoverRow{fault: "broker b1 killed (kill -9; the subscriber's broker), subscribed once", vip: -1, rep: rep, once: true}
			row.recoverMs, row.gapMs = rep.mark("fault")
			if !strings.HasPrefix(path(rep.SubConnections), "b1->") {
				t.Errorf("the subscriber did not start on b1 and leave it: %+v", rep.SubConnections)
			}
			targets.check(t, row, "fault")
			return row
		}},
		{"7_subscribe_once_sigterm_restart_and_return", false, func(t *testing.T) failoverRow {
			// Issue 13: the subscriber subscribed once; its broker stops (SIGTERM, its sessions
			// saved), restarts 3 s later, and the subscriber returns there (its connection is
			// closed once b1 is UP behind HAProxy; the client-id hash sends it back to b1).
			// Its return gets again what its copy on b1 drew while b1 was down and could not be
			// drained: the bound grows by the 3 s b1 is down and the time to its agent's first
			// drain after the restart (docs/semantics.md#sessions).
			bound := targets.afterDowntime(3 * time.Second)
			c := l.startCheck(t, append([]string{"--subscribe", "once", "--sub-broker", "b1",
				"--duration", "11s", "--drain", "4s"}, bound.dupArgs()...)...)
			time.Sleep(2 * time.Second)
			t0 := c.mark(t, "fault")
			l.with("MHA_KILL_SIGNAL=TERM").must(t, "fault", "kill-broker", "b1")
			time.Sleep(time.Until(t0.Add(3 * time.Second)))
			c.mark(t, "restart")
			l.must(t, "fault", "start-broker", "b1")
			l.waitUpBehindHAProxy(t, "b1", 15*time.Second)
			c.mark(t, "reconnect-sub (return to b1)")
			rep := c.finish(t)
			row := failoverRow{fault: "broker b1 stopped (SIGTERM; the subscriber's broker), restarted 3 s later, the subscriber returns there; subscribed once", vip: -1, rep: rep, once: true}
			row.recoverMs, row.gapMs = rep.mark("fault")
			r2, _ := rep.mark("reconnect-sub (return to b1)")
			row.notes = append(row.notes, fmt.Sprintf("receiving again %s after its return to b1", seconds(r2)))
			if p := path(rep.SubConnections); !strings.HasPrefix(p, "b1->") || !strings.HasSuffix(p, "->b1") {
				t.Errorf("the subscriber did not leave b1 and return there: %s (%+v)", p, rep.SubConnections)
			}
			bound.check(t, row, "fault")
			row.bound = &bound
			return row
		}},
	}

	var rows []failoverRow
	for _, f := range faults {
		if testing.Short() && !f.short {
			t.Logf("-short: fault %s not run", f.name)
			continue
		}
		if native && strings.Contains(f.name, "subscribe_once") {
			t.Logf("MHA_LAB_NATIVE=1: fault %s not run (issue 13 measures mosquitto-ha)", f.name)
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			l.must(t, "repair")
			row := f.run(t)
			row.notes = append([]string{"subscriber " + path(row.rep.SubConnections) + ", publisher " + path(row.rep.PubConnections)}, row.notes...)
			if row.rep.Stranded > 0 {
				row.notes = append(row.notes, fmt.Sprintf("%d stranded in sessions the subscriber left (%v), collected by a return visit", row.rep.Stranded, row.rep.StrandedOn))
			}
			if row.once && row.bound != nil {
				row.notes = append(row.notes, row.bound.notes(row.rep)...)
			} else if row.once {
				row.notes = append(row.notes, targets.notes(row.rep)...)
			} else if !native {
				checkDelivery(t, row.rep)
			}
			rows = append(rows, row)
		})
	}
	sameIDLine := ""
	if !testing.Short() && !native {
		t.Run("8_same_client_id_two_brokers", func(t *testing.T) { sameIDLine = sameClientID(t, l, targets) })
	}

	var plain, once []failoverRow
	for _, r := range rows {
		if r.once {
			once = append(once, r)
		} else {
			plain = append(plain, r)
		}
	}
	table := failoverTable(plain)
	if len(once) > 0 {
		table += "\n" + sessionTable(once, len(plain)+1)
	}
	if sameIDLine != "" {
		table += "\n" + sameIDLine + "\n"
	}
	design := "mosquitto-ha (agents, client-id hash, tracked keepalived)"
	if native {
		design = "the study's design (native bridge, round robin, untracked keepalived)"
	}
	t.Logf("failover measurements, %s (%d cores, %s):\n%s", design, runtime.NumCPU(), time.Now().Format(time.DateOnly), table)
	if path := os.Getenv("MHA_FAILOVER_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Errorf("MHA_FAILOVER_TABLE: %v", err)
		}
	}
}

func seconds(ms int64) string {
	if ms < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2f s", float64(ms)/1000)
}

// failoverTable renders the rows as a Markdown table.
func failoverTable(rows []failoverRow) string {
	var b strings.Builder
	b.WriteString("| # | fault | VIP failover | subscriber receives again | longest gap | sent | acked | received | lost | duplicates | dead letters | notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, r := range rows {
		vip := "-"
		if r.vip >= 0 {
			vip = fmt.Sprintf("%.2f s", r.vip.Seconds())
		} else if strings.Contains(r.fault, "VIP") || strings.Contains(r.fault, "HAProxy") {
			vip = "never"
		}
		dead := fmt.Sprint(r.rep.DeadLetters)
		if r.rep.DeadLetters > 0 {
			dead = fmt.Sprintf("%d (%d queued on the dead broker, %d published while the subscriber had no session, %d accepted by the dead broker)",
				r.rep.DeadLetters, r.rep.DeadSubQueued, r.rep.DeadSubNoSession, r.rep.DeadPubSide)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %d | %d | %d | %d | %d | %s | %s |\n", i+1, r.fault, vip,
			seconds(r.recoverMs), seconds(r.gapMs), r.rep.Sent, r.rep.Acked, r.rep.Received, r.rep.Lost,
			r.rep.Duplicates, dead, strings.Join(r.notes, "; "))
	}
	return b.String()
}
