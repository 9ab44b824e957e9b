// lowat_linux.go sets a TCP connection's receive low-water mark, for gather.go.
package mqttconn

import (
	"net"
	"syscall"
)

// lowatSetter returns what sets nc's SO_RCVLOWAT, or nil when nc is not a TCP connection. A
// failed setsockopt is ignored: the connection then only reads less often (gather.go).
func lowatSetter(nc net.Conn) func(int) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(bytes int) {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, bytes)
		})
	}
}
