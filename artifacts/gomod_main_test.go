package artifacts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/artifacts/gomain"
	"github.com/kubebake/kubebake/recipes"
)

// Tests of the mains kubebake provides that run no go command; gomod_main_build_test.go
// builds them.

func TestGoMainSources(t *testing.T) {
	if got := gomain.Names(); !reflect.DeepEqual(got, []string{"coredns", "flanneld"}) {
		t.Errorf("Names() = %v", got)
	}
	for _, name := range gomain.Names() {
		src, err := gomain.Source(name)
		if err != nil {
			t.Fatal(err)
		}
		// The file in the tree is the embedded one: what the lock pins is what is reviewed.
		onDisk, err := os.ReadFile(filepath.Join("gomain", name, "main.go"))
		if err != nil || !bytes.Equal(onDisk, src) {
			t.Errorf("%s: embedded source differs from %s (%v)", name, gomain.Path(name), err)
		}
		sum := sha256.Sum256(src)
		if gomain.SHA256(name) != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: SHA256 is not the sha256 of the file", name)
		}
		build, err := gomain.BuildSource(name)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(build, []byte("//go:build")) || !bytes.Contains(build, []byte("\npackage main\n")) || len(build) != len(src)-len("//go:build ignore\n") {
			t.Errorf("%s: BuildSource is not the file without its build constraint:\n%.200s", name, build)
		}
	}
	if _, err := gomain.Source("kube-dns"); err == nil || !strings.Contains(err.Error(), "coredns, flanneld") {
		t.Errorf("unknown main: %v", err)
	}
	if gomain.SHA256("kube-dns") != "" {
		t.Error("SHA256 of an unknown main is not empty")
	}
}

func mainInput(name, module, version string) recipes.Input {
	return recipes.Input{
		Name: name, Kind: recipes.InputBinary, Version: version, Arch: "amd64",
		Source: recipes.Source{Type: recipes.SourceGoMod, Module: module},
		Main:   name, MainSHA256: gomain.SHA256(name),
	}
}

func mainLocked(in recipes.Input, version, sha string) recipes.LockedArtifact {
	return recipes.LockedArtifact{
		Name: in.Name, Kind: recipes.InputBinary, Source: recipes.SourceGoMod, Version: version,
		Module: in.Source.Module + "@" + version, ModuleSum: "h1:x=", Main: in.Main, MainSHA256: in.MainSHA256,
		Toolchain: "go1.26.8", SHA256: sha, Size: 10,
	}
}

