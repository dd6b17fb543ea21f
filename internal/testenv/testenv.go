// Package testenv is how tests say what they need from the machine: a tool on PATH, root, a
// network namespace, the machine's Debian mirror, a long enough -timeout.
//
// Outside CI a missing need skips the test with a message naming what is missing and the fix
// ("run make deps", "run as root", ...), so a developer's machine without QEMU still runs the
// rest. In CI (the CI variable set to "true" or "1", as CI systems and .ci/run set it) the
// same need fails the test instead: "make test" installs every tool (scripts/install-deps.sh),
// so a test that would skip there is a test that did not run, and the run must not be green.
//
// Not every skip is an environment gap. testing.Short() skips (the -short edit-loop subset:
// no network, no VM boots, no Kubernetes compile) and opt-in benchmarks (KUBEBAKE_BENCH_BUILD)
// stay plain t.Skip: they are choices of the caller, not something missing on the machine.
//
// Want and WantTool are for the optional part of a test (a second check that needs one more
// tool): outside CI they log that the part was not checked and let the test go on; in CI
// they mark the test failed.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// depsFix is the fix for a missing tool: scripts/install-deps.sh installs every tool a test
// names.
const depsFix = "run make deps (scripts/install-deps.sh installs every tool the tests use)"

// InCI says whether the tests run in CI: CI=true or CI=1.
func InCI() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("CI"))) {
	case "true", "1":
		return true
	}
	return false
}

// Missing reports that what is missing, with its fix: it skips the test outside CI and
// fails it in CI.
func Missing(t testing.TB, what, fix string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI: %s is missing: %s; a test that skips in CI did not run", what, fix)
	}
	t.Skipf("%s is missing: %s", what, fix)
}

// Need is Missing unless ok.
func Need(t testing.TB, ok bool, what, fix string) {
	t.Helper()
	if !ok {
		Missing(t, what, fix)
	}
}

// NeedTool needs name on PATH and returns its path.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Need(t, err == nil, name, depsFix)
	return p
}

// NeedTools needs every one of names on PATH.
func NeedTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		NeedTool(t, n)
	}
}

// NeedRoot needs the test to run as root (chroot, mount, network namespaces, containerd).
func NeedRoot(t testing.TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "root", "run the tests as root (make test does on the CI machine)")
}

// NeedTime needs about d left before the test binary's -timeout.
func NeedTime(t *testing.T, d time.Duration) {
	t.Helper()
	if dl, ok := t.Deadline(); ok && time.Until(dl) < d {
		Missing(t, fmt.Sprintf("time: the test needs about %v but %v is left before -timeout", d, time.Until(dl).Round(time.Second)),
			fmt.Sprintf("run with -timeout %v or more (make test: TEST_TIMEOUT)", (d+10*time.Minute).Round(time.Minute)))
	}
}

// Want is for an optional part of a test: it returns ok; when !ok it logs that what is
// missing and the part is not checked, and in CI it marks the test failed (the test goes on).
func Want(t testing.TB, ok bool, what, fix string) bool {
	t.Helper()
	if ok {
		return true
	}
	if InCI() {
		t.Errorf("CI: %s is missing: %s; part of this test did not run", what, fix)
	} else {
		t.Logf("%s is missing (%s): that part is not checked", what, fix)
	}
	return false
}

// WantTool is Want for a tool on PATH.
func WantTool(t testing.TB, name string) bool {
	t.Helper()
	_, err := exec.LookPath(name)
	return Want(t, err == nil, name, depsFix)
}
