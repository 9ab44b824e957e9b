//go:build !linux

// lowat_other.go: elsewhere than Linux a gathering connection only reads less often (gather.go).
package mqttconn

import "net"

func lowatSetter(net.Conn) func(int) { return nil }
