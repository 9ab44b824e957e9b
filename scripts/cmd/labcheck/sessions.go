// Sessions: the persistent sessions the pair leaves on brokers, the return visits that collect
// what waited in them, and their deletion at the end.

package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// brokersLeft returns the brokers the subscriber had a connection to before its last one,
// other than the last one's, in the order it first left them.
func brokersLeft(conns map[int64]connInfo) []string {
	sorted := sortedConns(conns)
	if len(sorted) == 0 {
		return nil
	}
	current := sorted[len(sorted)-1].Broker
	var out []string
	for _, c := range sorted {
		if c.Broker != "" && c.Broker != current && !slices.Contains(out, c.Broker) {
			out = append(out, c.Broker)
		}
	}
	return out
}

// returnVisit connects to the broker at addr directly as client id with its persistent session
// (clean session false, no new subscription), hands each message the broker delivers to
// handle, and returns how many came once none arrived for a second (at most 15 s).
func returnVisit(ctx context.Context, addr, id string, handle func(mqtt.Message)) (int, error) {
	var n atomic.Int64
	got := make(chan struct{}, 1)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			handle(m)
			n.Add(1)
			select {
			case got <- struct{}{}:
			default:
			}
		}))
	if tok := c.Connect(); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		return 0, fmt.Errorf("connect to %s: %v", addr, tok.Error())
	}
	defer c.Disconnect(50)
	quiet := time.NewTimer(time.Second)
	limit := time.After(15 * time.Second)
	for {
		select {
		case <-got:
			quiet.Reset(time.Second)
		case <-quiet.C:
			return int(n.Load()), nil
		case <-limit:
			return int(n.Load()), nil
		case <-ctx.Done():
			return int(n.Load()), ctx.Err()
		}
	}
}

// deleteSessions connects to every broker directly with each id and a clean session, which
// discards the persistent session labcheck left there [MQTT-3.1.2-6].
func deleteSessions(brokers brokerList, ids []string) {
	var wg sync.WaitGroup
	for _, b := range brokers {
		for _, id := range ids {
			wg.Add(1)
			go func(addr, id string) {
				defer wg.Done()
				c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
					SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(time.Second))
				if tok := c.Connect(); tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
					c.Disconnect(20)
				}
			}(b.Address, id)
		}
	}
	wg.Wait()
}
