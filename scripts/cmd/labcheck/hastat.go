// hastat: `labcheck hastat`, each server's state from an HAProxy stats socket.

package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// runHAStat prints "backend server status" for each server of an HAProxy stats socket.
func runHAStat(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("hastat", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "HAProxy stats socket")
	if err := fs.Parse(args); err != nil || *socket == "" {
		fmt.Fprintln(stderr, "usage: labcheck hastat --socket PATH")
		return exitUsage
	}
	c, err := net.DialTimeout("unix", *socket, time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "labcheck: hastat: %v\n", err)
		return exitFail
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		fmt.Fprintf(stderr, "labcheck: hastat: %v\n", err)
		return exitFail
	}
	data, err := io.ReadAll(c)
	if err != nil && len(data) == 0 {
		fmt.Fprintf(stderr, "labcheck: hastat: %v\n", err)
		return exitFail
	}
	var cols []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "# ") {
			cols = strings.Split(strings.TrimPrefix(line, "# "), ",")
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 2 || cols == nil || f[1] == "FRONTEND" || f[1] == "BACKEND" {
			continue
		}
		status := ""
		for i, name := range cols {
			if name == "status" && i < len(f) {
				status = f[i]
			}
		}
		fmt.Fprintf(stdout, "%s %s %s\n", f[0], f[1], status)
	}
	return exitOK
}
