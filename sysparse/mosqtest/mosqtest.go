// Package mosqtest is the test-helper package: it starts real Mosquitto brokers for tests, each
// on a free loopback port, configured to publish the `$SYS/broker/log` lines that package
// sysparse reads, and stopped by pid when the test ends (mosqtest.go); it starts and stops any
// other process a test runs, with its output captured (proc.go); and it runs the table test of
// a configuration generator's invalid parameters (invalid.go). It never mocks Mosquitto: a
// missing binary fails the test with the command that installs it.
package mosqtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// InstallHint is the command that installs every real process the tests start.
const InstallHint = "apt-get update && apt-get install -y mosquitto mosquitto-clients haproxy keepalived iproute2 (or run scripts/test.sh as root)"

// LogConf is the part of mosquitto.conf that makes a broker publish the log lines the agent
// reads. Mosquitto accepts one log_type per line.
const LogConf = `log_dest topic
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
log_type unsubscribe
`

// Options configures a broker. The zero value is a plain anonymous broker with topic logging.
type Options struct {
	// Port to listen on; 0 picks a free loopback port.
	Port int
	// Persistence keeps the broker's state in its directory across Restart.
	Persistence bool
	// Extra is appended verbatim to the generated mosquitto.conf.
	Extra string
	// NoLogConf leaves out LogConf (to test a broker that is not set up for the agent).
	NoLogConf bool
}

// Broker is one running mosquitto process.
type Broker struct {
	t    testing.TB
	opts Options
	dir  string
	// Port and Addr ("127.0.0.1:port") are where clients reach the broker.
	Port int
	Addr string

	mu   sync.Mutex
	proc *Proc // nil while stopped
	out  *Output
}

// Binary returns the path of the mosquitto binary or fails the test with the install command.
func Binary(t testing.TB) string {
	t.Helper()
	return LookPath(t, "mosquitto", InstallHint)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mosqtest: no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs a broker and registers its stop with t.Cleanup.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	if opts.Port == 0 {
		opts.Port = FreePort(t)
	}
	b := &Broker{t: t, opts: opts, dir: t.TempDir(), Port: opts.Port,
		Addr: "127.0.0.1:" + strconv.Itoa(opts.Port)}
	b.start()
	t.Cleanup(b.Stop)
	return b
}

// Conf returns the mosquitto.conf the broker runs with.
func (b *Broker) Conf() string {
	var c strings.Builder
	fmt.Fprintf(&c, "user root\nlistener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n", b.Port)
	c.WriteString("max_queued_messages 100000\nlog_dest stderr\n")
	if b.opts.Persistence {
		fmt.Fprintf(&c, "persistence true\npersistence_location %s/\nautosave_interval 1\n", b.dir)
	} else {
		c.WriteString("persistence false\n")
	}
	if !b.opts.NoLogConf {
		c.WriteString(LogConf)
	}
	c.WriteString(b.opts.Extra)
	c.WriteString("\n")
	return c.String()
}

func (b *Broker) start() {
	t := b.t
	t.Helper()
	bin := Binary(t)
	conf := filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(b.Conf()), 0o600); err != nil {
		t.Fatalf("mosqtest: %v", err)
	}
	p := StartProc(t, exec.Command(bin, "-c", conf))
	b.mu.Lock()
	b.proc, b.out = p, p.Out
	b.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p.Exited() {
			t.Fatalf("mosqtest: mosquitto exited at start: %s", b.Output())
		}
		c, err := net.DialTimeout("tcp", b.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("mosqtest: mosquitto did not listen on %s: %s", b.Addr, b.Output())
}

// Pid is the process id of the running broker, or 0.
func (b *Broker) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc == nil {
		return 0
	}
	return b.proc.Pid()
}

// Output is what the broker printed (its stderr log).
func (b *Broker) Output() string {
	b.mu.Lock()
	out := b.out
	b.mu.Unlock()
	if out == nil {
		return ""
	}
	return out.String()
}

// take returns the running process and marks the broker stopped.
func (b *Broker) take() *Proc {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.proc
	b.proc = nil
	return p
}

// Stop ends the broker with SIGTERM (it saves persistence) and waits. Safe to call twice.
func (b *Broker) Stop() {
	if p := b.take(); p != nil {
		p.Stop()
	}
}

// Kill ends the broker with SIGKILL, as a crash would.
func (b *Broker) Kill() {
	if p := b.take(); p != nil {
		p.Kill()
	}
}

// Restart starts the broker again on the same port and directory.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	b.start()
}

// StartAgain starts a stopped or killed broker on the same port and directory.
func (b *Broker) StartAgain() {
	b.t.Helper()
	b.start()
}
