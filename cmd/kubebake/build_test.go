package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildRefusesDrift: a recipe that no longer matches its lock is refused before anything
// is fetched or written, with the drift and the command that fixes it.
func TestBuildRefusesDrift(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../../recipes/debian-12.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lock, err := os.ReadFile("../../recipes/debian-12.lock")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(string(src), "    - cloud-guest-utils", "    - cloud-guest-utils\n    - curl", 1)
	recipe := filepath.Join(dir, "debian-12.yaml")
	os.WriteFile(recipe, []byte(y), 0o644)
	os.WriteFile(filepath.Join(dir, "debian-12.lock"), lock, 0o644)
	out := filepath.Join(dir, "out")

	_, _, err = kb(t, "build", recipe, "--out", out, "--format", "raw", "--cache-dir", filepath.Join(dir, "cache"))
	if err == nil || !strings.Contains(err.Error(), "deb/curl") || !strings.Contains(err.Error(), "kubebake lock") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("the refused build created its output folder")
	}

	_, _, err = kb(t, "build", recipe, "--out", out, "--format", "raw,iso", "--cache-dir", filepath.Join(dir, "cache"))
	if err == nil || !strings.Contains(err.Error(), `--format "iso"`) {
		t.Fatalf("err = %v", err)
	}
}
