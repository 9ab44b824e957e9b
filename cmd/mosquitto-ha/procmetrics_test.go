package main

import (
	"bytes"
	"regexp"
	"strconv"
	"testing"
	"time"
)

func TestProcessMetricsReadThisProcess(t *testing.T) {
	var b bytes.Buffer
	writeProcessMetrics(&b)
	value := func(name string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(b.String())
		if m == nil {
			t.Fatalf("no %s in:\n%s", name, b.String())
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := value("go_goroutines"); v < 1 {
		t.Errorf("go_goroutines %g", v)
	}
	if v := value("process_resident_memory_bytes"); v < 1<<20 || v > 1<<34 {
		t.Errorf("process_resident_memory_bytes %g: not a Go test binary's size", v)
	}
	if v := value("process_open_fds"); v < 3 {
		t.Errorf("process_open_fds %g: stdin, stdout and stderr at least", v)
	}
	if v := value("process_start_time_seconds"); time.Since(time.Unix(int64(v), 0)) > time.Hour || v > float64(time.Now().Unix()) {
		t.Errorf("process_start_time_seconds %g is not this test's start", v)
	}
}
