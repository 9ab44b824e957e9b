// Placement: a subscriber id and a publisher id that HAProxy sends to different brokers.

package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// place finds a subscriber id and a publisher id that land on different brokers.
func place(ctx context.Context, obs *observers, o options, prefix string) (subID, subB, pubID, pubB string, err error) {
	const batch, maxTries = 6, 60
	try := func(id string) string {
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + o.vip).SetClientID(id).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			return ""
		}
		defer c.Disconnect(20)
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if b := obs.landed(id); b != "" {
				return b
			}
		}
		return ""
	}
	for k := 0; k < maxTries && (subID == "" || pubID == ""); k += batch {
		if ctx.Err() != nil {
			return "", "", "", "", ctx.Err()
		}
		ids := make([]string, batch)
		got := make([]string, batch)
		var wg sync.WaitGroup
		for i := range ids {
			ids[i] = fmt.Sprintf("%s-%d", prefix, k+i)
			wg.Add(1)
			go func(i int) { defer wg.Done(); got[i] = try(ids[i]) }(i)
		}
		wg.Wait()
		for i, b := range got {
			switch {
			case b == "":
			case subID == "" && (o.subBroker == "" || b == o.subBroker) && b != o.pubBroker && b != pubB:
				subID, subB = ids[i], b
			case pubID == "" && (o.pubBroker == "" || b == o.pubBroker) && b != o.subBroker && b != subB:
				pubID, pubB = ids[i], b
			}
		}
	}
	if subID == "" || pubID == "" {
		return "", "", "", "", fmt.Errorf("placement: after %d client ids through %s, no subscriber on %q and publisher on %q (is every broker up behind HAProxy?)",
			maxTries, o.vip, or(o.subBroker, "any"), or(o.pubBroker, "another"))
	}
	return subID, subB, pubID, pubB, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
