package bridge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mosquitto-ha/bridge/mqttconn"
	"mosquitto-ha/sysparse/mosqtest"
)

// propsFormat prints, for each message, everything a subscriber can see of it: topic, QoS,
// retain flag, payload and every MQTT 5 property mosquitto_sub shows.
const propsFormat = "%t|q%q|r%r|%p|F=%F|C=%C|R=%R|D=%D|E=%E|P=%P|S=%S|A=%A"

// v5Props are the PUBLISH properties of the MQTT 5 probes: user properties with a duplicate
// key, in an order that is not sorted, every other property a broker passes on, and a topic
// alias, which is the publisher's own and never reaches a subscriber.
func v5Props(expiry int) []string {
	return []string{"-D", "PUBLISH", "user-property", "k1", "v1", "-D", "PUBLISH", "user-property", "k1", "v2",
		"-D", "PUBLISH", "user-property", "a", "b", "-D", "PUBLISH", "content-type", "application/json",
		"-D", "PUBLISH", "response-topic", "reply/x", "-D", "PUBLISH", "correlation-data", "abc123",
		"-D", "PUBLISH", "payload-format-indicator", "1", "-D", "PUBLISH", "message-expiry-interval", strconv.Itoa(expiry),
		"-D", "PUBLISH", "topic-alias", "1"}
}

// mosquittoPub publishes one message with mosquitto_pub.
func mosquittoPub(t *testing.T, port int, args ...string) {
	t.Helper()
	pub := mosqtest.LookPath(t, "mosquitto_pub", "apt-get install mosquitto-clients")
	args = append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)
	if out, err := exec.Command(pub, args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %v: %v\n%s", args, err, out)
	}
}

// subProc is a mosquitto_sub running in the background.
type subProc struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
}

// startSub starts mosquitto_sub with args on port; its output is read by lines.
func startSub(t *testing.T, port int, args ...string) *subProc {
	t.Helper()
	bin := mosqtest.LookPath(t, "mosquitto_sub", "apt-get install mosquitto-clients")
	s := &subProc{done: make(chan struct{})}
	s.cmd = exec.Command(bin, append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill() // our own child, by its pid
			<-s.done
		}
	})
	return s
}

// lines waits for the process to end and returns its output lines, sorted.
func (s *subProc) lines() []string {
	<-s.done
	var ls []string
	for _, l := range strings.Split(strings.TrimSpace(s.out.String()), "\n") {
		if l != "" && l != "Timed out" { // -W ended it
			ls = append(ls, l)
		}
	}
	slices.Sort(ls)
	return ls
}

// probeExpiry is the Message Expiry Interval of the probes that must arrive.
const probeExpiry = 60

// sameDelivery compares the lines of one probe on the cluster with those on one broker. The
// Message Expiry Interval is the time left, which depends on when each run read it: within 2 s
// of the lone broker's, and never more than the publisher gave.
func sameDelivery(got, want []string) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d messages, one broker gives %d:\n got %q\nwant %q", len(got), len(want), got, want)
	}
	for i := range got {
		g, w := strings.Split(got[i], "|"), strings.Split(want[i], "|")
		if len(g) != len(w) {
			return fmt.Sprintf("got %q, want %q", got[i], want[i])
		}
		for j := range g {
			if strings.HasPrefix(w[j], "E=") && w[j] != "E=" && strings.HasPrefix(g[j], "E=") && g[j] != "E=" {
				ge, _ := strconv.Atoi(g[j][2:])
				we, _ := strconv.Atoi(w[j][2:])
				if ge <= probeExpiry && ge >= we-2 && ge <= we+2 {
					continue
				}
			}
			if g[j] != w[j] {
				return fmt.Sprintf("got %q, want %q (field %d)", got[i], want[i], j)
			}
		}
	}
	return ""
}

