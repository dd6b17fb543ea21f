package artifacts

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake"
	"github.com/kubebake/kubebake/recipes"
)

func applierInput() recipes.Input {
	return recipes.Input{Name: recipes.ApplierArtifact, Kind: recipes.InputBinary, Source: recipes.Source{Type: recipes.SourceSelf},
		Package: kubebake.ApplierMain, MainSHA256: kubebake.ApplierSourceSHA256(), Arch: "amd64"}
}

// The applier is built from the source embedded in kubebake, not from the working directory:
// the lock pins one binary, the same as a build from this checkout with `make build`'s flags,
// and anything else offered in its place is refused.
func TestSelfSourceApplier(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the applier (-short)")
	}
	ctx := context.Background()
	cache, err := OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := NewSelfSource(cache)
	arts, err := src.Resolve(ctx, []recipes.Input{applierInput()}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(arts) != 1 {
		t.Fatalf("%d artifacts", len(arts))
	}
	a := arts[0]
	if a.Source != recipes.SourceSelf || a.MainSHA256 != kubebake.ApplierSourceSHA256() || !strings.HasPrefix(a.Toolchain, "go") || len(a.SHA256) != 64 || a.Size < 1<<20 {
		t.Fatalf("locked applier: %+v", a)
	}

	// The same binary as a build of this checkout from another working directory.
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "kubebake-ignition")
	c := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=", "-o", local, "./"+kubebake.ApplierMain)
	c.Dir = root
	c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOAMD64=v1")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if sum, _ := fileSHA256(local); sum != a.SHA256 {
		t.Errorf("a build of this checkout has sha256 %s, the embedded source gives %s: the applier is not reproducible", sum, a.SHA256)
	}

	// Resolve again: kept as locked, no rebuild needed.
	again, err := src.Resolve(ctx, []recipes.Input{applierInput()}, arts, false)
	if err != nil || again[0] != a {
		t.Fatalf("re-resolve: %+v, %v", again, err)
	}

	// Fetch gives the locked binary.
	t.Setenv(ApplierEnv, "")
	paths, err := src.Fetch(ctx, arts)
	if err != nil {
		t.Fatal(err)
	}
	if sum, _ := fileSHA256(paths[a.Name]); sum != a.SHA256 {
		t.Fatalf("fetched sha256 %s", sum)
	}

	// $KUBEBAKE_IGNITION: the same bytes are taken, other bytes refused.
	t.Setenv(ApplierEnv, local)
	if p, err := src.Fetch(ctx, arts); err != nil || p[a.Name] != local {
		t.Errorf("identical $%s: %v, %v", ApplierEnv, p, err)
	}
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ApplierEnv, other)
	_, err = src.Fetch(ctx, arts)
	if err == nil || !strings.Contains(err.Error(), "the lock pins") || !strings.Contains(err.Error(), "unset "+ApplierEnv) {
		t.Errorf("foreign $%s: %v", ApplierEnv, err)
	}
	t.Setenv(ApplierEnv, "")

	// A lock made from another kubebake source is refused with the fix.
	stale := a
	stale.MainSHA256 = strings.Repeat("0", 64)
	stale.SHA256 = strings.Repeat("1", 64)
	_, err = src.Fetch(ctx, []recipes.LockedArtifact{stale})
	if err == nil || !strings.Contains(err.Error(), "kubebake lock") {
		t.Errorf("stale source: %v", err)
	}
	// A lock whose binary this toolchain does not reproduce names the toolchains.
	foreign := a
	foreign.SHA256, foreign.Toolchain = strings.Repeat("2", 64), "go1.0"
	_, err = src.Fetch(ctx, []recipes.LockedArtifact{foreign})
	if err == nil || !strings.Contains(err.Error(), "go1.0") || !strings.Contains(err.Error(), a.Toolchain) {
		t.Errorf("other toolchain: %v", err)
	}
}

// Inputs this source cannot build are refused before any work.
func TestSelfSourceRefusesUnknown(t *testing.T) {
	src := NewSelfSource(nil)
	src.toolchain = "go1.26.8"
	bad := applierInput()
	bad.Name = "kubebake"
	if _, err := src.Resolve(context.Background(), []recipes.Input{bad}, nil, false); err == nil || !strings.Contains(err.Error(), "builds only kubebake-ignition") {
		t.Errorf("unknown program: %v", err)
	}
	bad = applierInput()
	bad.MainSHA256 = "abc"
	if _, err := src.Resolve(context.Background(), []recipes.Input{bad}, nil, false); err == nil || !strings.Contains(err.Error(), "kubebake bug") {
		t.Errorf("foreign source: %v", err)
	}
}
