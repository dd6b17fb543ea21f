package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kubebake/kubebake/artifacts/gomain"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/recipes"
)

// GoModSource builds Go main packages at a pinned module version from the Go module proxy
// (Source type "gomod"): the module's own, or mains kubebake provides against it
// (gomod_main.go, package gomain). All binaries of one module@version are built by a single
// go build in a persistent work folder under the cache (scratch/gomod/<module>@<version>), so
// shared packages compile once and the Go build cache is reused between runs. Builds are
// reproducible for a given toolchain: CGO_ENABLED=0, -trimpath, no build ID, version
// variables from the module proxy (never the wall clock).
//
// A build index in each work folder maps (module@version, module sum, package, toolchain,
// build-flags hash) to the binary's sha256, so resolving again does not rebuild; Fetch from a
// warm cache only looks blobs up by sha256 and runs no go command at all.
type GoModSource struct {
	cache *Cache
	// goCmd is the go command; tests point it at a missing file to prove that a code path
	// runs no go command.
	goCmd string
	// env is appended to every go command's environment after kubebake's own settings
	// (tests isolate GOCACHE with it).
	env []string
	// beforeBuild, when set, is called just before go build starts (tests cancel there).
	beforeBuild func()

	mu        sync.Mutex
	toolchain string
}

// NewGoModSource returns the gomod source working in cache.
func NewGoModSource(cache *Cache) Source { return newGoModSource(cache) }

func newGoModSource(cache *Cache) *GoModSource {
	return &GoModSource{cache: cache, goCmd: "go"}
}

// Type implements Source.
func (s *GoModSource) Type() string { return recipes.SourceGoMod }

// goModIndexVersion changes whenever the way kubebake builds changes in a way that can change
// the output (generated go.mod, flags, environment): it is part of every index key.
const goModIndexVersion = "gomod-build-v1"

// goModArch is the one architecture gomod builds for (Debian and Go spell it alike).
const goModArch = "amd64"

// goBuildEnv is the environment of every go command. GOFLAGS, GOWORK and the GOOS/GOARCH
// family are fixed so that neither the user's environment nor a go.work or VCS checkout
// around the cache folder changes what is built.
var goBuildEnv = []string{
	"CGO_ENABLED=0",
	"GOOS=linux",
	"GOARCH=" + goModArch,
	"GOAMD64=v1",
	"GOEXPERIMENT=",
	"GOFLAGS=-mod=mod -buildvcs=false",
	"GOTOOLCHAIN=local",
	"GOWORK=off",
}

// goBuildFlags are the go build flags besides -ldflags and -o.
var goBuildFlags = []string{"-trimpath"}

// ---------------------------------------------------------------------------------------
// Resolve