// The MQTT 5 matrix: a publisher of MQTT 3.1.1 or 5 on b1, subscribers of 3.1.1 and 5 on b1
// (same broker) and on b2 (across brokers), QoS 0, 1 and 2, live and retained: every delivery
// on the cluster is the one a lone Mosquitto gives, properties included (user properties in
// order with their duplicate, the remaining expiry, the subscriber's own subscription
// identifier, no topic alias), and a 3.1.1 subscriber sees no property at all.
func TestMQTT5PropertiesMatrix(t *testing.T) {
	// run publishes the probes on pubPort and reads them on subPorts (placement -> port).
	run := func(t *testing.T, pubPort int, subPorts map[string]int, waitInterest func()) map[string][2][]string {
		const n = 2 * 3 // publisher versions x QoS
		live := map[string]*subProc{}
		for place, port := range subPorts {
			for _, v := range []string{"mqttv311", "mqttv5"} {
				args := []string{"-V", v, "-t", "m/#", "-t", "r/#", "-q", "2", "-C", strconv.Itoa(2 * n), "-W", "20", "-F", propsFormat}
				if v == "mqttv5" {
					args = append(args, "-D", "SUBSCRIBE", "subscription-identifier", "7")
				}
				live[v+"/"+place] = startSub(t, port, args...)
			}
		}
		waitInterest()
		for _, v := range []string{"mqttv311", "mqttv5"} {
			for q := 0; q <= 2; q++ {
				for _, kind := range []string{"m", "r"} {
					args := []string{"-V", v, "-t", fmt.Sprintf("%s/%s/%d", kind, v, q), "-q", strconv.Itoa(q), "-m", "p-" + v}
					if kind == "r" {
						args = append(args, "-r")
					}
					if v == "mqttv5" {
						args = append(args, v5Props(probeExpiry)...)
					}
					mosquittoPub(t, pubPort, args...)
				}
			}
		}
		out := map[string][2][]string{}
		for k, s := range live {
			out[k] = [2][]string{s.lines(), nil}
		}
		// Retained: new subscribers get the stored values, wherever they were published.
		for place, port := range subPorts {
			for _, v := range []string{"mqttv311", "mqttv5"} {
				var got []string
				for try := 0; try < 10; try++ {
					got = startSub(t, port, "-V", v, "-t", "r/#", "-q", "2", "-C", strconv.Itoa(n), "-W", "3", "-F", propsFormat).lines()
					if len(got) == n {
						break
					}
					time.Sleep(300 * time.Millisecond)
				}
				o := out[v+"/"+place]
				o[1] = got
				out[v+"/"+place] = o
			}
		}
		return out
	}

	lone := mosqtest.Start(t, mosqtest.Options{Extra: brokerExtra})
	want := run(t, lone.Port, map[string]int{"lone": lone.Port}, func() { time.Sleep(500 * time.Millisecond) })
	for _, v := range []string{"mqttv311", "mqttv5"} {
		if w := want[v+"/lone"]; len(w[0]) != 12 || len(w[1]) != 6 {
			t.Fatalf("lone broker, %s subscriber: %d live and %d retained messages, want 12 and 6:\n%q", v, len(w[0]), len(w[1]), w)
		}
	}
	if w := strings.Join(want["mqttv5/lone"][0], "\n"); !strings.Contains(w, "P=k1:v1 k1:v2 a:b") || !strings.Contains(w, "S=7") {
		t.Fatalf("lone broker: the probe does not show the properties it should:\n%s", w)
	}

	c := startCluster(t, 2)
	got := run(t, c.brokers[0].Port, map[string]int{"same": c.brokers[0].Port, "across": c.brokers[1].Port}, func() {
		waitFor(t, 10*time.Second, "b1 to learn b2's subscriptions", func() string {
			if !c.agent(0).PeerWants("b2", "m/x") || !c.agent(0).PeerWants("b2", "r/x") {
				return "not yet"
			}
			return ""
		})
	})
	var matrix strings.Builder
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for _, place := range []string{"same", "across"} {
			for i, kind := range []string{"live", "retained"} {
				verdict := "as on one broker"
				if d := sameDelivery(got[v+"/"+place][i], want[v+"/lone"][i]); d != "" {
					verdict = "DIFFERS"
					t.Errorf("%s subscriber, %s broker, %s: %s", v, place, kind, d)
				}
				fmt.Fprintf(&matrix, "subscriber %-8s %-6s %-8s (publishers 3.1.1 and 5 x QoS 0,1,2): %s\n", v, place, kind, verdict)
			}
		}
	}
	t.Logf("matrix:\n%s", matrix.String())
}

