package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kubebake/kubebake"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/recipes"
)

// ApplierEnv names a prebuilt applier to use instead of compiling one. It is taken only when
// its sha256 is the lock's: it saves a compile, it never changes an image.
const ApplierEnv = "KUBEBAKE_IGNITION"

// SelfSource builds the programs kubebake bakes from its own source (the package at the
// module root embeds it): today the Ignition applier. The lock pins the source's sha256
// (MainSHA256), the toolchain and the binary's sha256, so one lock gives one applier on any
// machine, whatever the current directory, $PATH or $KUBEBAKE_IGNITION hold; a binary that
// differs is refused, never baked.
type SelfSource struct {
	cache *Cache
	goCmd string

	mu        sync.Mutex
	toolchain string
}

// NewSelfSource returns the source of kubebake's own programs, building into cache.
func NewSelfSource(cache *Cache) *SelfSource { return &SelfSource{cache: cache, goCmd: "go"} }

// Type is recipes.SourceSelf.
func (s *SelfSource) Type() string { return recipes.SourceSelf }

// Resolve builds each input from the embedded source and pins what it gave. An input whose
// source and toolchain are the locked ones keeps its entry as it is.
func (s *SelfSource) Resolve(ctx context.Context, inputs []recipes.Input, prev []recipes.LockedArtifact, update bool) ([]recipes.LockedArtifact, error) {
	toolchain, err := s.goVersion(ctx)
	if err != nil {
		return nil, err
	}
	var out []recipes.LockedArtifact
	for _, in := range inputs {
		if err := checkSelfInput(in); err != nil {
			return nil, err
		}
		if p, ok := findLocked(prev, in.Name); ok && !update && p.MainSHA256 == in.MainSHA256 && p.Toolchain == toolchain {
			out = append(out, p)
			continue
		}
		path, sum, err := s.build(ctx, toolchain)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		out = append(out, recipes.LockedArtifact{
			Name: in.Name, Kind: recipes.InputBinary, Source: recipes.SourceSelf,
			Version: selfVersion(in.MainSHA256), Package: in.Package, MainSHA256: in.MainSHA256,
			Toolchain: toolchain, SHA256: sum, Size: st.Size(),
		})
	}
	return out, nil
}

// Fetch returns each artifact's path: $KUBEBAKE_IGNITION or the kubebake-ignition beside
// this executable when its sha256 is the lock's, else a build from the embedded source
// (cached by source and toolchain). A build that does not give the locked sha256 is an
// error that says why (another toolchain, or a kubebake whose source is not the lock's).
func (s *SelfSource) Fetch(ctx context.Context, arts []recipes.LockedArtifact) (map[string]string, error) {
	paths := map[string]string{}
	for _, a := range arts {
		if a.Name != recipes.ApplierArtifact {
			return nil, fmt.Errorf("%s: kubebake builds no program of that name from its own source (it has %s)", a.Name, recipes.ApplierArtifact)
		}
		if p := os.Getenv(ApplierEnv); p != "" {
			sum, err := fileSHA256(p)
			if err != nil {
				return nil, fmt.Errorf("$%s: %w", ApplierEnv, err)
			}
			if sum != a.SHA256 {
				return nil, fmt.Errorf("$%s=%s has sha256 %s, the lock pins %s (built from kubebake source %s with %s); unset %s to build the locked one",
					ApplierEnv, p, short(sum), short(a.SHA256), short(a.MainSHA256), a.Toolchain, ApplierEnv)
			}
			paths[a.Name] = p
			continue
		}
		if p := besideExecutable(a.Name); p != "" {
			if sum, err := fileSHA256(p); err == nil && sum == a.SHA256 {
				paths[a.Name] = p
				continue
			}
		}
		if have := kubebake.ApplierSourceSHA256(); have != a.MainSHA256 {
			return nil, fmt.Errorf("%s: this kubebake's applier source has sha256 %s, the lock pins %s; run \"kubebake lock\" to pin this kubebake's applier, or build with the kubebake the lock was made with",
				a.Name, short(have), short(a.MainSHA256))
		}
		toolchain, err := s.goVersion(ctx)
		if err != nil {
			return nil, err
		}
		p, sum, err := s.build(ctx, toolchain)
		if err != nil {
			return nil, err
		}
		if sum != a.SHA256 {
			return nil, mismatchError(a, "kubebake source "+short(a.MainSHA256), toolchain, sum)
		}
		paths[a.Name] = p
	}
	return paths, nil
}