// Resolve implements Source: it picks each input's version, builds what has not been built
// with this toolchain before, and records every binary's sha256.
func (s *GoModSource) Resolve(ctx context.Context, inputs []recipes.Input, prev []recipes.LockedArtifact, update bool) ([]recipes.LockedArtifact, error) {
	prevByName := map[string]recipes.LockedArtifact{}
	for _, p := range prev {
		prevByName[p.Name] = p
	}
	out := make([]recipes.LockedArtifact, len(inputs))
	cons := make([]recipes.Constraint, len(inputs))
	// kept: module + constraint -> version of a kept entry, so that an input added next to
	// kept ones (kube-proxy next to kubelet) gets their version, not a newer patch.
	kept := map[string]string{}
	var todo []int
	for i, in := range inputs {
		c, err := checkGoModInput(in)
		if err != nil {
			return nil, err
		}
		cons[i] = c
		if p, ok := prevByName[in.Name]; ok && !update && keepLocked(in, c, p) {
			out[i] = p
			kept[in.Source.Module+"\x00"+c.String()] = p.Version
			continue
		}
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return out, nil
	}

	// Versions: one list per module, only for the tracks that need one.
	lists := map[string][]string{}
	version := make(map[int]string, len(todo))
	for _, i := range todo {
		in, c := inputs[i], cons[i]
		if v, ok := kept[in.Source.Module+"\x00"+c.String()]; ok {
			version[i] = v
			continue
		}
		if c.Exact {
			version[i] = c.String() // its existence is checked by go mod download below
			continue
		}
		vs, ok := lists[in.Source.Module]
		if !ok {
			var err error
			if vs, err = s.listVersions(ctx, in.Source.Module); err != nil {
				return nil, fmt.Errorf("gomod input %q: %w", in.Name, err)
			}
			lists[in.Source.Module] = vs
		}
		v, ok := newestMatching(c.String(), vs)
		if !ok {
			return nil, fmt.Errorf("gomod input %q: no release of %s matches %q (the module proxy has %s); change the version in the recipe",
				in.Name, in.Source.Module, c.String(), summarizeVersions(vs))
		}
		version[i] = v
	}

	// Build (or find in the index) per module@version, in a stable order.
	groups := map[string][]int{}
	var keys []string
	for _, i := range todo {
		k := inputs[i].Source.Module + "@" + version[i]
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], i)
	}
	sort.Strings(keys)
	for _, k := range keys {
		idx := groups[k]
		mod, ver := inputs[idx[0]].Source.Module, version[idx[0]]
		var targets []string
		for _, i := range idx {
			targets = append(targets, inputTarget(inputs[i]))
		}
		res, err := s.binaries(ctx, mod, ver, targets)
		if err != nil {
			return nil, err
		}
		for _, i := range idx {
			in := inputs[i]
			b := res.bins[inputTarget(in)]
			out[i] = recipes.LockedArtifact{
				Name:       in.Name,
				Kind:       recipes.InputBinary,
				Source:     recipes.SourceGoMod,
				Version:    ver,
				Module:     mod + "@" + ver,
				ModuleSum:  res.info.Sum,
				Package:    in.Package,
				Main:       in.Main,
				MainSHA256: in.MainSHA256,
				Toolchain:  res.toolchain,
				SHA256:     b.SHA256,
				Size:       b.Size,
			}
		}
	}
	return out, nil
}

// checkGoModInput validates a gomod input and parses its version.
func checkGoModInput(in recipes.Input) (recipes.Constraint, error) {
	where := fmt.Sprintf("gomod input %q", in.Name)
	if in.Source.Type != recipes.SourceGoMod {
		return recipes.Constraint{}, fmt.Errorf("%s: source type is %q, not gomod", where, in.Source.Type)
	}
	if in.Kind != "" && in.Kind != recipes.InputBinary {
		return recipes.Constraint{}, fmt.Errorf("%s: kind %q; gomod builds binaries only", where, in.Kind)
	}
	if in.Arch != "" && in.Arch != goModArch {
		return recipes.Constraint{}, fmt.Errorf("%s: architecture %q: gomod builds linux/%s only for now (the lock records no architecture for a rebuild to use)", where, in.Arch, goModArch)
	}
	mod := in.Source.Module
	if mod == "" {
		return recipes.Constraint{}, fmt.Errorf("%s: source.module is empty; name the Go module (k8s.io/kubernetes)", where)
	}
	if in.Main != "" {
		if in.Package != "" {
			return recipes.Constraint{}, fmt.Errorf("%s: both package %q and kubebake's main %q; name one", where, in.Package, in.Main)
		}
		if err := checkProvidedMain(in.Main, in.MainSHA256); err != nil {
			return recipes.Constraint{}, fmt.Errorf("%s: %w", where, err)
		}
	} else if in.Package != mod && !strings.HasPrefix(in.Package, mod+"/") {
		return recipes.Constraint{}, fmt.Errorf("%s: package %q is not inside module %s", where, in.Package, mod)
	}
	c, err := recipes.ParseConstraint(in.Version)
	if err != nil {
		return c, fmt.Errorf("%s: version %w; write an exact version (v1.35.4) or a minor track (1.35)", where, err)
	}
	if err := checkMajor(mod, c); err != nil {
		return c, fmt.Errorf("%s: %w", where, err)
	}
	return c, nil
}

