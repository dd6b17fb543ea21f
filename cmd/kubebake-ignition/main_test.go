package main

import (
	"context"
	"debug/elf"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/run"
)

// build compiles kubebake-ignition as the node layer does: static, CGO_ENABLED=0.
func build(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("compiles the applier (-short)")
	}
	bin := filepath.Join(t.TempDir(), "kubebake-ignition")
	c := run.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	c.Env = []string{"CGO_ENABLED=0"}
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestStaticBinary(t *testing.T) {
	bin := build(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("kubebake-ignition has a program interpreter: it is not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("dynamic libraries: %v", libs)
	}

	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	runBin := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	// No config anywhere: exit 0, say so.
	imds := httptest.NewServer(http.NotFoundHandler())
	defer imds.Close()
	out, code := runBin("--root", root, "--fw-cfg", filepath.Join(root, "nope"), "--imds-endpoint", imds.URL)
	if code != 0 || !strings.Contains(out, "no Ignition config") {
		t.Errorf("no config: exit %d\n%s", code, out)
	}
	// A bad config: exit 1, a clear message, nothing written.
	bad := filepath.Join(t.TempDir(), "bad.ign")
	os.WriteFile(bad, []byte(`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"data:,a"}},{"path":"/etc/b","contents":{"source":"http://10.0.0.1/b"}}]}}`), 0o600)
	out, code = runBin("--root", root, "--config", bad)
	if code != 1 || !strings.Contains(out, "remote source http://10.0.0.1... refused") {
		t.Errorf("bad config: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/a")); err == nil {
		t.Error("a bad config was half applied")
	}
	// A good one applies once.
	good := filepath.Join(t.TempDir(), "good.ign")
	os.WriteFile(good, []byte(`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/sysconfig/kubernetes-minion","contents":{"source":"data:,"}}]}}`), 0o600)
	if out, code = runBin("--root", root, "--config", good); code != 0 || !strings.Contains(out, "applied the Ignition config") {
		t.Errorf("good config: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/sysconfig/kubernetes-minion")); err != nil {
		t.Error(err)
	}
	if out, code = runBin("--root", root, "--config", good); code != 0 || !strings.Contains(out, "already applied") {
		t.Errorf("second run: exit %d\n%s", code, out)
	}
	if _, code = runBin("--bogus"); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
}

func TestMainInProcess(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "c.ign")
	os.WriteFile(cfg, []byte(`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:,x"}}]}}`), 0o600)
	out, _ := os.CreateTemp(t.TempDir(), "out")
	errf, _ := os.CreateTemp(t.TempDir(), "err")
	if code := Main([]string{"--root", root, "--config", cfg, "--dry-run"}, out, errf); code != 0 {
		t.Fatalf("dry run exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/x")); err == nil {
		t.Error("dry run wrote")
	}
	if code := Main([]string{"--root", root, "--config", cfg}, out, errf); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "etc/x")); string(data) != "x" {
		t.Errorf("got %q", data)
	}
	if code := Main([]string{"--root", root, "extra"}, out, errf); code != 2 {
		t.Errorf("extra argument: exit %d", code)
	}
}
