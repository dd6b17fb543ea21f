package recipes

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse: no input makes the parser (or lint, inputs and show on what it accepts) panic,
// and every error is a list of one-line problems with a position.
//
//	go test -run='^$' -fuzz=FuzzParse -fuzztime=30s ./recipes/
func FuzzParse(f *testing.F) {
	for _, name := range EmbeddedNames() {
		data, _ := EmbeddedFile(name + ".yaml")
		f.Add(data)
	}
	files, _ := filepath.Glob("testdata/broken/*.yaml")
	for _, p := range files {
		data, _ := os.ReadFile(p)
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("apiVersion: kubebake.dev/v1alpha1\nkind: Recipe\nroles: [&r {name: a, units: [x]}, *r]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse("f.yaml", data)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T %v is not a non-empty ErrorList", err, err)
			}
			for _, p := range list {
				if p.Line < 1 || p.Col < 1 || strings.Contains(p.Error(), "\n") {
					t.Fatalf("bad problem %#v", p)
				}
			}
			return
		}
		for _, f := range Lint(r) {
			if strings.Contains(f.String(), "\n") {
				t.Fatalf("finding on two lines: %q", f.String())
			}
		}
		_ = r.InputsDigest()
		if _, err := yaml.Marshal(r); err != nil {
			t.Fatal(err)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatal(err)
		}
	})
}