// checkSelfInput refuses an input this source cannot build.
func checkSelfInput(in recipes.Input) error {
	switch {
	case in.Name != recipes.ApplierArtifact || in.Package != kubebake.ApplierMain:
		return fmt.Errorf("%s: kubebake builds only %s (%s) from its own source", in.Name, recipes.ApplierArtifact, kubebake.ApplierMain)
	case in.MainSHA256 != kubebake.ApplierSourceSHA256():
		return fmt.Errorf("%s: the input names source %s, this kubebake has %s (a kubebake bug)", in.Name, short(in.MainSHA256), short(kubebake.ApplierSourceSHA256()))
	}
	return nil
}

// selfVersion is the version the lock shows for a program built from kubebake's source.
func selfVersion(sourceSHA string) string { return "src-" + short(sourceSHA) }

// build compiles the applier from the embedded source with toolchain, as `make build` does
// (static, -trimpath, no build ID or VCS stamp), and returns its cache path and sha256. A
// build of the same source with the same toolchain is looked up, not repeated.
func (s *SelfSource) build(ctx context.Context, toolchain string) (path, sum string, err error) {
	src := kubebake.ApplierSourceSHA256()
	dir, err := s.cache.Scratch("self")
	if err != nil {
		return "", "", err
	}
	unlock, err := s.cache.Lock(ctx, "self-build")
	if err != nil {
		return "", "", err
	}
	defer unlock()
	index := filepath.Join(dir, src[:16]+"-"+toolchain+".sha256")
	if b, err := os.ReadFile(index); err == nil {
		if p, ok, err := s.cache.Lookup(strings.TrimSpace(string(b))); err == nil && ok {
			return p, strings.TrimSpace(string(b)), nil
		}
	}
	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(work)
	for _, f := range kubebake.ApplierSource() {
		p := filepath.Join(work, "src", filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", "", err
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return "", "", err
		}
	}
	bin := filepath.Join(work, recipes.ApplierArtifact)
	slog.Info("building "+recipes.ApplierArtifact+" from kubebake's source", "source", short(src), "toolchain", toolchain)
	c := run.Command(s.goCmd, "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", bin, "./"+kubebake.ApplierMain)
	c.Dir = filepath.Join(work, "src")
	// -mod=readonly: the embedded go.sum pins every dependency; the build must not move one.
	c.Env = append(append([]string{}, goBuildEnv...), "GOFLAGS=-mod=readonly -buildvcs=false", "GOWORK=off", "GOTOOLCHAIN=local")
	if err := c.Run(ctx); err != nil {
		if run.IsNotFound(err) || errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("the go command is needed to build %s and was not found (%s); install Go or put it on PATH: %w", recipes.ApplierArtifact, s.goCmd, err)
		}
		return "", "", fmt.Errorf("building %s from kubebake's source: %w", recipes.ApplierArtifact, err)
	}
	sum, path, err = s.cache.PutFile(bin)
	if err != nil {
		return "", "", err
	}
	if err := atomicfile.WriteFile(index, []byte(sum+"\n"), 0o644); err != nil {
		return "", "", err
	}
	return path, sum, nil
}

// goVersion is `go env GOVERSION`, asked once.
func (s *SelfSource) goVersion(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.toolchain != "" {
		return s.toolchain, nil
	}
	c := run.Command(s.goCmd, "env", "GOVERSION")
	c.Env = []string{"GOTOOLCHAIN=local", "GOWORK=off"}
	out, err := c.Output(ctx)
	if err != nil {
		return "", fmt.Errorf("asking the go command its version (needed to build %s): %w", recipes.ApplierArtifact, err)
	}
	v := strings.TrimSpace(string(out))
	if !strings.HasPrefix(v, "go") {
		return "", fmt.Errorf("go env GOVERSION said %q, not a Go version", v)
	}
	s.toolchain = v
	return v, nil
}

func findLocked(arts []recipes.LockedArtifact, name string) (recipes.LockedArtifact, bool) {
	for _, a := range arts {
		if a.Name == name {
			return a, true
		}
	}
	return recipes.LockedArtifact{}, false
}

// besideExecutable is name in the folder of the running kubebake ("" when absent).
func besideExecutable(name string) string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), name)
	if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
		return ""
	}
	return p
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
