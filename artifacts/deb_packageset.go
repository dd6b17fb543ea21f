package artifacts

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/recipes"
)

// The hermetic package set. A recipe names a dozen Debian packages; its rootfs holds about
// two hundred. The lock pins all of them (recipes.Lock.Packages): which ones apt would pick
// comes from mmdebstrap itself (DebSource.Closure, which cmd wires to the builder's
// simulated run), and each picked name and version is then looked up in the mirror's signed
// Packages indexes for its pool path, size and sha256. The builder makes the rootfs from
// exactly these files, kept in the cache (FetchPackages), so a lock still builds, byte for
// byte, after the mirror has dropped its versions.

// PackageRef is a package apt would install: name, exact version and architecture.
type PackageRef struct {
	Name, Version, Arch string
}

// ClosureFunc returns every package a rootfs of r holds when its named packages are
// includes ("name=version"), as mmdebstrap would install them from mirror (and the
// security suites from securityMirror).
type ClosureFunc func(ctx context.Context, r *recipes.Recipe, includes []string, mirror, securityMirror string) ([]PackageRef, error)

// lockPackages pins the rootfs package set of r, whose named packages arts pins. Unless
// update, it keeps prev's set while the recipe's inputs and the named pins are those prev was
// made for (locking again changes nothing); any change there resolves the set afresh, so a
// package the recipe no longer names leaves the set with its dependencies. No deb source
// with a Closure: no set (nil).
func lockPackages(ctx context.Context, r *recipes.Recipe, arts []recipes.LockedArtifact, prev *recipes.Lock, update bool, sources map[string]Source) ([]recipes.LockedPackage, error) {
	debs, ok := sources[recipes.SourceDeb].(*DebSource)
	if !ok || debs.Closure == nil {
		return nil, nil
	}
	includes, err := recipes.RootfsPackages(r, &recipes.Lock{Artifacts: arts})
	if err != nil {
		return nil, err
	}
	if !update && prev != nil && prev.InputsDigest == r.InputsDigest() && coversIncludes(prev.Packages, includes) && sameDebPins(prev.Artifacts, arts) {
		return prev.Packages, nil
	}
	mirror := strings.TrimRight(r.Base.Mirror, "/")
	if mirror == "" {
		mirror = debs.Mirror
	}
	if mirror == "" {
		return nil, errors.New("no Debian mirror to resolve the package set from: set base.mirror in the recipe")
	}
	refs, err := debs.Closure(ctx, r, includes, mirror, debs.SecurityMirror)
	if err != nil {
		return nil, fmt.Errorf("resolving the rootfs package set: %w", err)
	}
	return debs.pinPackages(ctx, refs, mirror, r.Base.Suites, r.Base.Arch)
}

// sameDebPins says whether a and b pin the same Debian packages (name, version, sha256).
func sameDebPins(a, b []recipes.LockedArtifact) bool {
	pins := func(arts []recipes.LockedArtifact) map[string]string {
		m := map[string]string{}
		for _, x := range arts {
			if x.Kind == recipes.InputDeb {
				m[x.Name] = x.Version + " " + x.SHA256
			}
		}
		return m
	}
	return maps.Equal(pins(a), pins(b))
}

// coversIncludes says whether set holds every "name=version" of includes.
func coversIncludes(set []recipes.LockedPackage, includes []string) bool {
	if len(set) == 0 {
		return false
	}
	have := map[string]bool{}
	for _, p := range set {
		have[p.Name+"="+p.Version] = true
	}
	for _, in := range includes {
		if !have[in] {
			return false
		}
	}
	return true
}

