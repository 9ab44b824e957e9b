// gather.go paces a busy connection's reads so that one wake-up carries many packets.
package mqttconn

import (
	"io"
	"time"
)

// gatherReader is the socket side of Conn's read buffer. While packets queue up (the previous
// read brought two or more, or the last three reads came within one pause), it waits until
// pause has passed since the previous read before reading again, so the packets of that pause
// arrive in one read system call and one wake-up instead of one each: on a paravirtualised
// guest a sleep and a wake-up cost 25-35 us, more than the agent's work for a message
// (docs/benchmarks.md).
// A connection whose packets come one at a time (a relay and its acknowledgement, then nothing
// for a while) is never held: each packet is read as soon as it arrives, so pacing adds latency
// only under load, at most one pause per read.
//
// The price is a ceiling: a connection whose sender waits for acknowledgements (a window of W
// QoS 1/2 messages) moves at most W per pause once it is busy, 20,000 messages/s at Mosquitto's
// default window of 20 and a 1 ms pause. Holding the read only while the window was open was
// measured and lost the gain at QoS 1 (docs/benchmarks.md); the lab's loads stay far below it.
//
// Not reading is not enough: the Go runtime's poller is edge-triggered, so every segment that
// arrives during the pause would still wake the thread (measured: 0.04 reads but 0.6 context
// switches per message). So during the pause the socket's receive low-water mark (SO_RCVLOWAT)
// is raised to gatherLowat bytes, below which the kernel signals no arrival, and lowered to 1
// byte again before the read, which then takes what came and blocks, if nothing did, until the
// first byte.
type gatherReader struct {
	r     io.Reader
	pause time.Duration
	// lowat sets the socket's receive low-water mark; nil where it cannot (not TCP).
	lowat func(bytes int)
	// packets counts the packets parsed so far; Conn's reader goroutine, which also calls Read,
	// increments it.
	packets *int

	seen int // *packets at the previous read
	// last, before and first: when the previous three reads returned, the newest first.
	last, before, first time.Time
}

// gatherLowat is the low-water mark during a pause: a quarter of the read buffer, so a burst
// that fills it ends the pause early rather than waiting out the pause.
const gatherLowat = 16 << 10

func (g *gatherReader) Read(b []byte) (int, error) {
	brought := *g.packets - g.seen
	g.seen = *g.packets
	queueing := brought >= 2 || g.last.Sub(g.first) < g.pause
	if queueing {
		if d := g.pause - time.Since(g.last); d > 0 {
			if g.lowat != nil {
				g.lowat(gatherLowat)
			}
			time.Sleep(d)
			if g.lowat != nil {
				g.lowat(1)
			}
		}
	}
	n, err := g.r.Read(b)
	g.first, g.before, g.last = g.before, g.last, time.Now()
	return n, err
}
