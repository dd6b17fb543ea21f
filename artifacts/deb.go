package artifacts

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/recipes"
)

// DebSource serves inputs of source type "deb": Debian packages from the recipe's mirror.
//
// Resolving reads each suite's InRelease (signature checked with gpgv against Keyring), the
// Packages index of every component for the architecture (checked against the Release's
// SHA256 list), and picks the newest version of the package across the input's suites
// (dpkg's version order), or exactly the pinned one ("conntrack=1:1.4.7-1+b2"). The lock
// records version, suite, sha256, size and the pool path relative to the mirror root
// (Filename), never the mirror itself; Fetch downloads <Mirror>/<Filename>.
type DebSource struct {
	Cache *Cache
	// Mirror is the archive root used for inputs without their own mirror and for Fetch.
	Mirror string
	// SecurityMirror is the archive root of the "-security" suites (IsSecuritySuite); empty:
	// Mirror.
	SecurityMirror string
	// Components searched (default [main]).
	Components []string
	// Keyring for gpgv (default $KUBEBAKE_DEB_KEYRING, else DebianArchiveKeyring): a private
	// mirror signed with its own key sets it.
	Keyring string
	// Insecure skips signature checks (tests with a synthetic archive; never for images).
	Insecure bool
	// IgnoreValidUntil accepts an expired Release (snapshot mirrors).
	IgnoreValidUntil bool
	// IndexTTL is how long a fetched InRelease is reused before asking the mirror again
	// (default 30 minutes; negative: always ask).
	IndexTTL time.Duration
	// Closure, when set, makes Lock pin the rootfs's whole package set (deb_packageset.go);
	// cmd sets it to the builder's simulated mmdebstrap run.
	Closure ClosureFunc
	Downloader

	now     func() time.Time
	mu      sync.Mutex
	indexes map[string]*debIndex
	warned  map[string]bool
}

// NewDebSource returns a deb source for the archive at mirror (e.g. SystemDebianMirror()).
func NewDebSource(cache *Cache, mirror string, components []string, rewrites []recipes.URLRewrite) *DebSource {
	return &DebSource{
		Cache:      cache,
		Mirror:     strings.TrimRight(mirror, "/"),
		Components: components,
		Downloader: Downloader{Rewrites: rewrites},
	}
}

// mirrorFor is the archive that serves suite: the security archive for a security suite,
// mirror for the others.
func (s *DebSource) mirrorFor(suite, mirror string) string {
	if IsSecuritySuite(suite) && s.SecurityMirror != "" {
		return s.SecurityMirror
	}
	return mirror
}

// Type is "deb".
func (s *DebSource) Type() string { return recipes.SourceDeb }

func (s *DebSource) keyring() string {
	if s.Keyring != "" {
		return s.Keyring
	}
	if k := os.Getenv("KUBEBAKE_DEB_KEYRING"); k != "" {
		return k
	}
	return DebianArchiveKeyring
}

func (s *DebSource) components() []string {
	if len(s.Components) > 0 {
		return s.Components
	}
	return []string{"main"}
}

func (s *DebSource) indexTTL() time.Duration {
	if s.IndexTTL > 0 {
		return s.IndexTTL
	}
	return 30 * time.Minute
}

func (s *DebSource) timeNow() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// DebSpec splits a deb input into the Debian package name and its exact Debian version pin
// ("" if none). For a package input the pin comes from "name=version" in Package or from
// Version (both at once must agree). A binary input (kind binary, source deb) names its
// package in Package and has no Debian pin: its Version constrains the upstream version (see
// deb_extract.go).
func DebSpec(in recipes.Input) (name, pin string, err error) {
	if in.Kind == recipes.InputBinary {
		name, _, _ = strings.Cut(in.Package, "=")
		if name == "" {
			name = in.Source.Package
		}
		if name == "" {
			return "", "", fmt.Errorf("%s: a binary from a deb source needs source.package (the Debian package that carries it)", in.Name)
		}
		return name, "", nil
	}
	name, pin, _ = strings.Cut(in.Package, "=")
	if name == "" {
		name = strings.TrimPrefix(in.Name, "deb/")
	}
	if in.Version != "" && in.Version != "*" {
		if pin != "" && pin != in.Version {
			return "", "", fmt.Errorf("%s: package %q and version %q pin different versions", in.Name, in.Package, in.Version)
		}
		pin = in.Version
	}
	return name, pin, nil
}

// Resolve pins every deb input.
func (s *DebSource) Resolve(ctx context.Context, inputs []recipes.Input, prev []recipes.LockedArtifact, update bool) ([]recipes.LockedArtifact, error) {
	prevByName := map[string]recipes.LockedArtifact{}
	for _, p := range prev {
		prevByName[p.Name] = p
	}
	out := make([]recipes.LockedArtifact, 0, len(inputs))
	for _, in := range inputs {
		name, pin, err := DebSpec(in)
		if err != nil {
			return nil, err
		}
		if len(in.Suites) == 0 {
			return nil, fmt.Errorf("%s: no suites to look %s up in; set base.release (or base.suites)", in.Name, name)
		}
		if p, ok := prevByName[in.Name]; ok && !update && debStillMatches(in, p, name, pin) {
			out = append(out, p)
			continue
		}
		art, err := s.resolveOne(ctx, in, name, pin)
		if err != nil {
			return nil, err
		}
		out = append(out, art)
	}
	return out, nil
}

func debStillMatches(in recipes.Input, p recipes.LockedArtifact, name, pin string) bool {
	if p.Source != recipes.SourceDeb || !ValidSHA256(p.SHA256) || p.URL == "" || !slices.Contains(in.Suites, p.Suite) {
		return false
	}
	if in.Kind == recipes.InputBinary {
		pkg, _, _ := strings.Cut(p.Package, "=")
		return p.Kind == recipes.InputBinary && pkg == name && (in.Version == "" || recipes.Matches(in.Version, p.Version))
	}
	return p.Kind != recipes.InputBinary && (pin == "" || p.Version == pin)
}

