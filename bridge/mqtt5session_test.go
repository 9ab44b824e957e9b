package bridge_test

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"mosquitto-ha/sysparse/mosqtest"
)

// mosquittoSub runs mosquitto_sub against port and returns its output.
func mosquittoSub(t *testing.T, port int, args ...string) string {
	t.Helper()
	sub := mosqtest.LookPath(t, "mosquitto_sub", "apt-get install mosquitto-clients")
	args = append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)
	out, err := exec.Command(sub, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_sub %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// An MQTT 5 client that connects with Clean Start and a Session Expiry Interval is logged "c1"
// (testdata/mosquitto-2.0.11/mqtt5_sessions.log), yet its session outlives the connection: the
// messages published on another broker while it is offline wait for it, as on one broker; once
// its session expires, its broker's agent withdraws the interest.
func TestMQTT5SessionExpiryAcrossBrokers(t *testing.T) {
	run := func(t *testing.T, subPort, pubPort int, name string) string {
		mosquittoSub(t, subPort, "-V", "mqttv5", "-i", "v5-"+name, "-x", "100", "-t", "v5/#", "-q", "1", "-E")
		time.Sleep(2500 * time.Millisecond) // past two $SYS ticks: the agent has settled
		pub := connect(t, fmt.Sprintf("127.0.0.1:%d", pubPort), "pub-"+name, true)
		for i := 0; i < 3; i++ {
			pub.publish(fmt.Sprintf("v5/%d", i), 1, false, fmt.Sprintf("m%d", i))
		}
		return mosquittoSub(t, subPort, "-V", "mqttv5", "-i", "v5-"+name, "-c", "-x", "100", "-t", "v5/#", "-q", "1", "-C", "3", "-W", "10")
	}
	lone := mosqtest.Start(t, mosqtest.Options{Extra: brokerExtra})
	want := run(t, lone.Port, lone.Port, "lone")
	if strings.Fields(want)[0] != "m0" || len(strings.Fields(want)) != 3 {
		t.Fatalf("lone broker: queued messages %q, want m0 m1 m2", want)
	}

	c := startCluster(t, 2)
	if got := run(t, c.brokers[0].Port, c.brokers[1].Port, "cluster"); got != want {
		t.Errorf("cluster: the offline MQTT 5 session got %q, one broker gives %q", got, want)
	}

	// A short expiry: after it, b1's agent reads "Expiring client" and b2 stops relaying.
	mosquittoSub(t, c.brokers[0].Port, "-V", "mqttv5", "-i", "v5-short", "-x", "1", "-t", "short/#", "-q", "1", "-E")
	c.waitPeerFilters(0, 2) // v5/# of the resumed session, short/#
	waitFor(t, 10*time.Second, "b2 to stop wanting short/# for b1", func() string {
		if c.agent(1).PeerWants("b1", "short/x") {
			return "still relayed"
		}
		return ""
	})
	c.assertNoWidening()
}
