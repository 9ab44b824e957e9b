package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

// runTool runs the command in-process and returns its exit status and output.
func runTool(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(args, &stdout, &stderr)
	t.Logf("mqbench %s -> %d in %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code,
		time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

func runJSON(t *testing.T, args ...string) *result {
	t.Helper()
	code, out, _ := runTool(t, append(args, "--json", "--quiet")...)
	if code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
	var r result
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decode JSON %q: %v", out, err)
	}
	return &r
}

// Two publishers x 200 messages at QoS 1 to three subscribers: two match the topic (exactly and by
// wildcard), one does not and must expect 0.
func TestDeliveryJSON(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	r := runJSON(t, "--pub-brokers", b.Addr, "--sub-brokers", b.Addr,
		"--publishers", "2", "--count", "200", "--qos", "1",
		"--subscribers", "3", "--sub-topics", "bench/1,bench/+,other/1", "--topic", "bench/1",
		"--timeout", "10s")
	if r.Publishers != 2 || r.Count != 200 || r.Subscribers != 3 || r.QoS != 1 || r.Size != 100 {
		t.Errorf("parameters not reported: %+v", r)
	}
	if r.MatchingSubscribers != 2 || r.Expected != 800 || r.Received != 800 || r.Distinct != 800 ||
		r.Lost != 0 || r.Duplicates != 0 || r.Unexpected != 0 || r.Invalid != 0 {
		t.Errorf("matching %d expected %d received %d distinct %d lost %d dup %d unexpected %d invalid %d",
			r.MatchingSubscribers, r.Expected, r.Received, r.Distinct, r.Lost, r.Duplicates, r.Unexpected, r.Invalid)
	}
	if !r.Complete || r.TimedOut || r.Published != 400 || r.Acked != 400 || r.PublishErrors != 0 {
		t.Errorf("complete %v timed out %v published %d acked %d errors %d", r.Complete, r.TimedOut, r.Published, r.Acked, r.PublishErrors)
	}
	if r.PublishRate <= 0 || r.DeliveryRate <= 0 || r.E2EDurationS <= 0 || r.PublishDurationS <= 0 ||
		r.E2EDurationS < r.PublishDurationS/2 {
		t.Errorf("rates/durations: publish %.3fs %.0f/s, e2e %.3fs %.0f/s", r.PublishDurationS, r.PublishRate, r.E2EDurationS, r.DeliveryRate)
	}
	if r.LatencySamples != 800 || r.LatencyP50Ms <= 0 || r.LatencyP50Ms > r.LatencyP99Ms || r.LatencyP99Ms > r.LatencyMaxMs {
		t.Errorf("latency: samples %d p50 %.3f p99 %.3f max %.3f", r.LatencySamples, r.LatencyP50Ms, r.LatencyP99Ms, r.LatencyMaxMs)
	}
	if r.PerSubMin != 400 || r.PerSubMax != 400 {
		t.Errorf("per subscriber min %d max %d, want 400", r.PerSubMin, r.PerSubMax)
	}
	want := map[string]int64{"bench/1": 400, "bench/+": 400, "other/1": 0}
	if len(r.Subs) != 3 {
		t.Fatalf("%d subscribers reported", len(r.Subs))
	}
	for _, s := range r.Subs {
		if w := want[s.Filter]; s.Expected != w || s.Received != w || s.Lost != 0 || s.Duplicates != 0 {
			t.Errorf("subscriber %d (%s): expected %d received %d lost %d dup %d, want %d", s.Index, s.Filter, s.Expected, s.Received, s.Lost, s.Duplicates, w)
		}
	}
}

// The readable table, at QoS 0 with pacing: 1 publisher x 20 messages at 100/s takes about 0.19 s.
func TestTableAndRate(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	code, out, _ := runTool(t, "--pub-brokers", b.Addr, "--sub-brokers", b.Addr,
		"--publishers", "1", "--count", "20", "--qos", "0", "--rate", "100", "--timeout", "5s")
	if code != 0 {
		t.Fatalf("exit status %d", code)
	}
	for _, want := range []string{"publish ", "end to end", "expected 20, received 20 (distinct 20), lost 0, duplicates 0",
		"latency ms", "per subscriber", "complete, wall"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	r := runJSON(t, "--pub-brokers", b.Addr, "--sub-brokers", b.Addr,
		"--publishers", "1", "--count", "20", "--qos", "0", "--rate", "100", "--timeout", "5s")
	if r.Received != 20 || r.PublishDurationS < 0.18 || r.PublishRate > 110 {
		t.Errorf("paced run: received %d in %.3f s (%.0f/s), want 20 in >= 0.18 s", r.Received, r.PublishDurationS, r.PublishRate)
	}
}

// A subscriber on a broker the publishers do not use (no bridge) gets nothing: the loss is
// reported, and the run ends after --drain.
func TestLossDetected(t *testing.T) {
	a := mosqtest.Start(t, mosqtest.Options{})
	b := mosqtest.Start(t, mosqtest.Options{})
	start := time.Now()
	r := runJSON(t, "--pub-brokers", a.Addr, "--sub-brokers", b.Addr,
		"--publishers", "2", "--count", "100", "--qos", "1", "--drain", "300ms", "--timeout", "10s")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("run took %s with --drain 300ms", took)
	}
	if r.Expected != 200 || r.Received != 0 || r.Lost != 200 || r.Complete || r.TimedOut {
		t.Errorf("expected %d received %d lost %d complete %v timed out %v, want 200 0 200 false false",
			r.Expected, r.Received, r.Lost, r.Complete, r.TimedOut)
	}
	if r.Acked != 200 || r.E2EDurationS != 0 || r.LatencySamples != 0 {
		t.Errorf("acked %d e2e %.3f samples %d", r.Acked, r.E2EDurationS, r.LatencySamples)
	}
}

// --phase-file: nothing is published before the caller removes "ready", the clients stay
// connected until it removes "done"; without removal the run ends at --timeout with a setup error.
func TestPhaseFile(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	path := filepath.Join(t.TempDir(), "phase")
	type out struct {
		r   *result
		err error
	}
	done := make(chan out, 1)
	go func() {
		cfg, code := parseArgs([]string{"--pub-brokers", b.Addr, "--sub-brokers", b.Addr, "--publishers", "1",
			"--count", "50", "--topic", "bench/1", "--phase-file", path, "--timeout", "10s", "--quiet"}, io.Discard, io.Discard)
		if cfg == nil {
			done <- out{err: fmt.Errorf("usage error %d", code)}
			return
		}
		r, err := bench(cfg, io.Discard)
		done <- out{r, err}
	}()
	await := func(word string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if data, err := os.ReadFile(path); err == nil && string(data) == word+"\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the phase file", word)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		select {
		case o := <-done:
			t.Fatalf("the run ended before %q was removed: %+v %v", word, o.r, o.err)
		default:
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	await("ready")
	await("done")
	o := <-done
	if o.err != nil || !o.r.Complete || o.r.TimedOut || o.r.Received != 50 {
		t.Fatalf("after the handshake: %v, %+v", o.err, o.r)
	}

	code, _, stderr := runTool(t, "--pub-brokers", b.Addr, "--sub-brokers", b.Addr, "--publishers", "1",
		"--count", "5", "--topic", "bench/1", "--phase-file", path, "--timeout", "1s", "--quiet")
	if code != 1 || !strings.Contains(stderr, "was not removed") {
		t.Errorf("no handshake: exit %d, stderr %q; want 1 and \"was not removed\"", code, stderr)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the phase file is left behind: %v", err)
	}
}

// --timeout bounds a run that would take 10 s: it stops, reports what was sent, exits 0.
func TestTimeoutBounds(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	start := time.Now()
	r := runJSON(t, "--pub-brokers", b.Addr, "--sub-brokers", b.Addr,
		"--publishers", "1", "--count", "100", "--rate", "10", "--timeout", "1s")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("run took %s with --timeout 1s", took)
	}
	if !r.TimedOut || r.Complete || r.Published < 5 || r.Published > 12 || r.Expected != r.Published {
		t.Errorf("timed out %v complete %v published %d expected %d", r.TimedOut, r.Complete, r.Published, r.Expected)
	}
}

// A broker that dies in the middle of a run: publishes fail, connections are lost, the loss is
// reported and the run still ends by itself with status 0.
func TestBrokerDiesMidRun(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	go func() {
		time.Sleep(400 * time.Millisecond)
		b.Kill()
	}()
	start := time.Now()
	r := runJSON(t, "--pub-brokers", b.Addr, "--sub-brokers", b.Addr,
		"--publishers", "2", "--count", "100", "--rate", "100", "--drain", "200ms", "--timeout", "5s")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("run took %s", took)
	}
	if r.ConnectionsLost != 3 || r.Lost == 0 || r.Received == 0 || r.PublishErrors == 0 || r.PublishError == "" || r.Complete {
		t.Errorf("connections lost %d, lost %d, received %d, publish errors %d (%q), complete %v",
			r.ConnectionsLost, r.Lost, r.Received, r.PublishErrors, r.PublishError, r.Complete)
	}
	if r.Expected != 200 || r.Published != 200 || r.Acked+r.PublishErrors != 200 {
		t.Errorf("expected %d published %d acked %d errors %d", r.Expected, r.Published, r.Acked, r.PublishErrors)
	}
}