// An expiry shorter than a subscriber's offline time drops the message on every broker as on
// one: an offline MQTT 5 session on b2 gets, from b1, only the message whose expiry outlives
// its absence, with the time left.
func TestMQTT5MessageExpiryAcrossBrokers(t *testing.T) {
	run := func(t *testing.T, subPort, pubPort int, name string, waitInterest func()) []string {
		mosquittoSub(t, subPort, "-V", "mqttv5", "-i", "exp-"+name, "-x", "100", "-t", "exp/#", "-q", "1", "-E")
		waitInterest()
		mosquittoPub(t, pubPort, append([]string{"-V", "mqttv5", "-t", "exp/short", "-q", "1", "-m", "short"}, v5Props(2)...)...)
		mosquittoPub(t, pubPort, append([]string{"-V", "mqttv5", "-t", "exp/long", "-q", "1", "-m", "long"}, v5Props(probeExpiry)...)...)
		time.Sleep(4 * time.Second) // offline longer than the short expiry
		return startSub(t, subPort, "-V", "mqttv5", "-i", "exp-"+name, "-c", "-x", "100", "-t", "exp/#", "-q", "1",
			"-W", "3", "-F", propsFormat).lines()
	}
	lone := mosqtest.Start(t, mosqtest.Options{Extra: brokerExtra})
	want := run(t, lone.Port, lone.Port, "lone", func() {})
	if len(want) < 1 || !strings.HasPrefix(want[0], "exp/long|") {
		t.Fatalf("lone broker: the offline session got %q, want exp/long only", want)
	}
	c := startCluster(t, 2)
	got := run(t, c.brokers[1].Port, c.brokers[0].Port, "cluster", func() {
		waitFor(t, 10*time.Second, "b1 to learn b2's offline session", func() string {
			if !c.agent(0).PeerWants("b2", "exp/x") {
				return "not yet"
			}
			return ""
		})
	})
	if d := sameDelivery(got, want); d != "" {
		t.Errorf("offline MQTT 5 session across brokers: %s", d)
	}
}

