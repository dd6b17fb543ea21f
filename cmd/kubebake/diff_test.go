package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
)

const (
	kubeletOldSHA = "e3ec98ad479750aae27a93dd6f69db7aacdf5c8551f0bdd0bf6289d432de267a"
	kubeletNewSHA = "6ad259e0238e1c8417ba8782dab50f4746a2e32235c334791ea298e02202cda6"
)

// diffBuilds writes two build output folders from the testdata manifest: old with kubelet
// v1.35.4, new with v1.35.5 (its artifact, its layer file and the lock hash moved).
func diffBuilds(t *testing.T) (oldDir, newDir string) {
	t.Helper()
	dir := t.TempDir()
	for i, v := range []struct{ version, sha, lockHash string }{
		{"v1.35.4", kubeletOldSHA, ""},
		{"v1.35.5", kubeletNewSHA, strings.Repeat("4c", 32)},
	} {
		m, err := manifest.Read("../../manifest/testdata/debian-12.manifest.json")
		if err != nil {
			t.Fatal(err)
		}
		m.Artifacts = append(m.Artifacts, recipes.LockedArtifact{Name: "kubelet", Kind: "binary", Source: "gomod", Version: v.version, SHA256: v.sha})
		m.Files = append(m.Files, manifest.File{Path: "/usr/bin/kubelet", Type: "file", Mode: 0o755, Artifact: "kubelet", SHA256: v.sha})
		if v.lockHash != "" {
			m.LockHash = v.lockHash
		}
		out := filepath.Join(dir, []string{"old", "new"}[i])
		if err := os.Mkdir(out, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := manifest.Write(filepath.Join(out, manifest.Name), m); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "old"), filepath.Join(dir, "new")
}

// kbDiff runs kubebake diff with every flag given (flags keep their values between runs)
// and returns stdout and the exit status main would end with.
func kbDiff(t *testing.T, args ...string) (string, int, error) {
	t.Helper()
	t.Cleanup(func() { kb(t, "version", "-o", "text") }) // reset the persistent -o flag
	out, _, err := kb(t, append([]string{"diff"}, args...)...)
	code, _ := exitCode(err)
	return out, code, err
}

func TestDiffCommand(t *testing.T) {
	oldDir, newDir := diffBuilds(t)

	out, code, err := kbDiff(t, oldDir, newDir, "--format", "text", "--exit-code=false", "-o", "text")
	if err != nil || code != 0 {
		t.Fatalf("diff: %v (status %d)", err, code)
	}
	if want := `lock: b85e77642332 -> 4c4c4c4c4c4c
artifacts: 1 changed
  ~ kubelet  v1.35.4 -> v1.35.5  sha256 e3ec98ad4797 -> 6ad259e0238e
`; out != want {
		t.Errorf("text:\n%s\nwant:\n%s", out, want)
	}

	out, _, err = kbDiff(t, filepath.Join(oldDir, manifest.Name), newDir, "--format", "markdown", "--exit-code=false", "-o", "text")
	if want := "### Recipe and lock\n\n| name | old | new |\n|---|---|---|\n| lock | `b85e77642332` | `4c4c4c4c4c4c` |\n\n" +
		"### Artifacts\n\n| name | old | new |\n|---|---|---|\n| kubelet | v1.35.4, sha256 `e3ec98ad4797` | v1.35.5, sha256 `6ad259e0238e` |\n"; err != nil || out != want {
		t.Errorf("markdown (%v):\n%s\nwant:\n%s", err, out, want)
	}

	out, _, err = kbDiff(t, oldDir, newDir, "--format", "text", "--exit-code=false", "-o", "json")
	var res struct {
		Old, New, Kind string
		Different      bool
		Artifacts      []manifest.ArtifactChange
		Files          []manifest.FileChange
	}
	if err != nil || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("json (%v):\n%s", err, out)
	}
	if res.Old != filepath.Join(oldDir, manifest.Name) || res.Kind != "manifest" || !res.Different ||
		len(res.Artifacts) != 1 || res.Artifacts[0].New.Version != "v1.35.5" || res.Artifacts[0].New.SHA256 != kubeletNewSHA ||
		res.Files == nil || len(res.Files) != 0 {
		t.Errorf("json: %+v\n%s", res, out)
	}
}