func (s *DebSource) resolveOne(ctx context.Context, in recipes.Input, name, pin string) (recipes.LockedArtifact, error) {
	mirror := strings.TrimRight(in.Mirror, "/")
	if mirror == "" {
		mirror = s.Mirror
	}
	if mirror == "" {
		return recipes.LockedArtifact{}, fmt.Errorf("%s: no Debian mirror: set base.mirror in the recipe", in.Name)
	}
	arch := in.Arch
	if arch == "" {
		arch = "amd64"
	}
	var best *debPkg
	var bestSuite string
	var seen []string
	for _, suite := range in.Suites {
		idx, err := s.suiteIndex(ctx, s.mirrorFor(suite, mirror), suite, arch)
		if err != nil {
			return recipes.LockedArtifact{}, fmt.Errorf("%s: %w", in.Name, err)
		}
		for i := range idx.pkgs[name] {
			p := &idx.pkgs[name][i]
			seen = append(seen, p.Version+" ("+suite+")")
			if pin != "" && p.Version != pin {
				continue
			}
			if in.Kind == recipes.InputBinary && in.Version != "" && !recipes.Matches(in.Version, debUpstreamVersion(p.Version)) {
				continue
			}
			// The first suite wins a tie: base.suites lists the release before its updates.
			if best == nil || CompareDebVersions(p.Version, best.Version) > 0 {
				best, bestSuite = p, suite
			}
		}
	}
	where := fmt.Sprintf("%s (%s, %s) at %s", strings.Join(in.Suites, ", "), strings.Join(s.components(), ", "), arch, redact.URL(mirror))
	if best == nil {
		if in.Kind == recipes.InputBinary && in.Version != "" && len(seen) > 0 {
			sort.Strings(seen)
			return recipes.LockedArtifact{}, fmt.Errorf("%s: no version of %s in %s matches %s; available: %s; change the version in the recipe", in.Name, name, where, in.Version, strings.Join(seen, ", "))
		}
		if pin != "" && len(seen) > 0 {
			sort.Strings(seen)
			return recipes.LockedArtifact{}, fmt.Errorf("%s: %s=%s is not in %s; available: %s; change the pin or run \"kubebake lock --update\" without one", in.Name, name, pin, where, strings.Join(seen, ", "))
		}
		return recipes.LockedArtifact{}, fmt.Errorf("%s: package %q is not in %s; check the name (apt-cache policy %s) and base.suites", in.Name, name, where, name)
	}
	if in.Kind == recipes.InputBinary {
		return recipes.LockedArtifact{
			Name:    in.Name,
			Kind:    recipes.InputBinary,
			Source:  recipes.SourceDeb,
			Version: debUpstreamVersion(best.Version),
			Package: name + "=" + best.Version,
			URL:     best.Filename,
			Suite:   bestSuite,
			SHA256:  best.SHA256,
			Size:    best.Size,
		}, nil
	}
	return recipes.LockedArtifact{
		Name:    in.Name,
		Kind:    recipes.InputDeb,
		Source:  recipes.SourceDeb,
		Version: best.Version,
		Package: name,
		URL:     best.Filename,
		Suite:   bestSuite,
		SHA256:  best.SHA256,
		Size:    best.Size,
	}, nil
}

// Fetch downloads each package from <Mirror>/<pool path> into the cache; for a binary
// input it returns the binary taken out of the package.
func (s *DebSource) Fetch(ctx context.Context, arts []recipes.LockedArtifact) (map[string]string, error) {
	out := make(map[string]string, len(arts))
	var gone []string // packages the mirror answered 404 or 410 for: all are named at once
	for _, a := range arts {
		p, err := s.fetchDeb(ctx, a)
		var he *HTTPError
		if errors.As(err, &he) && (he.StatusCode == http.StatusNotFound || he.StatusCode == http.StatusGone) {
			name, version := debNameVersion(a)
			gone = append(gone, name+" "+version)
			continue
		}
		if err != nil {
			return nil, err
		}
		out[a.Name] = p
	}
	if len(gone) > 0 {
		return nil, &MissingPackagesError{Packages: gone, Mirror: redact.URL(s.Mirror)}
	}
	return out, nil
}

func (s *DebSource) fetchDeb(ctx context.Context, a recipes.LockedArtifact) (string, error) {
	if a.Kind == recipes.InputBinary {
		if p, ok := s.extractedBinary(a); ok {
			return p, nil
		}
	}
	p, ok, err := s.Cache.Lookup(a.SHA256)
	if err != nil {
		return "", err
	}
	if !ok {
		if s.Mirror == "" {
			return "", fmt.Errorf("%s: no Debian mirror to fetch %s from: set base.mirror in the recipe", a.Name, a.URL)
		}
		if a.URL == "" || strings.Contains(a.URL, "://") || strings.HasPrefix(a.URL, "/") || strings.Contains(a.URL, "..") {
			return "", fmt.Errorf("%s: lock entry has pool path %q, want one relative to the mirror root (pool/...); run \"kubebake lock\"", a.Name, a.URL)
		}
		p, err = s.Downloader.Fetch(ctx, s.Cache, s.mirrorFor(a.Suite, s.Mirror)+"/"+a.URL, a.SHA256, a.Size)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", a.Name, a.Version, err)
		}
	}
	if a.Kind == recipes.InputBinary {
		return s.fetchBinaryFromDeb(ctx, a, p)
	}
	return p, nil
}