// A relay that waits for a peer broker that is down longer than its message's expiry is not
// delivered, as one broker does not deliver a queued message that expired: the offline MQTT 5
// session on b2 gets, after b2 returns, only the message whose expiry outlived the outage, with
// the time left; the expired one is counted.
func TestMQTT5ExpiryWhileWaitingForPeer(t *testing.T) {
	lone := mosqtest.Start(t, mosqtest.Options{Extra: brokerExtra})
	mosquittoSub(t, lone.Port, "-V", "mqttv5", "-i", "wait-lone", "-c", "-x", "100", "-t", "wait/#", "-q", "1", "-E")
	mosquittoPub(t, lone.Port, append([]string{"-V", "mqttv5", "-t", "wait/short", "-q", "1", "-m", "short"}, v5Props(2)...)...)
	mosquittoPub(t, lone.Port, append([]string{"-V", "mqttv5", "-t", "wait/long", "-q", "1", "-m", "long"}, v5Props(probeExpiry)...)...)
	time.Sleep(4 * time.Second)
	want := startSub(t, lone.Port, "-V", "mqttv5", "-i", "wait-lone", "-c", "-x", "100", "-t", "wait/#", "-q", "1",
		"-W", "3", "-F", propsFormat).lines()
	if len(want) != 1 || !strings.HasPrefix(want[0], "wait/long|") {
		t.Fatalf("lone broker: the offline session got %q, want wait/long only", want)
	}

	c := startCluster(t, 2)
	// Clean Start 0: Mosquitto 2.0.11 drops at a restart a session begun with Clean Start 1,
	// whatever its Session Expiry Interval (docs/interop.md).
	mosquittoSub(t, c.brokers[1].Port, "-V", "mqttv5", "-i", "wait-cluster", "-c", "-x", "100", "-t", "wait/#", "-q", "1", "-E")
	c.brokers[1].Stop() // saves the offline session
	waitFor(t, 10*time.Second, "b1 to see b2 down", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if p.Name == "b2" && p.Up {
				return "b2 still up"
			}
		}
		return ""
	})
	published := time.Now()
	mosquittoPub(t, c.brokers[0].Port, append([]string{"-V", "mqttv5", "-t", "wait/short", "-q", "1", "-m", "short"}, v5Props(2)...)...)
	mosquittoPub(t, c.brokers[0].Port, append([]string{"-V", "mqttv5", "-t", "wait/long", "-q", "1", "-m", "long"}, v5Props(probeExpiry)...)...)
	time.Sleep(4 * time.Second) // b2 down longer than the short expiry
	c.brokers[1].StartAgain()
	waitFor(t, 15*time.Second, "b1's relays to b2 to drain", func() string {
		for _, p := range c.agent(0).Status().Peers {
			if p.Name == "b2" && (!p.Up || p.Buffered > 0) {
				return fmt.Sprintf("b2 up %v, %d buffered", p.Up, p.Buffered)
			}
		}
		return ""
	})
	got := startSub(t, c.brokers[1].Port, "-V", "mqttv5", "-i", "wait-cluster", "-c", "-x", "100", "-t", "wait/#", "-q", "1",
		"-W", "3", "-F", propsFormat).lines()
	// The same message with the same properties; its time left is what remained when the
	// subscriber got it, so it counts b2's restart: between 60 s less the time since the
	// publish and 60 s less the outage.
	away := int(time.Since(published).Seconds())
	if len(got) != 1 {
		t.Fatalf("offline MQTT 5 session behind a broker that was down got %q, want 1 message like %q", got, want)
	}
	ge, g := expiryOf(got[0])
	_, w := expiryOf(want[0])
	if g != w || ge > probeExpiry-4 || ge < probeExpiry-away-1 {
		t.Errorf("offline MQTT 5 session behind a broker that was down: got %q, want %q with %d-%d s left", got[0], want[0], probeExpiry-away-1, probeExpiry-4)
	}
	for _, p := range c.agent(0).Status().Peers {
		if p.Name == "b2" && p.Expired != 1 {
			t.Errorf("b1 counts %d relays to b2 expired on the way, want 1 (wait/short)", p.Expired)
		}
	}
}

// Request/response across brokers: a requester on b1 publishes with Response Topic and
// Correlation Data; a responder on b2 answers on that topic with that data, which the requester
// gets back.
func TestMQTT5RequestResponseAcrossBrokers(t *testing.T) {
	c := startCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var responder *mqttconn.Conn
	resp, _, err := mqttconn.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", c.brokers[1].Port),
		mqttconn.ConnectOptions{ClientID: "responder", Protocol: 5, CleanSession: true, Keepalive: 30 * time.Second},
		func(m *mqttconn.Message) {
			m.Ack()
			topic, corr := responseOf(m.Props().Raw)
			if topic == "" {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			// The answer carries the request's Correlation Data (MQTT 5 §4.10).
			var props []byte
			props = append(props, mqttconn.PropCorrelationData)
			props = binary.BigEndian.AppendUint16(props, uint16(len(corr)))
			props = append(props, corr...)
			responder.PublishProps(topic, 1, false, mqttconn.Props{Raw: props}, []byte("answer to "+string(m.Payload)), nil)
		})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	responder = resp
	mu.Unlock()
	defer resp.Close()
	if err := resp.Subscribe(ctx, map[string]byte{"req/#": 1}); err != nil {
		t.Fatal(err)
	}
	requester := startSub(t, c.brokers[0].Port, "-V", "mqttv5", "-t", "reply/x", "-q", "1", "-C", "1", "-W", "15", "-F", propsFormat)
	waitFor(t, 10*time.Second, "each agent to learn the other's subscription", func() string {
		if !c.agent(0).PeerWants("b2", "req/1") || !c.agent(1).PeerWants("b1", "reply/x") {
			return "not yet"
		}
		return ""
	})
	mosquittoPub(t, c.brokers[0].Port, append([]string{"-V", "mqttv5", "-t", "req/1", "-q", "1", "-m", "q1"}, v5Props(probeExpiry)...)...)
	got := requester.lines()
	if len(got) != 1 || !strings.HasPrefix(got[0], "reply/x|q1|r0|answer to q1|") || !strings.Contains(got[0], "|D=abc123|") {
		t.Fatalf("requester on b1 got %q, want the answer with correlation data abc123", got)
	}
}

