package mqttconn

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// The CONNECT of design.md's HAProxy health check, byte for byte: MQTT 3.1.1, clean session,
// keepalive 60, client id "haproxy-hc".
func TestAppendConnectHealthCheckBytes(t *testing.T) {
	got := hex.EncodeToString(AppendConnect(nil, ConnectOptions{ClientID: "haproxy-hc", Protocol: 4,
		CleanSession: true, Keepalive: 60 * time.Second}))
	if want := "101600044d5154540402003c000a686170726f78792d6863"; got != want {
		t.Errorf("CONNECT\n got %s\nwant %s", got, want)
	}
}

// Remaining Length boundaries of §2.2.3: 1 to 4 bytes, read back by ReadPacket.
func TestRemainingLengthRoundTrip(t *testing.T) {
	for _, n := range []int{0, 127, 128, 16383, 16384, 2097151, 2097152} {
		want := map[int]int{0: 1, 127: 1, 128: 2, 16383: 2, 16384: 3, 2097151: 3, 2097152: 4}[n]
		if got := len(AppendRemainingLength(nil, n)); got != want {
			t.Errorf("%d: %d bytes, want %d", n, got, want)
		}
		pkt := AppendPacket(nil, FixedHeader(Publish, 1), make([]byte, n))
		h, body, err := ReadPacket(bufio.NewReader(bytes.NewReader(pkt)))
		if err != nil || h != 0x31 || len(body) != n {
			t.Errorf("%d: header %#x, %d bytes, %v", n, h, len(body), err)
		}
	}
	five := []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}
	if _, _, err := ReadPacket(bufio.NewReader(bytes.NewReader(five))); !errors.Is(err, ErrMalformed) {
		t.Errorf("a 5-byte remaining length: %v, want ErrMalformed", err)
	}
}

// The fixed header flags of table 2.2 [MQTT-2.2.2-1].
func TestFixedHeaderFlags(t *testing.T) {
	for name, c := range map[string]struct {
		got  []byte
		want string
	}{
		"SUBSCRIBE":   {AppendSubscribe(nil, 1, map[string]byte{"a": 1}), "8206000100016101"},
		"UNSUBSCRIBE": {AppendUnsubscribe(nil, 1, []string{"a"}), "a20500010001" + "61"},
		"PUBREL":      {AppendAck(nil, Pubrel, 0x0102), "62020102"},
		"PUBACK":      {AppendAck(nil, Puback, 7), "40020007"},
		"PUBLISH q2r": {AppendPublishHeader(nil, "t", 2, true, 9, 3), "3508" + "000174" + "0009"},
		"PUBLISH q0":  {AppendPublishHeader(nil, "t", 0, false, 0, 0), "3003000174"},
	} {
		if h := hex.EncodeToString(c.got); h != c.want {
			t.Errorf("%s: %s, want %s", name, h, c.want)
		}
	}
}

// A refused CONNACK names its reason, and credentials refused in either version are
// ErrCredentials as well as ErrRefused (the agent tells them from a broker that is down).
func TestConnackError(t *testing.T) {
	for _, c := range []struct {
		v5          bool
		rc          byte
		credentials bool
		text        string
	}{
		{false, 4, true, "bad user name or password"}, {false, 5, true, "not authorised"},
		{false, 3, false, "server unavailable"}, {true, 0x86, true, "bad user name or password"},
		{true, 0x87, true, "not authorised"}, {true, 0x89, false, "server busy"}, {true, 0xA0, false, "0xa0"},
	} {
		err := connackError(c.v5, c.rc)
		if !errors.Is(err, ErrRefused) || errors.Is(err, ErrCredentials) != c.credentials || !strings.Contains(err.Error(), c.text) {
			t.Errorf("v5=%v rc=%#x: %v (credentials %v), want credentials %v and %q", c.v5, c.rc, err, errors.Is(err, ErrCredentials), c.credentials, c.text)
		}
	}
}
