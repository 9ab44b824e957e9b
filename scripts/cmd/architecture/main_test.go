package main

import (
	"encoding/xml"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/architecture.svg")

// TestCommittedPictureIsDrawn keeps docs/architecture.svg equal to what this program draws, and
// checks that it is well-formed XML.
func TestCommittedPictureIsDrawn(t *testing.T) {
	const path = "../../../docs/architecture.svg"
	got := draw()
	if err := xml.NewDecoder(strings.NewReader(got)).Decode(new(struct{})); err != nil {
		t.Fatalf("the drawing is not well-formed XML: %v", err)
	}
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run: go test ./scripts/cmd/architecture -update)", err)
	}
	if string(want) != got {
		t.Fatalf("%s differs from what the program draws: run go test ./scripts/cmd/architecture -update", path)
	}
}
