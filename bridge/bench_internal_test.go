package bridge

import (
	"fmt"
	"math/rand"
	"testing"
)

// BenchmarkRelayDecision is the hot path of a local publish: which peers want it, and handing it
// to their queues. Three peers with 100k filters each (a realistic mix of literal, '+' and '#').
func BenchmarkRelayDecision(b *testing.B) {
	a, err := New(Options{Cluster: "bench", Node: "a", Local: "127.0.0.1:1",
		Peers: []PeerAddr{{Name: "p1", Address: "x:1"}, {Name: "p2", Address: "x:2"}, {Name: "p3", Address: "x:3"}}})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	for i, p := range a.peerList() {
		var filters []string
		for k := 0; k < 100000; k++ {
			switch n := rng.Intn(10); {
			case n < 7:
				filters = append(filters, fmt.Sprintf("site/%d/dev/%d/temp", rng.Intn(1000), rng.Intn(100)))
			case n < 9:
				filters = append(filters, fmt.Sprintf("site/+/dev/%d/temp", rng.Intn(1000)))
			default:
				filters = append(filters, fmt.Sprintf("site/%d/#", rng.Intn(1000)))
			}
		}
		p.interest.apply(interestMsg{Snapshot: true, Epoch: 1, Filters: filters}, 0)
		p.interest.setSynced(true)
		p.setUp()
		_ = i
	}
	topics := make([]string, 1024)
	for i := range topics {
		topics[i] = fmt.Sprintf("site/%d/dev/%d/temp", rng.Intn(1000), rng.Intn(100))
	}
	unwanted := make([]string, 1024) // nobody's: the local workload, every one held for catch-up
	for i := range unwanted {
		unwanted[i] = fmt.Sprintf("local/%d/dev/%d/temp", rng.Intn(1000), rng.Intn(100))
	}
	payload := make([]byte, 100)
	// "route" is the choice alone; "route+catchup" is what the agent runs, which also holds the
	// publishes some peer did not get (catchup.go).
	for _, bench := range []struct {
		name        string
		withCatchUp bool
		topics      []string
	}{{"wanted/route", false, topics}, {"wanted/route+catchup", true, topics},
		{"unwanted/route", false, unwanted}, {"unwanted/route+catchup", true, unwanted}} {
		withCatchUp, topics := bench.withCatchUp, bench.topics
		b.Run(bench.name, func(b *testing.B) {
			b.ReportAllocs()
			relayed := 0
			for i := 0; i < b.N; i++ {
				m := &message{Topic: topics[i%len(topics)], Payload: payload, QoS: 0, Received: int64(i) * 1000}
				if withCatchUp {
					a.catchUp.relay(m, 1, a.peerList(), a.shares, 0)
				} else {
					relayToPeers(m, 1, a.peerList(), a.shares, 0)
				}
				if i%4096 == 0 {
					for _, p := range a.peerList() {
						relayed += p.queue.Len()
						p.queue = newRelayQueue(1<<20, 1<<30)
					}
				}
			}
			b.ReportMetric(float64(relayed)/float64(max(b.N, 1)), "relays/op")
		})
	}
}

// BenchmarkBatchEncodeDecode is the cost of packing relays into one forward publish and
// unpacking them on the other side, per relay, with signing.
func BenchmarkBatchEncodeDecode(b *testing.B) {
	s := newSigner([]byte("bench secret"))
	rs := make([]*relay, 256)
	for i := range rs {
		rs[i] = &relay{topic: fmt.Sprintf("test_1/%d", i%500), payload: make([]byte, 100), qos: 1}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(rs) * 100))
	for i := 0; i < b.N; i++ {
		p := s.seal("$forward-b/a", appendBatch(nil, 1, rs, true))
		open, err := s.open("$forward-b/a", p)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := decodeBatch(open, 0); err != nil {
			b.Fatal(err)
		}
	}
}