// pinPackages finds each ref in the signed indexes of suites (in order) and pins it; refs
// the indexes do not hold are all named in one error.
func (s *DebSource) pinPackages(ctx context.Context, refs []PackageRef, mirror string, suites []string, arch string) ([]recipes.LockedPackage, error) {
	if arch == "" {
		arch = "amd64"
	}
	var out []recipes.LockedPackage
	var missing []string
	seen := map[string]string{}
	for _, ref := range refs {
		if v, dup := seen[ref.Name]; dup {
			if v != ref.Version {
				return nil, fmt.Errorf("apt would install %s twice, at %s and %s", ref.Name, v, ref.Version)
			}
			continue
		}
		seen[ref.Name] = ref.Version
		found := false
		for _, suite := range suites {
			idx, err := s.suiteIndex(ctx, s.mirrorFor(suite, mirror), suite, arch)
			if err != nil {
				return nil, err
			}
			i := slices.IndexFunc(idx.pkgs[ref.Name], func(p debPkg) bool {
				return p.Version == ref.Version && (ref.Arch == "" || p.Arch == ref.Arch)
			})
			if i < 0 {
				continue
			}
			p := idx.pkgs[ref.Name][i]
			out = append(out, recipes.LockedPackage{Name: p.Name, Version: p.Version, Arch: p.Arch, Suite: suite, URL: p.Filename, SHA256: p.SHA256, Size: p.Size})
			found = true
			break
		}
		if !found {
			missing = append(missing, ref.Name+" "+ref.Version)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("apt would install %s, which the signed indexes of %s at %s do not list; check base.suites", strings.Join(missing, ", "), strings.Join(suites, ", "), redact.URL(mirror))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// MissingDebsError names the .deb files of a lock's package set that are neither in the
// cache nor served by the mirror: the lock cannot be built here.
type MissingDebsError struct {
	Packages []string // "name version"
	Lock     string   // the lock's file, for the message; "" when unknown
	Mirror   string   // redacted; with the security archive when there is one
	Cause    error    // the first download error that was not a plain 404
}

func (e *MissingDebsError) Error() string {
	lock := e.Lock
	if lock == "" {
		lock = "the lock"
	}
	cause := ""
	if e.Cause != nil {
		cause = fmt.Sprintf(" (%v)", e.Cause)
	}
	return fmt.Sprintf("%s pins %d Debian package file(s) that are neither in the cache nor on the mirror %s%s: %s; "+
		"fill the cache from one that has them (kubebake fetch on that machine, or a shared cache: --cache-remote), "+
		"or run \"kubebake lock --update\" on the recipe to pin what the mirror serves now",
		lock, len(e.Packages), e.Mirror, cause, strings.Join(e.Packages, ", "))
}

// fetchWorkers bounds the parallel .deb downloads: enough to hide a mirror's latency, few
// enough not to be rude to it.
const fetchWorkers = 4

// FetchPackages puts every .deb of l.Packages into the cache through the deb source of
// sources (a cached file is checked, not downloaded) and returns their paths by sha256.
// Files neither cached nor downloadable are all named in one *MissingDebsError; lockFile
// names the lock in it. A lock without a package set fetches nothing.
func FetchPackages(ctx context.Context, l *recipes.Lock, sources map[string]Source, lockFile string) (map[string]string, error) {
	if len(l.Packages) == 0 {
		return nil, nil
	}
	debs, ok := sources[recipes.SourceDeb].(*DebSource)
	if !ok {
		return nil, fmt.Errorf("%s pins Debian packages but no deb source is configured to fetch them", lockFile)
	}
	return debs.fetchPackageSet(ctx, l, lockFile)
}

func (s *DebSource) fetchPackageSet(ctx context.Context, l *recipes.Lock, lockFile string) (map[string]string, error) {
	out := make(map[string]string, len(l.Packages))
	var mu sync.Mutex
	var missing []string
	var cause, fatal error
	work := make(chan recipes.LockedPackage)
	var wg sync.WaitGroup
	for range fetchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				path, err := s.fetchDeb(ctx, p.Artifact())
				mu.Lock()
				switch {
				case err == nil:
					out[p.SHA256] = path
				case ctx.Err() != nil || isChecksumError(err):
					if fatal == nil {
						fatal = err
					}
				default:
					missing = append(missing, p.Name+" "+p.Version)
					var he *HTTPError
					if cause == nil && !(errors.As(err, &he) && (he.StatusCode == http.StatusNotFound || he.StatusCode == http.StatusGone)) {
						cause = err
					}
				}
				mu.Unlock()
			}
		}()
	}
	for _, p := range l.Packages {
		select {
		case work <- p:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if fatal != nil {
		return nil, fatal
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		where := redact.URL(s.Mirror)
		if s.SecurityMirror != "" {
			where += " (security suites: " + redact.URL(s.SecurityMirror) + ")"
		}
		return nil, &MissingDebsError{Packages: missing, Lock: lockFile, Mirror: where, Cause: cause}
	}
	return out, nil
}

func isChecksumError(err error) bool {
	var ce *ChecksumError
	return errors.As(err, &ce)
}
