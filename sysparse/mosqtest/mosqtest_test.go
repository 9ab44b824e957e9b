package mosqtest

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestStartStopRestart(t *testing.T) {
	b := Start(t, Options{Persistence: true})
	if b.Pid() == 0 {
		t.Fatal("no pid")
	}
	b.Restart()
	c, err := net.Dial("tcp", b.Addr)
	if err != nil {
		t.Fatalf("broker not reachable after restart: %v", err)
	}
	c.Close()
	b.Kill()
	if _, err := net.Dial("tcp", b.Addr); err == nil {
		t.Fatal("broker still reachable after Kill")
	}
	b.StartAgain()
	b.Stop()
	b.Stop()
}

func TestProcOutputAndExit(t *testing.T) {
	p := StartProc(t, exec.Command("sh", "-c", "echo out; echo err >&2; exit 3"))
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("sh did not exit")
	}
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) || ee.ExitCode() != 3 {
		t.Errorf("Err = %v, want exit status 3", p.Err())
	}
	if got := p.Out.String(); got != "out\nerr\n" && got != "err\nout\n" {
		t.Errorf("Out = %q, want both lines", got)
	}
	p.Stop() // after the process exited on its own: nothing to do
}

// A process that ignores SIGTERM and leaves a child holding its output pipe: Stop still
// returns, bounded by StopTimeout and the wait for the pipe.
func TestProcStopEscalatesAndIsBounded(t *testing.T) {
	p := StartProc(t, exec.Command("sh", "-c", "trap '' TERM; sleep 60 & echo \"child $!\"; wait"))
	var child int
	for {
		if _, err := fmt.Sscanf(p.Out.String(), "child %d", &child); err == nil {
			break
		}
		if p.Exited() {
			t.Fatalf("sh exited: %v", p.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) }) // the sleep this test started
	start := time.Now()
	p.Stop()
	took := time.Since(start)
	if !p.Exited() {
		t.Fatal("Stop returned with the process running")
	}
	if took < StopTimeout || took > StopTimeout+3*time.Second {
		t.Errorf("Stop took %s, want SIGKILL after %s and a bounded wait", took, StopTimeout)
	}
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("Err = %v, want killed by SIGKILL", p.Err())
	}
	p.Stop()
	p.Kill()
}

func TestProcKill(t *testing.T) {
	p := StartProc(t, exec.Command("sleep", "60"))
	if err := p.Signal(syscall.SIGSTOP); err != nil { // a stopped process still dies of SIGKILL
		t.Fatal(err)
	}
	start := time.Now()
	p.Kill()
	if !p.Exited() || time.Since(start) > time.Second {
		t.Fatalf("Kill: exited %v after %s", p.Exited(), time.Since(start))
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Error("Signal to an exited process reported no error")
	}
}