func TestTopicMatches(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"test_1/1", "test_1/1", true},
		{"test_1/1", "test_1/10", false},
		{"test_1/+", "test_1/1", true},
		{"test_1/+", "test_1/1/2", false},
		{"test_1/#", "test_1", true},
		{"test_1/#", "test_1/1/2", true},
		{"#", "test_1/1", true},
		{"+/+", "test_1/1", true},
		{"+", "test_1/1", false},
		{"+/1", "/1", true},
		{"#", "$SYS/broker", false},
		{"+/broker", "$SYS/broker", false},
		{"$SYS/#", "$SYS/broker", true},
		{"a/+/c", "a//c", true},
		{"a/b", "a/b/", false},
	} {
		if got := topicMatches(c.filter, c.topic); got != c.want {
			t.Errorf("topicMatches(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for us := 1; us <= 10000; us++ {
		h.record(int64(us) * 1000)
	}
	var a aggHistogram
	a.merge(&h)
	for _, c := range []struct{ q, want float64 }{{0.5, 5}, {0.99, 9.9}, {1, 10}} {
		if got := a.quantileMs(c.q); math.Abs(got-c.want)/c.want > 0.02 {
			t.Errorf("q%.2f = %.3f ms, want %.3f within 2%%", c.q, got, c.want)
		}
	}
	if a.maxMs() != 10 || math.Abs(a.meanMs()-5.0005) > 1e-9 {
		t.Errorf("max %.3f mean %.6f", a.maxMs(), a.meanMs())
	}
	for us := uint64(0); us < 1<<20; us += 997 {
		i := histIndex(us)
		if v := histValue(i); math.Abs(v-float64(us)) > float64(us)/64+1 {
			t.Fatalf("bucket of %d us is %d with value %.1f", us, i, v)
		}
	}
	if i := histIndex(math.MaxUint64); i != histBuckets-1 {
		t.Errorf("largest value lands in bucket %d of %d", i, histBuckets)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--qos", "3"},
		{"--size", "10"},
		{"--publishers", "0"},
		{"--count", "-1"},
		{"--no-such-flag"},
		{"--pub-brokers", "127.0.0.1:99999"},
		{"--sub-brokers", ""},
		{"--topic", "a/+"},
		{"--sub-topic-pattern", "a/#/%d"},
		{"--sub-topic-pattern", "a/%s"},
		{"--timeout", "0s"},
		{"--inflight", "0"},
		{"--sub-topics", "a,b", "--sub-topic-pattern", "c/%d"},
		{"--sub-topics", "a,,b"},
		{"positional"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit status %d, want 2 (stderr %q)", args, code, stderr.String())
		} else if !strings.Contains(stderr.String(), "mqbench:") {
			t.Errorf("%q: no message on stderr", args)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "--sub-topic-pattern") {
		t.Errorf("--help: exit %d, stdout %q", code, stdout.String())
	}
}

func TestCannotConnect(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", mosqtest.FreePort(t))
	code, _, stderr := runTool(t, "--pub-brokers", addr, "--sub-brokers", addr, "--timeout", "5s", "--quiet")
	if code != 1 || !strings.Contains(stderr, addr) {
		t.Errorf("exit status %d, stderr %q: want 1 naming %s", code, stderr, addr)
	}
}

// --sub-persistent: the subscribers connect with clean session false, and a clean connect with
// each of their ids at the end leaves no session behind on the broker.
func TestPersistentSubscribersLeaveNothing(t *testing.T) {
	b := mosqtest.Start(t, mosqtest.Options{})
	r := runJSON(t, "--pub-brokers", b.Addr, "--sub-brokers", b.Addr, "--publishers", "1", "--count", "50",
		"--subscribers", "2", "--sub-persistent", "--client-prefix", "pers-", "--timeout", "10s")
	if r.Lost != 0 || r.Received != 100 {
		t.Errorf("received %d lost %d, want 100 and 0", r.Received, r.Lost)
	}
	count := func() (persistent, cleaned int) {
		for _, l := range strings.Split(b.Output(), "\n") {
			if strings.Contains(l, " as pers-") && strings.Contains(l, "-s") {
				switch {
				case strings.Contains(l, ", c0,"):
					persistent++
				case strings.Contains(l, ", c1,"):
					cleaned++
				}
			}
		}
		return
	}
	// The broker's log reaches Output through a pipe, after the CONNACK mqbench waited for: give
	// the last lines a moment (a CI run read the log before the last clean connect's line).
	persistent, cleaned := count()
	for deadline := time.Now().Add(5 * time.Second); (persistent != 2 || cleaned != 2) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		persistent, cleaned = count()
	}
	if persistent != 2 || cleaned != 2 {
		t.Errorf("subscriber connects: %d persistent, %d clean (want 2 and 2); broker log:\n%s", persistent, cleaned, b.Output())
	}
}