// keepLocked reports whether a locked entry still answers its input.
func keepLocked(in recipes.Input, c recipes.Constraint, p recipes.LockedArtifact) bool {
	return p.Source == recipes.SourceGoMod &&
		(p.Kind == recipes.InputBinary || p.Kind == "") &&
		p.Package == in.Package &&
		p.Main == in.Main && p.MainSHA256 == in.MainSHA256 &&
		p.Module == in.Source.Module+"@"+p.Version &&
		goModMatches(c.String(), p.Version) &&
		ValidSHA256(p.SHA256)
}

func summarizeVersions(vs []string) string {
	if len(vs) == 0 {
		return "no versions"
	}
	if len(vs) > 12 {
		return strings.Join(vs[len(vs)-12:], " ") + " (newest 12)"
	}
	return strings.Join(vs, " ")
}

// ---------------------------------------------------------------------------------------
// Fetch

// Fetch implements Source. A blob already in the cache is returned without running anything;
// missing ones are rebuilt (one go build per module@version) and must hash to the lock.
func (s *GoModSource) Fetch(ctx context.Context, arts []recipes.LockedArtifact) (map[string]string, error) {
	paths := make(map[string]string, len(arts))
	missing := map[string][]recipes.LockedArtifact{}
	for _, a := range arts {
		if !ValidSHA256(a.SHA256) {
			return nil, fmt.Errorf("lock entry %q: sha256 %q is not valid; run kubebake lock", a.Name, a.SHA256)
		}
		p, ok, err := s.cache.Lookup(a.SHA256)
		if err != nil {
			return nil, err
		}
		if ok {
			paths[a.Name] = p
			continue
		}
		if a.Module == "" || !strings.Contains(a.Module, "@") || (a.Package == "") == (a.Main == "") {
			return nil, fmt.Errorf("lock entry %q: module %q / package %q / main %q incomplete; run kubebake lock", a.Name, a.Module, a.Package, a.Main)
		}
		if a.Main != "" {
			if err := checkProvidedMain(a.Main, a.MainSHA256); err != nil {
				return nil, fmt.Errorf("lock entry %q: %w", a.Name, err)
			}
		}
		missing[a.Module] = append(missing[a.Module], a)
	}
	mods := make([]string, 0, len(missing))
	for m := range missing {
		mods = append(mods, m)
	}
	sort.Strings(mods)
	var errs []error
	for _, m := range mods {
		group := missing[m]
		mod, ver, _ := strings.Cut(m, "@")
		var targets []string
		for _, a := range group {
			targets = append(targets, artifactTarget(a))
		}
		if tc, err := s.goVersion(ctx); err == nil && group[0].Toolchain != "" && group[0].Toolchain != tc {
			slog.Warn("the lock was made with another Go toolchain; the rebuilt binaries will probably not match it",
				"module", m, "locked", group[0].Toolchain, "local", tc)
		}
		res, err := s.binaries(ctx, mod, ver, targets)
		if err != nil {
			return nil, err
		}
		for _, a := range group {
			if a.ModuleSum != "" && a.ModuleSum != res.info.Sum {
				errs = append(errs, fmt.Errorf("%s: module %s has sum %s on the module proxy, the lock says %s; the module changed upstream or the lock was edited; run kubebake lock --update",
					a.Name, m, res.info.Sum, a.ModuleSum))
				continue
			}
			b := res.bins[artifactTarget(a)]
			if b.SHA256 != a.SHA256 {
				errs = append(errs, mismatchError(a, m, res.toolchain, b.SHA256))
				continue
			}
			p, ok, err := s.cache.Lookup(b.SHA256)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%s: built from %s but sha256 %s vanished from the artifact cache", a.Name, m, b.SHA256)
			}
			paths[a.Name] = p
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return paths, nil
}

func mismatchError(a recipes.LockedArtifact, module, toolchain, got string) error {
	locked := a.Toolchain
	if locked == "" {
		locked = "an unrecorded toolchain"
	}
	hint := "builds are reproducible only with the same toolchain; run \"kubebake lock --update\" to pin what this toolchain builds, or build with " + locked
	if a.Toolchain == toolchain {
		hint = "the toolchain is the same, so the lock was edited or the build is not reproducible; run \"kubebake lock --update\" and report it if it happens again"
	}
	return fmt.Errorf("%s built from %s with %s has sha256 %s, the lock says %s (locked with %s); %s",
		a.Name, module, toolchain, got, a.SHA256, locked, hint)
}

// ---------------------------------------------------------------------------------------
// Building

// builtBinary is one binary of the build index.
type builtBinary struct {
	Package string `json:"package"` // the build target: a Go package path
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
}

// buildResult is what binaries returns for one module@version.
type buildResult struct {
	info      moduleInfo
	toolchain string
	bins      map[string]builtBinary // by target: package path (mainTarget for a provided main)
}

// moduleInfo is what the module proxy says about one module version.
type moduleInfo struct {
	Path, Version string
	Sum           string // h1: hash of the module zip
	GoMod         string // path of the go.mod in the module download cache
	Time          time.Time
	Commit        string // Origin.Hash, when the proxy reports it
}

// buildPlan is everything that determines the bytes of one module's binaries.
type buildPlan struct {
	info      moduleInfo
	toolchain string
	goMod     string // generated go.mod before tidy
	ldflags   string
	flagsHash string
}

// indexKey is the build index key of one target under plan; a provided main's key also
// covers its source.
func (p *buildPlan) indexKey(pkg string) string {
	h := sha256.New()
	fields := []string{goModIndexVersion, p.info.Path, p.info.Version, p.info.Sum, pkg, p.toolchain, p.flagsHash}
	if name, ok := providedMain(pkg); ok {
		fields = append(fields, gomain.SHA256(name))
	}
	for _, f := range fields {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// binaries returns the sha256 and size of each target's binary (a main package of the module
// or a provided main) at module@version, building them (one go build) unless the build index
// already knows all of them and the cache holds them.
func (s *GoModSource) binaries(ctx context.Context, module, version string, pkgs []string) (*buildResult, error) {
	pkgs = sortedUnique(pkgs)
	toolchain, err := s.goVersion(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.download(ctx, module, version)
	if err != nil {
		return nil, err
	}
	plan, err := newBuildPlan(info, toolchain)
	if err != nil {
		return nil, err
	}
	work, err := s.cache.Scratch(filepath.Join("gomod", module+"@"+version))
	if err != nil {
		return nil, err
	}
	res := &buildResult{info: info, toolchain: toolchain, bins: map[string]builtBinary{}}
	if s.fromIndex(work, plan, pkgs, res) {
		slog.Debug("gomod: build index hit", "module", module+"@"+version, "packages", len(pkgs))
		return res, nil
	}

	unlock, err := s.cache.Lock(ctx, lockName(module, version))
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another kubebake may have built them while we waited for the lock.
	if s.fromIndex(work, plan, pkgs, res) {
		return res, nil
	}
	if err := s.build(ctx, work, plan, pkgs, res); err != nil {
		return nil, err
	}
	return res, nil
}

// fromIndex fills res from the build index if every package is there and in the cache.
func (s *GoModSource) fromIndex(work string, plan *buildPlan, pkgs []string, res *buildResult) bool {
	idx := readGoModIndex(work)
	for _, pkg := range pkgs {
		b, ok := idx.Entries[plan.indexKey(pkg)]
		if !ok || b.Package != pkg {
			return false
		}
		if _, ok, err := s.cache.Lookup(b.SHA256); err != nil || !ok {
			return false
		}
		res.bins[pkg] = b
	}
	return true
}

func lockName(module, version string) string {
	return "gomod-" + strings.NewReplacer("/", "_", "\\", "_").Replace(module) + "@" + version
}

func newBuildPlan(info moduleInfo, toolchain string) (*buildPlan, error) {
	data, err := os.ReadFile(info.GoMod)
	if err != nil {
		return nil, fmt.Errorf("reading the go.mod of %s@%s: %w", info.Path, info.Version, err)
	}
	target, err := parseGoMod(info.Path+"@"+info.Version+"/go.mod", data)
	if err != nil {
		return nil, err
	}
	if target.Module != info.Path {
		return nil, fmt.Errorf("%s@%s: its go.mod declares module %s", info.Path, info.Version, target.Module)
	}
	gm, err := buildGoMod(target, info.Version)
	if err != nil {
		return nil, err
	}
	p := &buildPlan{
		info:      info,
		toolchain: toolchain,
		goMod:     gm,
		ldflags:   goModLDFlags(info.Path, moduleStamp{Version: info.Version, Commit: info.Commit, Time: info.Time}),
	}
	h := sha256.New()
	for _, f := range append(append(append([]string{}, goBuildEnv...), goBuildFlags...), "-ldflags="+p.ldflags, gm) {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	p.flagsHash = hex.EncodeToString(h.Sum(nil))
	return p, nil
}

// build generates the build module in work, tidies it, runs one go build per set of
// packages whose binary names do not collide (usually one), and files every binary in the
// cache and the build index. The caller holds the module's cache lock.
func (s *GoModSource) build(ctx context.Context, work string, plan *buildPlan, pkgs []string, res *buildResult) error {
	m := plan.info.Path + "@" + plan.info.Version
	start := time.Now()
	what := fmt.Sprintf("%d packages of %s", len(pkgs), m)
	if len(pkgs) == 1 {
		what = pkgs[0] + "@" + plan.info.Version
		if name, ok := providedMain(pkgs[0]); ok {
			what = name + " (kubebake's main) against " + m
		}
	}
	slog.Info("building "+what, "toolchain", plan.toolchain, "dir", work)
	stop := progress("still building "+what, start)
	defer stop()

	if err := atomicfile.WriteFile(filepath.Join(work, "go.mod"), []byte(plan.goMod), 0o644); err != nil {
		return err
	}
	if err := writeMains(work, pkgs); err != nil {
		return err
	}
	tools := filepath.Join(work, "tools.go")
	if modPkgs := modulePackages(pkgs); len(modPkgs) > 0 {
		if err := atomicfile.WriteFile(tools, []byte(buildToolsGo(modPkgs)), 0o644); err != nil {
			return err
		}
	} else if err := os.Remove(tools); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// go's own temporary folder lives in the work folder, so that a killed build leaves no
	// $WORK behind in /tmp: it is emptied now and when this build ends.
	tmp := filepath.Join(work, "tmp")
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	goTmp := []string{"GOTMPDIR=" + tmp}
	if _, err := s.goOutputEnv(ctx, work, goTmp, "mod", "tidy"); err != nil {
		return fmt.Errorf("preparing the build of %s: %w", m, err)
	}

	bin := filepath.Join(work, "bin")
	defer os.RemoveAll(bin) // the binaries live in the cache; a cancelled build leaves nothing
	for _, batch := range nameBatches(pkgs) {
		if err := os.RemoveAll(bin); err != nil {
			return err
		}
		if err := os.MkdirAll(bin, 0o755); err != nil {
			return err
		}
		args := append([]string{"build"}, goBuildFlags...)
		args = append(args, "-ldflags="+plan.ldflags, "-o", bin+string(filepath.Separator))
		args = append(args, batch...)
		if s.beforeBuild != nil {
			s.beforeBuild()
		}
		if _, err := s.goOutputEnv(ctx, work, goTmp, args...); err != nil {
			return fmt.Errorf("building %s: %w", m, err)
		}
		for _, pkg := range batch {
			out := filepath.Join(bin, execName(pkg))
			st, err := os.Stat(out)
			if err != nil {
				return fmt.Errorf("building %s: go build wrote no binary for %s: %w", m, pkg, err)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			sum, _, err := s.cache.PutFile(out)
			if err != nil {
				return err
			}
			res.bins[pkg] = builtBinary{Package: pkg, SHA256: sum, Size: st.Size()}
		}
	}

	idx := readGoModIndex(work)
	for _, pkg := range pkgs {
		idx.Entries[plan.indexKey(pkg)] = res.bins[pkg]
	}
	if err := writeGoModIndex(work, idx); err != nil {
		slog.Warn("gomod: cannot write the build index; the next resolve rebuilds", "dir", work, "err", err)
	}
	var total int64
	for _, b := range res.bins {
		total += b.Size
	}
	slog.Info("built "+what, "elapsed", time.Since(start).Round(time.Second), "bytes", total)
	return nil
}

// nameBatches splits packages into go build invocations whose output names do not collide
// (go build -o dir/ refuses two binaries with one name). Normally that is a single batch.
func nameBatches(pkgs []string) [][]string {
	var batches [][]string
	var names []map[string]bool
	for _, p := range pkgs {
		n := execName(p)
		placed := false
		for i := range batches {
			if !names[i][n] {
				batches[i] = append(batches[i], p)
				names[i][n] = true
				placed = true
				break
			}
		}
		if !placed {
			batches = append(batches, []string{p})
			names = append(names, map[string]bool{n: true})
		}
	}
	return batches
}

// progress logs msg with the elapsed time every minute until stop is called.
func progress(msg string, start time.Time) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				slog.Info(msg, "elapsed", time.Since(start).Round(time.Second))
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// ---------------------------------------------------------------------------------------
// Build index

type goModIndex struct {
	Version string                 `json:"version"`
	Entries map[string]builtBinary `json:"entries"`
}

const goModIndexFile = "index.json"

func readGoModIndex(work string) *goModIndex {
	idx := &goModIndex{Version: goModIndexVersion, Entries: map[string]builtBinary{}}
	data, err := os.ReadFile(filepath.Join(work, goModIndexFile))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			slog.Debug("gomod: cannot read build index", "dir", work, "err", err)
		}
		return idx
	}
	var f goModIndex
	if err := json.Unmarshal(data, &f); err != nil || f.Version != goModIndexVersion || f.Entries == nil {
		slog.Debug("gomod: ignoring unreadable build index", "dir", work, "err", err)
		return idx
	}
	return &f
}

func writeGoModIndex(work string, idx *goModIndex) error {
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(work, goModIndexFile), append(data, '\n'), 0o644)
}

// ---------------------------------------------------------------------------------------
// go commands

// goOutput runs the go command in dir with the build environment and returns its stdout.
func (s *GoModSource) goOutput(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return s.goOutputEnv(ctx, dir, nil, args...)
}

// goOutputEnv is goOutput with extra environment settings that do not change what is built.
func (s *GoModSource) goOutputEnv(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	cmd := run.Command(s.goCmd, args...)
	cmd.Dir = dir
	cmd.Env = append(append(append([]string{}, goBuildEnv...), env...), s.env...)
	out, err := cmd.Output(ctx)
	if err != nil && (run.IsNotFound(err) || errors.Is(err, fs.ErrNotExist)) {
		return nil, fmt.Errorf("the go command is needed to build gomod artifacts and was not found (%s); install Go or put it on PATH: %w", s.goCmd, err)
	}
	return out, err
}

// neutralDir is where module queries (go list -m, go mod download) run: a folder of its own
// with a go.mod, so that a go.mod or go.work around the cache folder is never consulted or
// touched.
func (s *GoModSource) neutralDir() (string, error) {
	dir, err := s.cache.Scratch("gomod/query")
	if err != nil {
		return "", err
	}
	gm := filepath.Join(dir, "go.mod")
	if _, err := os.Stat(gm); errors.Is(err, fs.ErrNotExist) {
		if err := atomicfile.WriteFile(gm, []byte("module "+buildModulePath+"/query\n"), 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// goVersion is `go env GOVERSION`, asked once.
func (s *GoModSource) goVersion(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.toolchain != "" {
		return s.toolchain, nil
	}
	dir, err := s.neutralDir()
	if err != nil {
		return "", err
	}
	out, err := s.goOutput(ctx, dir, "env", "GOVERSION")
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(out))
	if !strings.HasPrefix(v, "go") {
		return "", fmt.Errorf("go env GOVERSION said %q, not a Go version", v)
	}
	s.toolchain = v
	return v, nil
}

// listVersions asks the module proxy for a module's versions, ascending.
func (s *GoModSource) listVersions(ctx context.Context, module string) ([]string, error) {
	dir, err := s.neutralDir()
	if err != nil {
		return nil, err
	}
	out, err := s.goOutput(ctx, dir, "list", "-m", "-versions", "-json", module)
	if err != nil {
		return nil, fmt.Errorf("listing the versions of %s on the module proxy: %w", module, err)
	}
	var m struct {
		Versions []string
		Error    *struct{ Err string }
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("listing the versions of %s: %w", module, err)
	}
	if m.Error != nil {
		return nil, fmt.Errorf("listing the versions of %s on the module proxy: %s", module, m.Error.Err)
	}
	if len(m.Versions) == 0 {
		return nil, fmt.Errorf("the module proxy lists no versions of %s (some modules refuse version lists); pin an exact version in the recipe", module)
	}
	sortVersions(m.Versions)
	return m.Versions, nil
}

// download fetches module@version into the module cache (a no-op when it is there) and
// returns its sum, go.mod and time. It also proves that the version exists.
func (s *GoModSource) download(ctx context.Context, module, version string) (moduleInfo, error) {
	info := moduleInfo{Path: module, Version: version}
	dir, err := s.neutralDir()
	if err != nil {
		return info, err
	}
	out, err := s.goOutput(ctx, dir, "mod", "download", "-json", module+"@"+version)
	var d struct {
		Path, Version, Error string
		Info, GoMod, Sum     string
		Origin               *struct{ Hash string }
	}
	if jerr := json.Unmarshal(out, &d); jerr == nil && d.Error != "" {
		return info, fmt.Errorf("%s@%s is not available from the module proxy: %s; check the version in the recipe", module, version, firstLine(d.Error))
	}
	if err != nil {
		return info, fmt.Errorf("downloading %s@%s: %w", module, version, err)
	}
	if d.Sum == "" || d.GoMod == "" || d.Info == "" {
		return info, fmt.Errorf("downloading %s@%s: go mod download reported no sum or go.mod", module, version)
	}
	info.Sum, info.GoMod = d.Sum, d.GoMod
	if d.Origin != nil {
		info.Commit = d.Origin.Hash
	}
	raw, err := os.ReadFile(d.Info)
	if err != nil {
		return info, fmt.Errorf("reading the version info of %s@%s: %w", module, version, err)
	}
	var vi struct {
		Version string
		Time    time.Time
		Origin  *struct{ Hash string }
	}
	if err := json.Unmarshal(raw, &vi); err != nil {
		return info, fmt.Errorf("reading the version info of %s@%s: %w", module, version, err)
	}
	info.Time = vi.Time
	if info.Commit == "" && vi.Origin != nil {
		info.Commit = vi.Origin.Hash
	}
	return info, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func sortedUnique(ss []string) []string {
	out := append([]string(nil), ss...)
	sort.Strings(out)
	j := 0
	for i, s := range out {
		if i == 0 || s != out[j-1] {
			out[j] = s
			j++
		}
	}
	return out[:j]
}
