package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// actionlint runs the GitHub Actions checker (tools/actionlint, a module of its own) on files.
func actionlint(t *testing.T, files ...string) (string, error) {
	t.Helper()
	args := append([]string{"run", "github.com/rhysd/actionlint/cmd/actionlint", "-no-color"}, files...)
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join("..", "..", "tools", "actionlint")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestWeeklyRebaseWorkflow: the workflow passes actionlint, a broken copy of it does not (the
// check can fail), and it branches on rebase's exit statuses as this command defines them.
func TestWeeklyRebaseWorkflow(t *testing.T) {
	wf, err := filepath.Abs(filepath.Join("..", "..", ".github", "workflows", "weekly-rebase.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := actionlint(t, wf); err != nil {
		t.Fatalf("actionlint %s: %v\n%s", wf, err, out)
	}
	data, err := os.ReadFile(wf)
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(t.TempDir(), "broken.yml")
	os.WriteFile(broken, []byte(strings.Replace(string(data), "needs: matrix", "needs: no-such-job", 1)), 0o644)
	if out, err := actionlint(t, broken); err == nil || !strings.Contains(out, "no-such-job") {
		t.Errorf("actionlint passed a workflow that needs a job it does not have: %v\n%s", err, out)
	}
	for _, want := range []string{"rebase --matrix", strconv.Itoa(rebaseExitBuilt) + ") echo", strconv.Itoa(rebaseExitUnchanged) + ") echo"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the workflow lacks %q", want)
		}
	}
}
