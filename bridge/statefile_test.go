package bridge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mosquitto-ha/bridge"
)

// Issue 10, finding 3: the state journal on a full disk and an unreadable state file.

// logCounter is a slog handler that counts records by message prefix.
type logCounter struct {
	mu   sync.Mutex
	msgs []string
}

func (h *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.msgs = append(h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCounter) WithGroup(string) slog.Handler      { return h }
func (h *logCounter) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// mountTmpfs mounts a tmpfs of size bytes (root only) and unmounts it when the test ends.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs to fill a disk: run it as root (scripts/test.sh does)")
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file until the disk is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return p
		}
	}
}

// A full disk under the state file: the agent keeps relaying, says so once, and once the disk
// has room again its state file holds every subscription made meanwhile.
func TestStateJournalDiskFull(t *testing.T) {
	small := mountTmpfs(t, 256<<10)
	logs := &logCounter{}
	c := newCluster(t, 2, func(i int, o *bridge.Options) {
		if i == 1 {
			o.StatePath = filepath.Join(small, "b2.json")
			o.Logger = slog.New(logs)
		}
	})
	for i := range c.brokers {
		c.startAgent(i)
	}
	c.waitSettled()
	filler := fill(t, small)
	s := connect(t, c.brokers[1].Addr, "sub", false)
	const n = 100
	for i := 0; i < n; i++ {
		s.subscribe(fmt.Sprintf("full/%d/%s", i, strings.Repeat("x", 150)), 1)
	}
	c.waitPeerFilters(1, n)
	pub := connect(t, c.brokers[0].Addr, "pub", true)
	pub.publish(fmt.Sprintf("full/%d/%s", n-1, strings.Repeat("x", 150)), 1, false, "still relayed")
	s.waitCount(1, 5*time.Second)
	time.Sleep(3 * time.Second) // more than one retry interval of failed writes
	if k := logs.count("state file cannot be written"); k != 1 {
		t.Errorf("the full disk was reported %d times, want once", k)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the state file written again", func() string {
		if logs.count("state file written again") == 0 {
			return "not yet"
		}
		return ""
	})
	// The state (base and journal) as a restarted agent reads it.
	c.stopAgent(1)
	c.startAgent(1)
	waitFor(t, 10*time.Second, "the restarted agent to restore every subscription", func() string {
		if got := c.agent(1).Status().LocalFilters; got != n {
			return fmt.Sprintf("%d filters restored", got)
		}
		return ""
	})
}

// An unreadable state file (permission denied, not corruption) stops the agent with a clear
// error and is left as it was. As root the agent runs in a child process as nobody, since root
// reads any file.
func TestStateFileUnreadableStopsAgent(t *testing.T) {
	if os.Getenv("MHA_HELPER_STATE") != "" {
		return // the child of this test runs TestHelperAgentWithState
	}
	dir, err := os.MkdirTemp("", "mha-eacces-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "b1.json")
	orig := []byte(`{"version":1,"node":"b1","clients":{"c":{"persistent":true,"connected":false,"subs":{"keep/#":1}}}}`)
	if err := os.WriteFile(state, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	var out []byte
	if os.Geteuid() == 0 {
		// The test binary, copied where nobody can run it.
		bin := filepath.Join(dir, "bridge.test")
		src, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, src, 0o755); err != nil {
			t.Fatal(err)
		}
		// The agent's user owns the directory (it may write its state there) but not the file.
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-test.run=^TestHelperAgentWithState$", "-test.count=1")
		cmd.Env = append(os.Environ(), "MHA_HELPER_STATE="+state, "HOME="+dir, "GOCOVERDIR=")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err = cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("the agent ran with an unreadable state file:\n%s", out)
		}
	} else {
		if err := os.Chmod(state, 0); err != nil {
			t.Fatal(err)
		}
		err := runAgentWithState(state)
		out = []byte(fmt.Sprint(err))
		os.Chmod(state, 0o600)
	}
	if !bytes.Contains(out, []byte("state file unreadable")) || !bytes.Contains(out, []byte("permission denied")) {
		t.Errorf("the agent did not say why it stopped:\n%s", out)
	}
	if got, _ := os.ReadFile(state); !bytes.Equal(got, orig) {
		t.Errorf("the unreadable state file was changed: %q", got)
	}
}

// TestHelperAgentWithState is the child process of TestStateFileUnreadableStopsAgent: it runs
// an agent with the state file named in MHA_HELPER_STATE and fails with its error. Without that
// variable it has nothing to do.
func TestHelperAgentWithState(t *testing.T) {
	state := os.Getenv("MHA_HELPER_STATE")
	if state == "" {
		return
	}
	if err := runAgentWithState(state); err != nil {
		t.Fatalf("agent: %v", err)
	}
}

func runAgentWithState(state string) error {
	a, err := bridge.New(bridge.Options{Cluster: "t", Node: "b1", Local: "127.0.0.1:1", StatePath: state,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return a.Run(ctx)
}