// TestDiffExitCode: --exit-code answers in the exit status, like git diff --exit-code: 0 for
// equal builds, 1 when they differ, with the changes on stdout and nothing on stderr.
func TestDiffExitCode(t *testing.T) {
	oldDir, newDir := diffBuilds(t)
	out, code, err := kbDiff(t, oldDir, oldDir, "--format", "text", "--exit-code", "-o", "text")
	if err != nil || code != 0 || out != "no changes\n" {
		t.Errorf("equal builds: %q, status %d, %v", out, code, err)
	}
	out, code, err = kbDiff(t, oldDir, newDir, "--format", "text", "--exit-code", "-o", "text")
	if _, say := exitCode(err); code != 1 || say || !strings.Contains(out, "~ kubelet  v1.35.4 -> v1.35.5") {
		t.Errorf("different builds: %q, status %d, %v (says %v)", out, code, err, say)
	}
	out, code, err = kbDiff(t, oldDir, newDir, "--format", "text", "--exit-code=false", "-o", "text")
	if err != nil || code != 0 || out == "" {
		t.Errorf("different builds without --exit-code: %q, status %d, %v", out, code, err)
	}
}

// TestDiffCommandLocks: two locks differing in one artifact; a lock saved under another
// name is known by its kind.
func TestDiffCommandLocks(t *testing.T) {
	dir := t.TempDir()
	old := &recipes.Lock{Recipe: "debian-12", InputsDigest: "sha256:00", Artifacts: []recipes.LockedArtifact{
		{Name: "etcd", Kind: "binary", Source: "gomod", Version: "v3.6.5", SHA256: strings.Repeat("b2", 32)},
		{Name: "kubelet", Kind: "binary", Source: "gomod", Version: "v1.35.4", SHA256: kubeletOldSHA},
	}}
	new := *old
	new.Artifacts = []recipes.LockedArtifact{old.Artifacts[0], old.Artifacts[1]}
	new.Artifacts[0].Version, new.Artifacts[0].SHA256 = "v3.6.6", strings.Repeat("c3", 32)
	oldPath, newPath := filepath.Join(dir, "debian-12.lock"), filepath.Join(dir, "lock-artifact.json")
	for p, l := range map[string]*recipes.Lock{oldPath: old, newPath: &new} {
		if err := recipes.WriteLock(p, l); err != nil {
			t.Fatal(err)
		}
	}
	oldLock, _ := recipes.ReadLock(oldPath)
	newLock, _ := recipes.ReadLock(newPath)
	out, code, err := kbDiff(t, oldPath, newPath, "--format", "text", "--exit-code", "-o", "text")
	want := "lock: " + recipes.LockHash(oldLock)[:12] + " -> " + recipes.LockHash(newLock)[:12] + `
artifacts: 1 changed
  ~ etcd  v3.6.5 -> v3.6.6  sha256 b2b2b2b2b2b2 -> c3c3c3c3c3c3
`
	if out != want || code != 1 {
		t.Errorf("locks (status %d, %v):\n%s\nwant:\n%s", code, err, out, want)
	}
}

// TestDiffCommandRefusals: each wrong input is named with the fix, and exits 2 (nothing was
// compared), apart from "the builds differ".
func TestDiffCommandRefusals(t *testing.T) {
	oldDir, newDir := diffBuilds(t)
	empty := t.TempDir()
	image := filepath.Join(t.TempDir(), "debian-12.raw")
	os.WriteFile(image, make([]byte, 4096), 0o644)
	lock := filepath.Join(t.TempDir(), "debian-12.lock")
	if err := recipes.WriteLock(lock, &recipes.Lock{Recipe: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{empty, newDir}, empty + ": no manifest.json here; pass a build's output directory, its manifest.json or a .lock file"},
		{[]string{lock, newDir}, lock + " is a lock and " + filepath.Join(newDir, manifest.Name) + " a manifest: compare two builds (output directories or manifest.json files) or two .lock files"},
		{[]string{oldDir, filepath.Join(empty, "gone")}, filepath.Join(empty, "gone") + ": no such file or directory; pass"},
		{[]string{image, newDir}, image + ": not a manifest.json or a lock (not a JSON document)"},
		{[]string{oldDir}, "diff takes two arguments, OLD and NEW, and got 1"},
		{[]string{oldDir, newDir, "--format", "html"}, `--format "html": use text or markdown`},
	} {
		args := append(c.args, "--exit-code")
		if !strings.Contains(strings.Join(c.args, " "), "--format") {
			args = append(args, "--format", "text")
		}
		_, code, err := kbDiff(t, append(args, "-o", "text")...)
		if err == nil || !strings.Contains(err.Error(), c.want) || code != 2 {
			t.Errorf("kubebake diff %s: status %d, err %v; want status 2 and %q", strings.Join(c.args, " "), code, err, c.want)
		}
	}
	_, code, err := kbDiff(t, oldDir, newDir, "--format", "markdown", "--exit-code=false", "-o", "json")
	if err == nil || !strings.Contains(err.Error(), "pick one") || code != 2 {
		t.Errorf("markdown and json: status %d, %v", code, err)
	}
}
