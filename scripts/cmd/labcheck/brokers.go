// The cluster's brokers: names and addresses from a cluster file or from --brokers.

package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// brokerList is the cluster's brokers in file order.
type brokerList []struct{ Name, Address string }

func (l brokerList) addr(name string) string {
	for _, b := range l {
		if b.Name == name {
			return b.Address
		}
	}
	return ""
}

func (l brokerList) names() string {
	var n []string
	for _, b := range l {
		n = append(n, b.Name)
	}
	return strings.Join(n, ", ")
}

// loadBrokers reads the nodes of a cluster file (only name and address) or a --brokers list.
func loadBrokers(config, list string) (brokerList, error) {
	var out brokerList
	switch {
	case config != "" && list != "":
		return nil, errors.New("give --config or --brokers, not both")
	case config != "":
		data, err := os.ReadFile(config)
		if err != nil {
			return nil, err
		}
		var f struct {
			Nodes []struct {
				Name    string `yaml:"name"`
				Address string `yaml:"address"`
			} `yaml:"nodes"`
		}
		if err := yaml.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("%s: %v", config, err)
		}
		for _, n := range f.Nodes {
			out = append(out, struct{ Name, Address string }{n.Name, n.Address})
		}
	case list != "":
		for _, item := range strings.Split(list, ",") {
			name, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
			if !ok || name == "" || addr == "" {
				return nil, fmt.Errorf("--brokers %q: want name=host:port,...", list)
			}
			out = append(out, struct{ Name, Address string }{name, addr})
		}
	default:
		return nil, errors.New("want --config cluster.yaml or --brokers name=host:port,...")
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("want at least 2 brokers, have %d", len(out))
	}
	return out, nil
}
