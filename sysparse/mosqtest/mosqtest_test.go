package mosqtest

import (
	"net"
	"testing"
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
