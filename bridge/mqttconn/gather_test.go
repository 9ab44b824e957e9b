package mqttconn

import (
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// countingReader returns one byte per Read, blocking until the feed has one, and counts reads.
type countingReader struct {
	feed  chan byte
	reads atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	v, ok := <-c.feed
	if !ok {
		return 0, io.EOF
	}
	c.reads.Add(1)
	b[0] = v
	n := 1
	for n < len(b) { // take what else is already there, as a socket read does
		select {
		case v, ok := <-c.feed:
			if !ok {
				return n, nil
			}
			b[n] = v
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

// A stream of bytes 100 us apart is read in gathers of a pause each: far fewer reads than bytes.
func TestGatherReaderGathersABusyStream(t *testing.T) {
	src := &countingReader{feed: make(chan byte, 1<<16)}
	var packets int // one byte is one packet here
	g := &gatherReader{r: src, pause: 5 * time.Millisecond, packets: &packets}
	const bytes = 400
	go func() {
		for range bytes {
			src.feed <- 'x'
			time.Sleep(100 * time.Microsecond)
		}
		close(src.feed)
	}()
	got, buf := 0, make([]byte, 1024)
	for {
		n, err := g.Read(buf)
		got += n
		packets += n
		if err == io.EOF {
			break
		}
	}
	if got != bytes {
		t.Fatalf("read %d bytes; want %d", got, bytes)
	}
	// 400 bytes at >= 100 us take >= 40 ms: about 8 reads of 5 ms; without pacing about 400.
	if r := src.reads.Load(); r > bytes/4 {
		t.Fatalf("%d reads for %d bytes: the busy stream was not gathered", r, bytes)
	}
}

// A byte that arrives after a quiet spell is read at once, and so are the next two; once three
// reads came within a pause, the next waits until a pause has passed since the last.
func TestGatherReaderHoldsOnlyABusyStream(t *testing.T) {
	const pause = 50 * time.Millisecond
	src := &countingReader{feed: make(chan byte, 16)}
	var packets int
	g := &gatherReader{r: src, pause: pause, packets: &packets}
	buf := make([]byte, 1)
	read := func() time.Duration {
		t.Helper()
		src.feed <- 'x'
		start := time.Now()
		n, err := g.Read(buf)
		if n != 1 || err != nil {
			t.Fatalf("read %d, %v", n, err)
		}
		packets += n
		return time.Since(start)
	}
	for round := range 3 {
		time.Sleep(3 * pause) // quiet
		for i := range 3 {
			if d := read(); d > pause/2 {
				t.Fatalf("round %d: read %d after a quiet spell was held %v", round, i, d)
			}
		}
		if d := read(); d < pause*8/10 {
			t.Fatalf("round %d: the fourth read in a row came after %v, want about %v", round, d, pause)
		}
	}
}