// A lock entry of a provided main is kept while the main's source is the one it was built
// from, and resolved again (here: fails for want of go) when the source changed.
func TestGoModProvidedMainResolve(t *testing.T) {
	s, c := noGoSource(t)
	ctx := context.Background()
	in := mainInput("flanneld", recipes.FlannelModule, "0.28")
	sha := strings.Repeat("a", 64)
	kept := mainLocked(in, "v0.28.10", sha)
	got, err := s.Resolve(ctx, []recipes.Input{in}, []recipes.LockedArtifact{kept}, false)
	if err != nil || !reflect.DeepEqual(got, []recipes.LockedArtifact{kept}) {
		t.Fatalf("resolve with an unchanged lock: %v %+v", err, got)
	}
	stale := kept
	stale.MainSHA256 = strings.Repeat("b", 64)
	if _, err := s.Resolve(ctx, []recipes.Input{in}, []recipes.LockedArtifact{stale}, false); err == nil || !strings.Contains(err.Error(), "go command") {
		t.Errorf("a lock entry built from another main.go was kept: %v", err)
	}

	// Inputs that cannot be built.
	for name, bad := range map[string]recipes.Input{
		"unknown main":          func() recipes.Input { b := in; b.Main, b.Name = "kube-dns", "kube-dns"; return b }(),
		"package and main":      func() recipes.Input { b := in; b.Package = recipes.FlannelModule; return b }(),
		"main of another build": func() recipes.Input { b := in; b.MainSHA256 = strings.Repeat("c", 64); return b }(),
	} {
		_, err := s.Resolve(ctx, []recipes.Input{bad}, nil, false)
		if err == nil || strings.Contains(err.Error(), "go command") || !strings.Contains(err.Error(), `"`+bad.Name+`"`) {
			t.Errorf("%s: want an input error naming %q, got %v", name, bad.Name, err)
		}
	}

	// Fetch: a blob in the cache is served whatever the main's source is now (the binary's
	// sha256 is what is pinned); rebuilding one from another main.go is refused up front.
	f := filepath.Join(t.TempDir(), "flanneld")
	os.WriteFile(f, []byte("flanneld"), 0o755)
	sum, _, err := c.PutFile(f)
	if err != nil {
		t.Fatal(err)
	}
	warm := stale
	warm.SHA256 = sum
	if paths, err := s.Fetch(ctx, []recipes.LockedArtifact{warm}); err != nil || paths["flanneld"] != c.BlobPath(sum) {
		t.Errorf("warm fetch: %v %v", err, paths)
	}
	_, err = s.Fetch(ctx, []recipes.LockedArtifact{stale})
	if err == nil || strings.Contains(err.Error(), "go command") || !strings.Contains(err.Error(), "artifacts/gomain/flanneld/main.go has sha256 "+in.MainSHA256) ||
		!strings.Contains(err.Error(), `run "kubebake lock"`) {
		t.Errorf("fetch of a binary from another main.go: %v", err)
	}
	neither := kept
	neither.Main = ""
	if _, err := s.Fetch(ctx, []recipes.LockedArtifact{neither}); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("lock entry with neither package nor main: %v", err)
	}
}

// writeMains leaves exactly the requested mains, without their build constraint, and
// tools.go imports only the module's own packages.
func TestGoModWriteMains(t *testing.T) {
	work := t.TempDir()
	stale := filepath.Join(work, "cmd", "old", "main.go")
	os.MkdirAll(filepath.Dir(stale), 0o755)
	os.WriteFile(stale, []byte("package main\n"), 0o644)
	targets := []string{mainTarget("coredns"), "github.com/coredns/coredns"}
	if err := writeMains(work, targets); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(work, "cmd", "coredns", "main.go"))
	want, _ := gomain.BuildSource("coredns")
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("cmd/coredns/main.go: %v\n%.100s", err, got)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a main of an earlier build is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work, "cmd", "flanneld")); !os.IsNotExist(err) {
		t.Errorf("an unrequested main was written: %v", err)
	}
	if pkgs := modulePackages(targets); !reflect.DeepEqual(pkgs, []string{"github.com/coredns/coredns"}) {
		t.Errorf("modulePackages = %v", pkgs)
	}
	if name, ok := providedMain(mainTarget("flanneld")); !ok || name != "flanneld" || execName(mainTarget("flanneld")) != "flanneld" {
		t.Errorf("mainTarget/providedMain/execName: %q %v", name, ok)
	}
	if _, ok := providedMain("github.com/flannel-io/flannel"); ok {
		t.Error("a module package taken for a provided main")
	}
}

// The build index key of a provided main covers its source, so editing main.go rebuilds.
func TestGoModIndexKeyOfMain(t *testing.T) {
	plan := &buildPlan{info: moduleInfo{Path: recipes.FlannelModule, Version: "v0.28.10", Sum: "h1:x="}, toolchain: "go1.26.8", flagsHash: "f"}
	target := mainTarget("flanneld")
	h := sha256.New()
	for _, f := range []string{goModIndexVersion, plan.info.Path, plan.info.Version, plan.info.Sum, target, plan.toolchain, plan.flagsHash} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	withoutSource := hex.EncodeToString(h.Sum(nil))
	h.Write([]byte(gomain.SHA256("flanneld")))
	h.Write([]byte{0})
	if got := plan.indexKey(target); got == withoutSource || got != hex.EncodeToString(h.Sum(nil)) {
		t.Errorf("index key of a provided main does not cover its source")
	}
}