// responseOf finds Response Topic and Correlation Data in MQTT 5 properties.
func responseOf(raw []byte) (topic string, corr []byte) {
	for i := 0; i < len(raw); {
		id := raw[i]
		i++
		switch id {
		case mqttconn.PropPayloadFormat:
			i++
		case mqttconn.PropMessageExpiry:
			i += 4
		case mqttconn.PropContentType, mqttconn.PropResponseTopic, mqttconn.PropCorrelationData:
			n := int(binary.BigEndian.Uint16(raw[i:]))
			v := raw[i+2 : i+2+n]
			if id == mqttconn.PropResponseTopic {
				topic = string(v)
			} else if id == mqttconn.PropCorrelationData {
				corr = v
			}
			i += 2 + n
		case mqttconn.PropUserProperty:
			k := int(binary.BigEndian.Uint16(raw[i:]))
			i += 2 + k
			i += 2 + int(binary.BigEndian.Uint16(raw[i:]))
		default:
			return topic, corr
		}
	}
	return topic, corr
}

// A retained value that no agent saw written (published before the agents started) reaches the
// other broker by the retained push, with its MQTT 5 properties.
func TestMQTT5RetainedPushKeepsProperties(t *testing.T) {
	c := newCluster(t, 2, nil)
	mosquittoPub(t, c.brokers[0].Port, append([]string{"-V", "mqttv5", "-t", "early/v5", "-q", "1", "-r", "-m", "early"}, v5Props(probeExpiry)...)...)
	want := startSub(t, c.brokers[0].Port, "-V", "mqttv5", "-t", "early/#", "-q", "1", "-C", "1", "-W", "5", "-F", propsFormat).lines()
	read := time.Now()
	if len(want) != 1 || !strings.Contains(want[0], "P=k1:v1 k1:v2 a:b") {
		t.Fatalf("b1 holds %q", want)
	}
	for i := range c.brokers {
		c.startAgent(i)
	}
	var got []string
	waitFor(t, 15*time.Second, "the retained value pushed to b2", func() string {
		got = startSub(t, c.brokers[1].Port, "-V", "mqttv5", "-t", "early/#", "-q", "1", "-C", "1", "-W", "1", "-F", propsFormat).lines()
		if len(got) == 0 || !strings.Contains(got[0], "|r1|") { // a live copy while polling: not yet stored
			return "not yet"
		}
		return ""
	})
	// The time left counts down from when b1 was read: at most that long less.
	gone := int(time.Since(read)/time.Second) + 1
	ge, g := expiryOf(got[0])
	we, w := expiryOf(want[0])
	if g != w || ge > we || ge < we-gone {
		t.Errorf("b2 after the push: got %q, want %q with E between %d and %d", got[0], want[0], we-gone, we)
	}
}

// expiryOf splits a probe line into its Message Expiry Interval and the rest.
func expiryOf(line string) (int, string) {
	fs := strings.Split(line, "|")
	e := -1
	for i, f := range fs {
		if strings.HasPrefix(f, "E=") {
			e, _ = strconv.Atoi(f[2:])
			fs[i] = "E=?"
		}
	}
	return e, strings.Join(fs, "|")
}
