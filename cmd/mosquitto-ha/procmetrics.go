// Process metrics of the agent in Prometheus' standard names (go_goroutines,
// process_resident_memory_bytes, process_open_fds, process_start_time_seconds), read from the Go
// runtime and /proc/self without a client library: an operator sees a leak or a restart loop.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"
)

// processStart is when this process started (close enough: package initialisation).
var processStart = time.Now()

// writeProcessMetrics appends the process metrics; a value /proc cannot give is left out.
func writeProcessMetrics(w io.Writer) {
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", name, help, name, name, v)
	}
	gauge("go_goroutines", "Goroutines of the agent process.", float64(runtime.NumGoroutine()))
	gauge("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", float64(processStart.Unix()))
	if rss, ok := residentBytes(); ok {
		gauge("process_resident_memory_bytes", "Resident memory size in bytes.", float64(rss))
	}
	if entries, err := os.ReadDir("/proc/self/fd"); err == nil {
		gauge("process_open_fds", "Open file descriptors.", float64(len(entries)))
	}
}

// residentBytes reads VmRSS from /proc/self/status.
func residentBytes() (int64, bool) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range bytes.Lines(status) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			fields := bytes.Fields(rest) // "12960 kB"
			if len(fields) == 2 && string(fields[1]) == "kB" {
				kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
				return kb << 10, err == nil
			}
		}
	}
	return 0, false
}
