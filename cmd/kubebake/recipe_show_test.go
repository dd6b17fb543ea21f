package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRecipeShowHidesMirrorLogin: a mirror's login is for the build; recipe show prints the
// mirror with ***@ instead, as text and as JSON.
func TestRecipeShowHidesMirrorLogin(t *testing.T) {
	src, err := os.ReadFile("../../recipes/debian-12.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const mirror = "http://bob:s3cret@127.0.0.1:3142/debian"
	text := strings.Replace(string(src), "  # mirror: leave it out", "  mirror: "+mirror+"\n  # mirror: leave it out", 1)
	if text == string(src) {
		t.Fatal("the recipe has no mirror comment to put the mirror beside")
	}
	path := filepath.Join(t.TempDir(), "creds.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json"} {
		out, logs, err := kb(t, "recipe", "show", path, "-o", format)
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, logs)
		}
		if strings.Contains(out+logs, "s3cret") || !strings.Contains(out, "http://***@127.0.0.1:3142/debian") {
			t.Errorf("%s output shows the login, or lost the mirror:\n%s", format, out)
		}
		if format == "json" && !json.Valid([]byte(out)) {
			t.Errorf("not JSON:\n%s", out)
		}
	}
}
