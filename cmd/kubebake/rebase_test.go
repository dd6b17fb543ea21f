package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/builder"
	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/verify"
)

// fakeCycle is a rebase whose steps record their calls: lock gives lockHash's lock, build
// writes a manifest of it with kernel, verify passes or not.
type fakeCycle struct {
	epoch     int64 // the lock's epoch: another one is another lock hash
	kernel    string
	verifyOK  bool
	calls     []string
	published bool
}

func (f *fakeCycle) lock() *recipes.Lock {
	return &recipes.Lock{APIVersion: recipes.APIVersion, Kind: recipes.KindLock, Recipe: "debian-12", SourceDateEpoch: f.epoch}
}

func (f *fakeCycle) steps() rebaseSteps {
	return rebaseSteps{
		lock: func(ctx context.Context, recipe string) (*recipes.Recipe, *recipes.Lock, []artifacts.Change, error) {
			f.calls = append(f.calls, "lock")
			return &recipes.Recipe{Name: "debian-12", File: "recipes/debian-12.yaml"}, f.lock(), nil, nil
		},
		build: func(ctx context.Context, recipe, outDir string, formats []string) (*builder.Result, error) {
			f.calls = append(f.calls, "build")
			writeManifest(nil, outDir, recipes.LockHash(f.lock()), f.kernel)
			return &builder.Result{}, nil
		},
		verify: func(ctx context.Context, outDir string) (*verify.Report, error) {
			f.calls = append(f.calls, "verify")
			return &verify.Report{Pass: f.verifyOK}, nil
		},
		publish: func(ctx context.Context, outDir string) error {
			f.calls = append(f.calls, "publish")
			f.published = true
			return nil
		},
	}
}

func writeManifest(t *testing.T, dir, lockHash, kernel string) {
	os.MkdirAll(dir, 0o755)
	m := &manifest.Manifest{APIVersion: manifest.APIVersion, Kind: manifest.Kind, LockHash: lockHash,
		Recipe: &recipes.Recipe{Name: "debian-12"}, Image: manifest.ImageInfo{Kernel: kernel},
		Packages: []manifest.DebPackage{{Name: "linux-image-" + kernel, Version: kernel, Architecture: "amd64"}}}
	if err := manifest.Write(filepath.Join(dir, manifest.Name), m); err != nil && t != nil {
		t.Fatal(err)
	}
}

func TestRebaseCycle(t *testing.T) {
	out := t.TempDir()
	run := func(f *fakeCycle, publish bool) (int, []*rebaseResult) {
		t.Helper()
		cmd := rootCmd
		var stdout strings.Builder
		cmd.SetOut(&stdout)
		globals.output = "json"
		defer func() { globals.output = "text" }()
		err := runRebase(cmd, rebaseOptions{Recipes: []string{"debian-12"}, Out: out, Publish: publish}, f.steps())
		code, _ := exitCode(err)
		var res []*rebaseResult
		if jerr := json.Unmarshal([]byte(stdout.String()), &res); jerr != nil {
			t.Fatalf("%v: %s", jerr, stdout.String())
		}
		return code, res
	}

	// The first run: no release yet, so it builds, verifies, writes the changelog, publishes.
	first := &fakeCycle{epoch: 1, kernel: "6.1.0-50-cloud-amd64", verifyOK: true}
	code, res := run(first, true)
	if code != rebaseExitBuilt || res[0].Status != "built" || strings.Join(first.calls, ",") != "lock,build,verify,publish" {
		t.Fatalf("first run: exit %d, %+v, calls %v", code, res[0], first.calls)
	}
	if log, err := os.ReadFile(res[0].Changelog); err != nil || !strings.Contains(string(log), "First release") || res[0].Changes == nil {
		t.Errorf("first release: changelog %q (%v), lock changes %v", log, err, res[0].Changes)
	}
	for _, f := range []string{"junit.xml", "report.json"} {
		if _, err := os.Stat(filepath.Join(out, "debian-12", "verify", f)); err != nil {
			t.Errorf("verify's report: %v", err)
		}
	}
	// Again with nothing new: unchanged, nothing built.
	again := &fakeCycle{epoch: 1, kernel: "6.1.0-50-cloud-amd64", verifyOK: true}
	code, res = run(again, true)
	if code != rebaseExitUnchanged || res[0].Status != "unchanged" || strings.Join(again.calls, ",") != "lock" {
		t.Fatalf("unchanged: exit %d, %+v, calls %v", code, res[0], again.calls)
	}
	// A new kernel: built, and the changelog says so.
	moved := &fakeCycle{epoch: 2, kernel: "6.1.0-57-cloud-amd64", verifyOK: true}
	code, res = run(moved, false)
	if code != rebaseExitBuilt || moved.published {
		t.Fatalf("moved: exit %d, published %v", code, moved.published)
	}
	log, err := os.ReadFile(res[0].Changelog)
	if err != nil || !strings.Contains(string(log), "6.1.0-57-cloud-amd64") {
		t.Errorf("changelog: %v\n%s", err, log)
	}
	var changes manifest.Changes
	if data, err := os.ReadFile(filepath.Join(out, "debian-12", "changes.json")); err != nil || json.Unmarshal(data, &changes) != nil || changes.Kernel == nil {
		t.Errorf("changes.json: %v %+v", err, changes)
	}
	// A new lock whose image fails verify: exit 12, never published.
	broken := &fakeCycle{epoch: 3, kernel: "6.1.0-58-cloud-amd64", verifyOK: false}
	code, res = run(broken, true)
	if code != rebaseExitVerify || res[0].FailedStep != stepVerify || broken.published {
		t.Fatalf("failed verify: exit %d, %+v, published %v", code, res[0], broken.published)
	}
	// ... and the release stays the last proven build: the next run tries the new lock again.
	if m, err := manifest.Read(filepath.Join(out, "debian-12", manifest.Name)); err != nil || m.LockHash != recipes.LockHash(moved.lock()) {
		t.Errorf("the release after a failed verify: %v %+v", err, m)
	}
	retry := &fakeCycle{epoch: 3, kernel: "6.1.0-58-cloud-amd64", verifyOK: true}
	if code, _ = run(retry, false); code != rebaseExitBuilt {
		t.Errorf("retry after a failed verify: exit %d, calls %v", code, retry.calls)
	}
}

// TestRebaseLocked: --locked takes the recipe's lock as it is (an embedded recipe's, here),
// and refuses a recipe without one, naming the way out.
func TestRebaseLocked(t *testing.T) {
	r, l, changes, err := lockedAsIs(context.Background(), "debian-12")
	if err != nil || r.Name != "debian-12" || len(l.Artifacts) == 0 || changes != nil {
		t.Fatalf("debian-12: %v %v %v", r, err, changes)
	}
	dir := t.TempDir()
	recipe, err := os.ReadFile(filepath.Join("..", "..", "recipes", "debian-12.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "mine.yaml")
	os.WriteFile(file, recipe, 0o644)
	if _, _, _, err := lockedAsIs(context.Background(), file); err == nil || !strings.Contains(err.Error(), "run kubebake lock "+file+", or rebase without --locked") {
		t.Errorf("no lock: %v", err)
	}
}
