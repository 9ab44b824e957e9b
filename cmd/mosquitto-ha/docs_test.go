// Tests that the user documentation stays true to the program: every key of the cluster file is
// in docs/configuration.md, and the page documents no key the program does not have.
package main

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// configKeys lists the key path of every field of t, as docs/configuration.md spells them:
// `agent.tls.ca`, `nodes[].name`. Structs list themselves and their fields.
func configKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		keys = append(keys, key)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
			key += "[]"
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Duration]() {
			keys = append(keys, configKeys(ft, key+".")...)
		}
	}
	return keys
}

func TestConfigReferenceDocumentsEveryKey(t *testing.T) {
	page, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	// The first cell of each table row names a key.
	row := regexp.MustCompile("(?m)^\\| `([a-z_.\\[\\]]+)` \\|")
	var documented []string
	for _, m := range row.FindAllStringSubmatch(string(page), -1) {
		documented = append(documented, m[1])
	}
	keys := configKeys(reflect.TypeFor[Config](), "")
	if len(keys) < 30 {
		t.Fatalf("walked only %d keys of Config: the walk is broken", len(keys))
	}
	for _, k := range keys {
		if !slices.Contains(documented, k) {
			t.Errorf("docs/configuration.md has no row for `%s`", k)
		}
	}
	for _, d := range documented {
		if !slices.Contains(keys, d) {
			t.Errorf("docs/configuration.md documents `%s`, which the cluster file does not have", d)
		}
	}
}
