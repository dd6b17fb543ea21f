package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// helperEnv makes TestHelperNeedMke2fs do its work; it is set only in the subprocesses
// TestNeedToolInCI starts.
const helperEnv = "KUBEBAKE_TESTENV_HELPER"

// TestHelperNeedMke2fs is run by TestNeedToolInCI as a subprocess; on its own it does nothing.
func TestHelperNeedMke2fs(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	NeedTool(t, "mke2fs")
	t.Log("mke2fs found")
}

// TestNeedToolInCI re-runs this test binary with PATH set to an empty folder: NeedTool(t,
// "mke2fs") must fail the test with CI=true or CI=1 and skip it otherwise, naming mke2fs
// either way. The subprocess gets no -test.short, so this does not depend on -short.
func TestNeedToolInCI(t *testing.T) {
	empty := t.TempDir()
	for _, c := range []struct {
		ci   string
		fail bool
		want string
	}{
		{"true", true, "CI: mke2fs is missing: run make deps"},
		{"1", true, "CI: mke2fs is missing: run make deps"},
		{"TRUE", true, "a test that skips in CI did not run"},
		{"", false, "mke2fs is missing: run make deps"},
		{"false", false, "mke2fs is missing: run make deps"},
		{"0", false, "mke2fs is missing: run make deps"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperNeedMke2fs$", "-test.v", "-test.count=1")
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "CI=") && !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, helperEnv+"=") {
				env = append(env, kv)
			}
		}
		cmd.Env = append(env, "PATH="+empty, helperEnv+"=1", "CI="+c.ci)
		out, err := cmd.CombinedOutput()
		s := string(out)
		if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
			t.Fatalf("CI=%q: running %s: %v", c.ci, os.Args[0], err)
		}
		switch {
		case c.fail && (err == nil || !strings.Contains(s, "--- FAIL: TestHelperNeedMke2fs")):
			t.Errorf("CI=%q: the subprocess did not fail (err %v):\n%s", c.ci, err, s)
		case !c.fail && (err != nil || !strings.Contains(s, "--- SKIP: TestHelperNeedMke2fs")):
			t.Errorf("CI=%q: the subprocess did not pass with a skip (err %v):\n%s", c.ci, err, s)
		case !strings.Contains(s, c.want):
			t.Errorf("CI=%q: output does not say %q:\n%s", c.ci, c.want, s)
		case strings.Contains(s, "mke2fs found"):
			t.Errorf("CI=%q: mke2fs found on an empty PATH:\n%s", c.ci, s)
		}
	}
}

func TestInCI(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "True": true, "": false, "false": false, "0": false, "yes": false} {
		t.Setenv("CI", v)
		if got := InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v", v, got)
		}
	}
}

// TestWant: a missing optional part is logged outside CI (the test passes) and an error in CI.
func TestWant(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("CI", "")
	ft := &fakeT{TB: t}
	if WantTool(ft, "mke2fs") || ft.failed || !strings.Contains(ft.logs, "mke2fs is missing") {
		t.Errorf("outside CI: failed=%v logs=%q", ft.failed, ft.logs)
	}
	t.Setenv("CI", "true")
	ft = &fakeT{TB: t}
	if WantTool(ft, "mke2fs") || !ft.failed || !strings.Contains(ft.logs, "CI: mke2fs is missing") {
		t.Errorf("in CI: failed=%v logs=%q", ft.failed, ft.logs)
	}
	if !Want(ft, true, "nothing", "") {
		t.Error("Want(true) = false")
	}
}

// fakeT records Logf and Errorf instead of reporting them.
type fakeT struct {
	testing.TB
	failed bool
	logs   string
}

func (f *fakeT) Helper()                         {}
func (f *fakeT) Logf(format string, args ...any) { f.logs += fmt.Sprintf(format, args...) + "\n" }
func (f *fakeT) Errorf(format string, args ...any) {
	f.failed = true
	f.logs += fmt.Sprintf(format, args...) + "\n"
}
