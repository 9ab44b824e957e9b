package mqttconn

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
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
