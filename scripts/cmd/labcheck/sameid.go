// sameid: `labcheck sameid`, one client id connected to two brokers directly, first to one and
// then to the other, reporting whether the older connection was closed, as one broker closes it
// [MQTT-3.1.4-2]. With --first and --second the same broker it is the lone-broker oracle.

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/pflag"
)

type sameIDReport struct {
	ID     string `json:"id"`
	First  string `json:"first"`
	Second string `json:"second"`
	// OlderClosed: the first connection was closed within WaitMs of the second one's CONNACK,
	// ClosedAfterMs after it (-1: never).
	OlderClosed   bool  `json:"older_closed"`
	ClosedAfterMs int64 `json:"closed_after_ms"`
	// NewerConnected: the second connection was still up at the end of the wait.
	NewerConnected bool  `json:"newer_connected"`
	WaitMs         int64 `json:"wait_ms"`
}

func runSameID(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("sameid", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "cluster file: the brokers' names and addresses (or --brokers)")
	list := fs.String("brokers", "", "brokers as name=host:port,... (instead of --config)")
	first := fs.String("first", "", "broker of the older connection")
	second := fs.String("second", "", "broker of the newer connection (the same as --first: one broker, the oracle)")
	settle := fs.Duration("settle", 500*time.Millisecond, "wait this long between the two connections (the cluster learns of the first)")
	wait := fs.Duration("wait", 2*time.Second, "after the second CONNACK, wait this long for the first connection to close")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	brokers, err := loadBrokers(*config, *list)
	if err != nil {
		fmt.Fprintf(stderr, "labcheck: sameid: %v\n", err)
		return exitUsage
	}
	a, b := brokers.addr(*first), brokers.addr(*second)
	if a == "" || b == "" {
		fmt.Fprintf(stderr, "labcheck: sameid: want --first and --second among %s\n", brokers.names())
		return exitUsage
	}
	rep := sameIDReport{ID: fmt.Sprintf("lc-sameid-%08x", rand.Uint32()), First: *first, Second: *second,
		ClosedAfterMs: -1, WaitMs: wait.Milliseconds()}
	defer deleteSessions(brokers, []string{rep.ID})

	var lostAt atomic.Int64 // unix ns when the first connection was lost
	connect := func(addr string, lost func()) (mqtt.Client, error) {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(rep.ID).
			SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second).
			SetKeepAlive(10 * time.Second).
			SetConnectionLostHandler(func(mqtt.Client, error) { lost() }))
		if tok := c.Connect(); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("connect %s to %s: %v", rep.ID, addr, tok.Error())
		}
		return c, nil
	}
	older, err := connect(a, func() { lostAt.CompareAndSwap(0, time.Now().UnixNano()) })
	if err != nil {
		fmt.Fprintf(stderr, "labcheck: sameid: %v\n", err)
		return exitFail
	}
	defer older.Disconnect(20)
	time.Sleep(*settle)
	newer, err := connect(b, func() {})
	if err != nil {
		fmt.Fprintf(stderr, "labcheck: sameid: %v\n", err)
		return exitFail
	}
	defer newer.Disconnect(20)
	connected := time.Now()
	for deadline := connected.Add(*wait); time.Now().Before(deadline) && lostAt.Load() == 0; {
		time.Sleep(10 * time.Millisecond)
	}
	if t := lostAt.Load(); t != 0 {
		rep.OlderClosed = true
		rep.ClosedAfterMs = max(0, time.Unix(0, t).Sub(connected).Milliseconds())
	}
	time.Sleep(200 * time.Millisecond) // a newer connection closed in turn shows by now
	rep.NewerConnected = newer.IsConnectionOpen()
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return exitFail
	}
	return exitOK
}
