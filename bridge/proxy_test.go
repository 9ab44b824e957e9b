// proxy_test.go owns the TCP proxy the fault tests put between an agent and a peer broker, to
// cut the link between them without touching either process.

package bridge_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"mosquitto-ha/sysparse/mosqtest"
)

// tcpProxy forwards a loopback port to a broker. drop closes the connections it carries and
// keeps accepting (a blip: the link comes back at once); cut also stops accepting until heal
// (a partition). The proxy is closed when the test ends.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, target: target, addr: fmt.Sprintf("127.0.0.1:%d", mosqtest.FreePort(t))}
	p.heal()
	t.Cleanup(p.cut)
	return p
}

// heal accepts connections again after cut.
func (p *tcpProxy) heal() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
}

// drop closes every connection through the proxy; new ones are accepted.
func (p *tcpProxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// cut stops accepting and closes every connection, until heal.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.drop()
}
