// Processes a test starts (mosquitto, haproxy, keepalived, the agent, labcheck): started with
// their output captured, and stopped by pid with a bound on every wait.

package mosqtest

import (
	"bytes"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StopTimeout is how long Stop waits after SIGTERM before it sends SIGKILL, and how long Stop
// and Kill wait after SIGKILL before they fail the test.
const StopTimeout = 5 * time.Second

// Proc is one process a test started. Stop and Kill are safe to call twice and after the
// process exited on its own.
type Proc struct {
	t   testing.TB
	cmd *exec.Cmd
	// Out collects what the process writes to stderr, and to stdout unless the command's
	// Stdout was set before StartProc.
	Out *Output

	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// StartProc starts cmd with its output in Out, fails the test if it cannot start, and
// registers Stop with t.Cleanup.
func StartProc(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{t: t, cmd: cmd, Out: &Output{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.Out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.Out
	}
	if cmd.WaitDelay == 0 {
		// A child that inherited the output pipes must not keep Wait from returning once the
		// process itself exited.
		cmd.WaitDelay = time.Second
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("mosqtest: start %v: %v", cmd.Args, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.Stop)
	return p
}

// LookPath returns the path of the program name (also looked for in /usr/sbin and /sbin, which
// a non-root PATH may lack), or fails the test, never skips it, with the command hint that
// installs it.
func LookPath(t testing.TB, name, hint string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("%s is not installed: %s", name, hint)
	return ""
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and its output is collected.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited says whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the result of waiting for the process (nil for exit status 0); valid once Done is
// closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig (SIGHUP, SIGSTOP, ...) to the process; an exited process is an error.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop ends the process with SIGTERM, then SIGKILL if it is still running after StopTimeout,
// and waits for it at most StopTimeout more.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(StopTimeout):
		p.Kill()
	}
}

// Kill ends the process with SIGKILL, as a crash or kill -9 would, and waits for it at most
// StopTimeout. A process that exited before is left alone.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(StopTimeout):
		p.t.Errorf("mosqtest: pid %d (%s) still running %s after SIGKILL", p.Pid(), p.cmd.Path, StopTimeout)
	}
}

// Output collects what a process started by a test writes; safe for concurrent use.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String is everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// Bytes is a copy of everything written so far.
func (o *Output) Bytes() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Clone(o.b.Bytes())
}
