package bridge

import (
	"fmt"
	"testing"

	"mosquitto-ha/topictree"
)

// BenchmarkShareRoute is the relay choice for shared subscriptions on its own: 3 peers and the
// local broker, each with 100 groups on "jobs/<k>/#", half of them on two brokers; one topic in
// two matches a group.
func BenchmarkShareRoute(b *testing.B) {
	a, err := New(Options{Cluster: "bench", Node: "a", Local: "127.0.0.1:1",
		Peers: []PeerAddr{{Name: "p1", Address: "x:1"}, {Name: "p2", Address: "x:2"}, {Name: "p3", Address: "x:3"}}})
	if err != nil {
		b.Fatal(err)
	}
	peers := a.peerList()
	for k := 0; k < 100; k++ {
		sh := topictree.Share{Group: fmt.Sprintf("g%d", k), Filter: fmt.Sprintf("jobs/%d/#", k)}
		if k%4 == 0 {
			_, _ = a.model.shares.Add(sh)
		}
		peers[k%3].interest.shares.Load().Add(sh)
		if k%2 == 0 {
			peers[(k+1)%3].interest.shares.Load().Add(sh)
		}
	}
	for _, p := range peers {
		p.interest.setSynced(true)
		p.setUp()
	}
	topics := make([]string, 1024)
	for i := range topics {
		topics[i] = fmt.Sprintf("jobs/%d/x", i%200)
	}
	var to []*peer
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		to = a.shares.route(topics[i%len(topics)], peers, to[:0])
	}
}
